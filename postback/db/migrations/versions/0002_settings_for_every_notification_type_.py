"""settings for every notification type and scope

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 03:43:38.890870
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import postback.db.schema

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_bucket",
        sa.Column("setting_id", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["setting_id"],
            ["notification_setting.id"],
            name=op.f("fk_rate_bucket_setting_id_notification_setting"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("setting_id", name=op.f("pk_rate_bucket")),
    )
    with op.batch_alter_table("notification_setting", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scope", sa.String(length=12), server_default="global", nullable=False)
        )
        batch_op.add_column(sa.Column("program_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("event_type_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("brand_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("minimum_delay_seconds", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("max_requests_per_second", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("success_response", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("error_response", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("extra_triggers", sa.JSON(), server_default="[]", nullable=False)
        )
        batch_op.add_column(
            sa.Column("failing_since", postback.db.schema.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("disabled_at", postback.db.schema.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("disabled_reason", sa.Text(), nullable=True))
        batch_op.drop_constraint(
            batch_op.f("uq_notification_setting_partner_id_type"), type_="unique"
        )
        batch_op.create_index("ix_notification_setting_partner", ["partner_id"], unique=False)
        batch_op.create_index(
            "uq_notification_setting_global",
            ["partner_id", "type"],
            unique=True,
            sqlite_where=sa.text("scope = 'global'"),
            postgresql_where=sa.text("scope = 'global'"),
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_notification_setting_brand_id_brand"), "brand", ["brand_id"], ["id"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_notification_setting_event_type_id_event_type"),
            "event_type",
            ["event_type_id"],
            ["id"],
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_notification_setting_program_id_program"),
            "program",
            ["program_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("notification_setting", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_notification_setting_program_id_program"), type_="foreignkey"
        )
        batch_op.drop_constraint(
            batch_op.f("fk_notification_setting_event_type_id_event_type"), type_="foreignkey"
        )
        batch_op.drop_constraint(
            batch_op.f("fk_notification_setting_brand_id_brand"), type_="foreignkey"
        )
        batch_op.drop_index(
            "uq_notification_setting_global",
            sqlite_where=sa.text("scope = 'global'"),
            postgresql_where=sa.text("scope = 'global'"),
        )
        batch_op.drop_index("ix_notification_setting_partner")
        batch_op.create_unique_constraint(
            batch_op.f("uq_notification_setting_partner_id_type"), ["partner_id", "type"]
        )
        batch_op.drop_column("disabled_reason")
        batch_op.drop_column("disabled_at")
        batch_op.drop_column("consecutive_failures")
        batch_op.drop_column("failing_since")
        batch_op.drop_column("extra_triggers")
        batch_op.drop_column("error_response")
        batch_op.drop_column("success_response")
        batch_op.drop_column("max_requests_per_second")
        batch_op.drop_column("minimum_delay_seconds")
        batch_op.drop_column("brand_id")
        batch_op.drop_column("event_type_id")
        batch_op.drop_column("program_id")
        batch_op.drop_column("scope")

    op.drop_table("rate_bucket")
