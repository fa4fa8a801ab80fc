"""signing secrets

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 04:13:00.912591
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import postback.db.schema

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notification_setting", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signing_secret", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("previous_signing_secret", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "previous_secret_expires_at",
                postback.db.schema.UTCDateTime(timezone=True),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("notification_setting", schema=None) as batch_op:
        batch_op.drop_column("previous_secret_expires_at")
        batch_op.drop_column("previous_signing_secret")
        batch_op.drop_column("signing_secret")
