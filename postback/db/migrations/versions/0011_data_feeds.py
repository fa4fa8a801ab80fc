"""scheduled data feeds: feeds, their runs, and the runs' files (in chunks)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 09:11:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postback.db.schema import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("content", sa.String(length=10), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=True),
        sa.Column("schedule", sa.JSON(), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=True),
        sa.Column("format", sa.String(length=5), nullable=False),
        sa.Column("gzip", sa.Boolean(), nullable=False),
        sa.Column("header", sa.Boolean(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("destination", sa.JSON(), nullable=False),
        sa.Column("destination_secret", sa.Text(), nullable=True),
        sa.Column("destination_rev", sa.Integer(), nullable=False),
        sa.Column("host_key", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["partner_id"], ["partner.id"],
                                name="fk_feed_partner_id_partner"),
        sa.ForeignKeyConstraint(["program_id"], ["program.id"],
                                name="fk_feed_program_id_program"),
        sa.PrimaryKeyConstraint("id", name="pk_feed"),
        sqlite_autoincrement=True,  # ids never reused: an old signed link opens nothing
    )
    op.create_index("ix_feed_partner_id", "feed", ["partner_id"])
    op.create_index("ix_feed_due", "feed", ["enabled", "next_run_at"])
    op.create_table(
        "feed_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("feed_id", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=10), nullable=False),
        sa.Column("scheduled_for", UTCDateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("phase", sa.String(length=10), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=40), nullable=True),
        sa.Column("lease_until", UTCDateTime(timezone=True), nullable=True),
        sa.Column("claims", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("cursor_from", sa.String(length=40), nullable=True),
        sa.Column("cursor_to", sa.String(length=40), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("file_name", sa.String(length=255), nullable=True),
        sa.Column("file_chunks", sa.Integer(), nullable=True),
        sa.Column("file_expires_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("file_deleted_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("produced_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["feed_id"], ["feed.id"], name="fk_feed_run_feed_id_feed",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_feed_run"),
        sa.UniqueConstraint("feed_id", "scheduled_for",
                            name="uq_feed_run_feed_id_scheduled_for"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_feed_run_feed", "feed_run", ["feed_id", "id"])
    op.create_index("ix_feed_run_due", "feed_run", ["status", "next_attempt_at"])
    op.create_index("ix_feed_run_expiry", "feed_run", ["file_expires_at"])
    op.create_table(
        "feed_file_chunk",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["feed_run.id"],
                                name="fk_feed_file_chunk_run_id_feed_run", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_feed_file_chunk"),
    )
    op.create_index("ix_change_log_subject", "change_log", ["kind", "subject", "sequence"])


def downgrade() -> None:
    op.drop_index("ix_change_log_subject", table_name="change_log")
    op.drop_table("feed_file_chunk")
    op.drop_table("feed_run")
    op.drop_table("feed")
