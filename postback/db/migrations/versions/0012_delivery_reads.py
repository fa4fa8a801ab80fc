"""reads that do not grow with the delivery table: an index per list filter, and the
Deliveries chart's hourly rollup kept by triggers; where attempt-body retention stopped

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 05:00:00.000000

The rollup starts from the deliveries already there (one ``GROUP BY`` in the upgrade's
transaction); from then on the triggers append a delta per change of state, which the
scheduler folds in (``postback.services.rollup``).

A later migration that rebuilds ``delivery`` on SQLite (``batch_alter_table``: copy, drop,
rename) drops its triggers with it, and must create them again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def state(row: str) -> str:
    """A delivery's state on the chart (``services/rollup.py`` reads the same four)."""
    return (f"CASE WHEN {row}status = 'succeeded' THEN 'delivered' "
            f"WHEN {row}status = 'failed' THEN 'failed' "
            f"WHEN {row}status = 'pending' AND {row}failures > 0 THEN 'retrying' "
            f"ELSE 'due' END")


def upgrade() -> None:
    for name, columns in (("ix_delivery_partner_status", ["partner_id", "status", "id"]),
                          ("ix_delivery_partner_trigger", ["partner_id", "trigger", "id"]),
                          ("ix_delivery_partner_type",
                           ["partner_id", "notification_type", "id"]),
                          ("ix_delivery_action", ["action_id", "id"])):
        op.create_index(name, "delivery", columns)
    op.create_table(
        "delivery_hourly",
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("hour", sa.String(length=13), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("partner_id", "hour", "state", name="pk_delivery_hourly"),
    )
    op.create_table(
        "delivery_hourly_delta",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=False),
        sa.Column("partner_id", sa.Integer(), nullable=False),
        sa.Column("hour", sa.String(length=13), nullable=False),
        sa.Column("old_state", sa.String(length=10), nullable=True),
        sa.Column("new_state", sa.String(length=10), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_delivery_hourly_delta"),
    )
    op.create_table(
        "housekeeping",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_housekeeping"),
    )
    if op.get_bind().dialect.name == "sqlite":
        hour = "substr({row}created_at, 1, 13)"
        op.execute(f"""
            CREATE TRIGGER tr_delivery_hourly_insert AFTER INSERT ON delivery BEGIN
                INSERT INTO delivery_hourly_delta (partner_id, hour, old_state, new_state, n)
                VALUES (NEW.partner_id, {hour.format(row="NEW.")}, NULL, {state("NEW.")}, 1);
            END""")
        op.execute(f"""
            CREATE TRIGGER tr_delivery_hourly_update AFTER UPDATE OF status, failures
            ON delivery WHEN {state("OLD.")} != {state("NEW.")} BEGIN
                INSERT INTO delivery_hourly_delta (partner_id, hour, old_state, new_state, n)
                VALUES (NEW.partner_id, {hour.format(row="NEW.")}, {state("OLD.")},
                        {state("NEW.")}, 1);
            END""")
    else:
        hour = "to_char({row}created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24')"
        # new rows: a statement-level trigger over the statement's rows (a bulk INSERT …
        # SELECT writes a delta per hour and state; the fan-out's executemany, one
        # statement a row, costs about what a row trigger would)
        op.execute(f"""
            CREATE FUNCTION delivery_hourly_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO delivery_hourly_delta (partner_id, hour, old_state, new_state, n)
                SELECT partner_id, {hour.format(row="")}, NULL, {state("")}, count(*)
                FROM inserted GROUP BY 1, 2, 4;
                RETURN NULL;
            END $$""")
        op.execute("""
            CREATE TRIGGER tr_delivery_hourly_insert AFTER INSERT ON delivery
            REFERENCING NEW TABLE AS inserted
            FOR EACH STATEMENT EXECUTE FUNCTION delivery_hourly_inserted()""")
        # changes: a row trigger (the engine records one UPDATE per delivery), called only
        # when status or failures really changed
        op.execute(f"""
            CREATE FUNCTION delivery_hourly_changed() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                was text := {state("OLD.")};
                now_state text := {state("NEW.")};
            BEGIN
                IF was <> now_state THEN
                    INSERT INTO delivery_hourly_delta
                        (partner_id, hour, old_state, new_state, n)
                    VALUES (NEW.partner_id, {hour.format(row="NEW.")}, was, now_state, 1);
                END IF;
                RETURN NULL;
            END $$""")
        op.execute("""
            CREATE TRIGGER tr_delivery_hourly_update AFTER UPDATE OF status, failures
            ON delivery FOR EACH ROW
            WHEN (OLD.status IS DISTINCT FROM NEW.status
                  OR OLD.failures IS DISTINCT FROM NEW.failures)
            EXECUTE FUNCTION delivery_hourly_changed()""")
        # folded every few seconds: keep its dead rows from piling up between vacuums
        op.execute("ALTER TABLE delivery_hourly_delta SET (autovacuum_vacuum_scale_factor "
                   "= 0, autovacuum_vacuum_threshold = 10000)")
    op.execute(f"""
        INSERT INTO delivery_hourly (partner_id, hour, state, n)
        SELECT partner_id, {hour.format(row="")}, {state("")}, count(*) FROM delivery
        GROUP BY partner_id, {hour.format(row="")}, {state("")}""")


def downgrade() -> None:
    op.execute("DROP TRIGGER tr_delivery_hourly_insert ON delivery"
               if op.get_bind().dialect.name != "sqlite" else
               "DROP TRIGGER tr_delivery_hourly_insert")
    op.execute("DROP TRIGGER tr_delivery_hourly_update ON delivery"
               if op.get_bind().dialect.name != "sqlite" else
               "DROP TRIGGER tr_delivery_hourly_update")
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION delivery_hourly_inserted()")
        op.execute("DROP FUNCTION delivery_hourly_changed()")
    op.drop_table("housekeeping")
    op.drop_table("delivery_hourly_delta")
    op.drop_table("delivery_hourly")
    for name in ("ix_delivery_action", "ix_delivery_partner_type",
                 "ix_delivery_partner_trigger", "ix_delivery_partner_status"):
        op.drop_index(name, table_name="delivery")
