"""catalog changes whose postbacks are still to be written, expanded by the scheduler;
indexes of the due deliveries that claims take before catalog changes', and of those

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 14:00:00.000000

A new table and three indexes: nothing already stored changes. The partial indexes'
predicates are written out here, as they were when this revision was made.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postback.db.schema import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_FIRST_DUE = "notification_type <> 'product-data-change'"
_CATALOG_DUE = "notification_type = 'product-data-change'"


def upgrade() -> None:
    op.create_table(
        "catalog_fanout",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("change_id", sa.String(length=36), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["change_id"], ["change_log.change_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["program_id"], ["program.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("change_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_catalog_fanout_program", "catalog_fanout", ["program_id", "id"])
    op.create_index("ix_delivery_due_first", "delivery", ["status", "next_attempt_at"],
                    postgresql_where=sa.text(_FIRST_DUE), sqlite_where=sa.text(_FIRST_DUE))
    op.create_index("ix_delivery_due_catalog", "delivery", ["status", "next_attempt_at"],
                    postgresql_where=sa.text(_CATALOG_DUE), sqlite_where=sa.text(_CATALOG_DUE))


def downgrade() -> None:
    # what is not expanded yet is written out by the version that knows how: refuse to
    # drop it instead of losing those postbacks (none added meanwhile: the table locked)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("LOCK TABLE catalog_fanout IN EXCLUSIVE MODE")
    left = op.get_bind().execute(sa.text("SELECT count(*) FROM catalog_fanout")).scalar_one()
    if left:
        raise RuntimeError(f"{left} catalog changes still wait for their postbacks to be "
                           "written; run the scheduler until none do, then downgrade")
    op.drop_index("ix_delivery_due_catalog", table_name="delivery")
    op.drop_index("ix_delivery_due_first", table_name="delivery")
    op.drop_index("ix_catalog_fanout_program", table_name="catalog_fanout")
    op.drop_table("catalog_fanout")
