"""web sessions keep what a form's POST leaves for the page after its redirect

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a nullable column added at the end: no table rebuild, on SQLite either
    op.add_column("web_session", sa.Column("flash", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("web_session", "flash")
