"""worker liveness, raw response bodies, claims without a recorded attempt

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 12:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postback.db.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "worker",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # a nullable column added at the end: no table rebuild, on SQLite either
    op.add_column("delivery_attempt", sa.Column("response_body_raw", sa.LargeBinary(),
                                                nullable=True))
    op.add_column("delivery", sa.Column("open_claims", sa.Integer(), nullable=False,
                                        server_default="0"))
    op.create_index("ix_delivery_held", "delivery", ["setting_id"],
                    postgresql_where=sa.text("status = 'held'"),
                    sqlite_where=sa.text("status = 'held'"))


def downgrade() -> None:
    op.drop_index("ix_delivery_held", table_name="delivery")
    op.drop_column("delivery", "open_claims")
    op.drop_column("delivery_attempt", "response_body_raw")
    op.drop_table("worker")
