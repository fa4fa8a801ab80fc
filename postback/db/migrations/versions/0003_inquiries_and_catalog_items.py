"""inquiries and catalog items

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 03:53:17.757631
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import postback.db.schema

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalog_item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(length=255), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", postback.db.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", postback.db.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["program_id"], ["program.id"], name=op.f("fk_catalog_item_program_id_program")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_item")),
        sa.UniqueConstraint(
            "program_id", "item_id", name=op.f("uq_catalog_item_program_id_item_id")
        ),
    )
    op.create_table(
        "inquiry_policy",
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("deadline_days", sa.Integer(), nullable=True),
        sa.Column("auto_mode", sa.String(length=24), nullable=False),
        sa.Column("auto_days", sa.Integer(), nullable=False),
        sa.Column("max_expected_payout", sa.BigInteger(), nullable=True),
        sa.Column("monthly_cap", sa.BigInteger(), nullable=True),
        sa.Column("event_type_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", postback.db.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_type_id"],
            ["event_type.id"],
            name=op.f("fk_inquiry_policy_event_type_id_event_type"),
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["program.id"], name=op.f("fk_inquiry_policy_program_id_program")
        ),
        sa.PrimaryKeyConstraint("program_id", name=op.f("pk_inquiry_policy")),
    )
    op.create_table(
        "inquiry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("brand_id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("inquiry_type", sa.String(length=12), nullable=False),
        sa.Column("oid", sa.String(length=255), nullable=False),
        sa.Column(
            "transaction_date", postback.db.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("transaction_amount", sa.BigInteger(), nullable=False),
        sa.Column("expected_payout", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("media_partner_inquiry_id", sa.String(length=255), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("resolution_status", sa.String(length=12), nullable=False),
        sa.Column("reject_reason", sa.Text(), nullable=True),
        sa.Column("final_payout", sa.BigInteger(), nullable=True),
        sa.Column("resolution_date", postback.db.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "resolution_deadline_date", postback.db.schema.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "auto_approval_date", postback.db.schema.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("action_id", sa.Integer(), nullable=True),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("creation_date", postback.db.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["action_id"], ["action.id"], name=op.f("fk_inquiry_action_id_action")
        ),
        sa.ForeignKeyConstraint(["brand_id"], ["brand.id"], name=op.f("fk_inquiry_brand_id_brand")),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partner.id"], name=op.f("fk_inquiry_partner_id_partner")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["program.id"], name=op.f("fk_inquiry_program_id_program")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inquiry")),
    )
    with op.batch_alter_table("inquiry", schema=None) as batch_op:
        batch_op.create_index("ix_inquiry_auto", ["state", "auto_approval_date"], unique=False)
        batch_op.create_index(batch_op.f("ix_inquiry_brand_id"), ["brand_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_inquiry_partner_id"), ["partner_id"], unique=False)

    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("inquiry_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("item_id", sa.String(length=255), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_delivery_inquiry_id_inquiry"), "inquiry", ["inquiry_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_delivery_inquiry_id_inquiry"), type_="foreignkey")
        batch_op.drop_column("item_id")
        batch_op.drop_column("inquiry_id")

    with op.batch_alter_table("inquiry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inquiry_partner_id"))
        batch_op.drop_index(batch_op.f("ix_inquiry_brand_id"))
        batch_op.drop_index("ix_inquiry_auto")

    op.drop_table("inquiry")
    op.drop_table("inquiry_policy")
    op.drop_table("catalog_item")
