"""the change log the updates feeds read; deliveries name the change they tell of

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postback.db.schema import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "change_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("txid", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("change_id", sa.String(length=36), nullable=False),
        sa.Column("brand_id", sa.Integer(), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=True),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=True),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["brand_id"], ["brand.id"],
                                name="fk_change_log_brand_id_brand"),
        sa.ForeignKeyConstraint(["program_id"], ["program.id"],
                                name="fk_change_log_program_id_program"),
        sa.ForeignKeyConstraint(["partner_id"], ["partner.id"],
                                name="fk_change_log_partner_id_partner"),
        sa.PrimaryKeyConstraint("id", name="pk_change_log"),
        sa.UniqueConstraint("change_id", name="uq_change_log_change_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_change_log_partner", "change_log", ["kind", "partner_id", "txid", "id"])
    op.create_index("ix_change_log_brand", "change_log", ["kind", "brand_id", "txid", "id"])
    op.create_index("ix_change_log_program", "change_log", ["kind", "program_id", "txid", "id"])
    op.create_index("ix_change_log_txid", "change_log", ["txid"])
    # the catalog read's ?updated_since=, paged by (updated_at, id)
    op.create_index("ix_catalog_item_updated", "catalog_item",
                    ["program_id", "updated_at", "id"])
    # a nullable column added at the end: no table rebuild, on SQLite either
    op.add_column("delivery", sa.Column("change_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    op.drop_column("delivery", "change_id")
    op.drop_index("ix_catalog_item_updated", table_name="catalog_item")
    op.drop_table("change_log")
