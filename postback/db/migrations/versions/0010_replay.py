"""replays: a delivery's event id is no longer unique (a replay's new delivery keeps it)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 09:10:00.000000

On SQLite the unique constraint lives in the table's CREATE statement, so ``delivery`` is
rebuilt (copy, DROP, rename) inside the upgrade's one transaction, with foreign keys off
(``postback.db.migrate``): a start stopped anywhere leaves 0009 and the rows as they were.
The rebuild would carry the partial index ``ix_delivery_held`` over as a full one, so it
is dropped before and made again after. PostgreSQL alters the table in place.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postback.db.schema import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_HELD = sa.text("status = 'held'")
_REPLAYED = sa.text("replay_id IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "replay",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("request_key", sa.String(length=64), nullable=True),
        sa.Column("since", UTCDateTime(timezone=True), nullable=False),
        sa.Column("until", UTCDateTime(timezone=True), nullable=True),
        sa.Column("type", sa.String(length=40), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("replayed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("skipped", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("queued_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["partner_id"], ["partner.id"],
                                name="fk_replay_partner_id_partner"),
        sa.PrimaryKeyConstraint("id", name="pk_replay"),
        sa.UniqueConstraint("partner_id", "request_key", name="uq_replay_partner_id_request_key"),
    )
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.drop_index("ix_delivery_held", table_name="delivery")
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_constraint("uq_delivery_event_id", type_="unique")
        batch_op.add_column(sa.Column("replay_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_delivery_replay_id_replay", "replay",
                                    ["replay_id"], ["id"])
        batch_op.create_index("ix_delivery_event_id", ["event_id"], unique=False)
    if sqlite:
        op.create_index("ix_delivery_held", "delivery", ["setting_id"],
                        sqlite_where=_HELD, postgresql_where=_HELD)
    op.create_index("ix_delivery_replay", "delivery", ["replay_id", "status"],
                    sqlite_where=_REPLAYED, postgresql_where=_REPLAYED)


def downgrade() -> None:
    # the replays' deliveries repeat event ids, which the unique constraint refuses
    op.execute("DELETE FROM delivery_attempt WHERE delivery_id IN "
               "(SELECT id FROM delivery WHERE replay_id IS NOT NULL)")
    op.execute("DELETE FROM delivery WHERE replay_id IS NOT NULL")
    op.drop_index("ix_delivery_replay", table_name="delivery")
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.drop_index("ix_delivery_held", table_name="delivery")
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_event_id")
        batch_op.drop_constraint("fk_delivery_replay_id_replay", type_="foreignkey")
        batch_op.drop_column("replay_id")
        batch_op.create_unique_constraint("uq_delivery_event_id", ["event_id"])
    if sqlite:
        op.create_index("ix_delivery_held", "delivery", ["setting_id"],
                        sqlite_where=_HELD, postgresql_where=_HELD)
    op.drop_table("replay")
