"""ed25519 public keys

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 05:19:17.777806
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notification_setting", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signing_public_key", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notification_setting", schema=None) as batch_op:
        batch_op.drop_column("signing_public_key")
