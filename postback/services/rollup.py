"""The Deliveries chart's hourly rollup, and retention of old attempt bodies.

Triggers on ``delivery`` (migration 0012) append a row to ``delivery_hourly_delta`` for
each new delivery and each change of its state; ``compact`` folds those deltas into
``delivery_hourly``, a bounded batch per transaction, and removes them in the same
transaction (so a fold killed half-way leaves both tables as they were). A read sums the
folded rows and the deltas not folded yet, so the chart is exact at any moment and costs
the hours it shows, not the deliveries they hold.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, func, insert, select, text, union_all, update

from postback.db.schema import (
    delivery_attempt,
    delivery_hourly,
    delivery_hourly_delta,
    housekeeping,
)

#: deltas folded per transaction: a fold holds SQLite's write lock this long at most
FOLD_BATCH = 20_000
#: deltas folded since the last VACUUM after which the scheduler runs one (PostgreSQL)
VACUUM_AFTER = 200_000
#: hours of rollup kept (the chart shows 7 days)
KEEP_DAYS = 31
#: attempts whose bodies are emptied per transaction
PRUNE_BATCH = 5_000
STATES = ("delivered", "retrying", "failed", "due")


def hour_key(at: datetime) -> str:
    """An aware datetime's hour as the rollup stores it (UTC, ``YYYY-MM-DD HH``)."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H")


def compact(db: Engine) -> int:
    """Fold up to ``FOLD_BATCH`` deltas into the rollup; how many were folded (0: none
    were waiting). Safe to run from several schedulers at once."""
    with db.begin() as conn:
        if conn.dialect.name == "postgresql":
            # the deltas taken are deleted by this transaction: a second compactor skips
            # them (SKIP LOCKED), so none is counted twice
            return int(conn.execute(text("""
                WITH taken AS (
                    DELETE FROM delivery_hourly_delta WHERE id IN (
                        SELECT id FROM delivery_hourly_delta ORDER BY id LIMIT :batch
                        FOR UPDATE SKIP LOCKED)
                    RETURNING partner_id, hour, old_state, new_state, n),
                moves AS (
                    SELECT partner_id, hour, new_state AS state, n FROM taken
                    UNION ALL
                    SELECT partner_id, hour, old_state, -n FROM taken
                    WHERE old_state IS NOT NULL),
                folded AS (
                    INSERT INTO delivery_hourly (partner_id, hour, state, n)
                    SELECT partner_id, hour, state, sum(n) FROM moves
                    GROUP BY partner_id, hour, state
                    ORDER BY partner_id, hour, state  -- one lock order: no deadlock
                    ON CONFLICT (partner_id, hour, state)
                    DO UPDATE SET n = delivery_hourly.n + excluded.n
                    RETURNING 1)
                SELECT count(*) FROM taken"""), {"batch": FOLD_BATCH}).scalar_one())
        # SQLite: one writer at a time, and this transaction is it (BEGIN IMMEDIATE)
        first = select(delivery_hourly_delta.c.id).order_by(delivery_hourly_delta.c.id) \
            .limit(FOLD_BATCH).subquery()
        last = conn.execute(select(func.max(first.c.id))).scalar()
        if last is None:
            return 0
        conn.execute(text("""
            INSERT INTO delivery_hourly (partner_id, hour, state, n)
            SELECT partner_id, hour, state, sum(n) FROM (
                SELECT partner_id, hour, new_state AS state, n
                FROM delivery_hourly_delta WHERE id <= :last
                UNION ALL
                SELECT partner_id, hour, old_state, -n
                FROM delivery_hourly_delta WHERE id <= :last AND old_state IS NOT NULL)
            WHERE true GROUP BY partner_id, hour, state
            ON CONFLICT (partner_id, hour, state) DO UPDATE SET n = n + excluded.n"""),
            {"last": last})
        return int(conn.execute(delivery_hourly_delta.delete().where(
            delivery_hourly_delta.c.id <= last)).rowcount)


def vacuum(db: Engine) -> None:
    """After a large fold on PostgreSQL: the deltas' dead rows gone now, not at
    autovacuum's next round (a read scans the small delta table whole)."""
    if db.dialect.name == "postgresql":
        with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM delivery_hourly_delta"))


def hourly_outcomes(conn: Connection, partner_id: int, since: datetime
                    ) -> dict[datetime, dict[str, int]]:
    """Deliveries created since ``since``'s hour, per hour (UTC) of creation, by state:
    delivered, retrying (pending after a failure), failed, due (not tried yet, or held)."""
    first = hour_key(since)
    h, d = delivery_hourly.c, delivery_hourly_delta.c
    # one statement, so one snapshot: read as two, a fold committing between them would
    # drop its batch from both (on PostgreSQL's READ COMMITTED); the deltas, referenced
    # twice, are read once (PostgreSQL materializes such a CTE)
    unfolded = select(d.hour, d.old_state, d.new_state, func.sum(d.n).label("n")).where(
        d.partner_id == partner_id, d.hour >= first).group_by(
        d.hour, d.old_state, d.new_state).cte("unfolded")
    u = unfolded.c
    moves = union_all(
        select(h.hour, h.state, h.n).where(h.partner_id == partner_id, h.hour >= first),
        select(u.hour, u.new_state, u.n),
        select(u.hour, u.old_state, -u.n).where(u.old_state.is_not(None)))
    counts: dict[tuple[str, str], int] = {}
    for hour, state, n in conn.execute(moves):
        counts[hour, state] = counts.get((hour, state), 0) + int(n)
    out: dict[datetime, dict[str, int]] = {}
    for (hour, state), n in counts.items():
        try:  # a row written by anything but the triggers is left out, not a failed page
            at = datetime.strptime(hour, "%Y-%m-%d %H").replace(tzinfo=since.tzinfo)
        except (TypeError, ValueError):
            continue
        if n and state in STATES:
            out.setdefault(at, dict.fromkeys(STATES, 0))[state] = n
    return out


def prune(db: Engine, now: datetime, attempt_body_days: int) -> dict[str, int]:
    """Retention, one bounded batch: the bodies of attempts started more than
    ``attempt_body_days`` ago are emptied (the attempt, its status, headers, timing and
    error stay), walking ``delivery_attempt`` by id from where the last batch stopped
    (``attempts_walked``: ``PRUNE_BATCH`` means there may be more); and
    rollup hours older than ``KEEP_DAYS`` are dropped. ``attempt_body_days`` 0 keeps
    every body."""
    a = delivery_attempt.c
    emptied = walked = 0
    with db.begin() as conn:
        if attempt_body_days > 0:
            horizon = now - timedelta(days=attempt_body_days)
            cursor = conn.execute(select(housekeeping.c.last_id).where(
                housekeeping.c.name == "attempt_bodies")).scalar()
            start = cursor or 0
            rows = conn.execute(select(a.id, a.started_at).where(a.id > start)
                                .order_by(a.id).limit(PRUNE_BATCH)).all()
            # only the old prefix: the walk stops at the first attempt still inside the
            # horizon, and goes on from there next time
            old = [r.id for r in itertools.takewhile(lambda r: r.started_at < horizon, rows)]
            walked = len(old)
            if old:
                emptied = conn.execute(update(delivery_attempt).where(
                    a.id >= old[0], a.id <= old[-1],
                    (a.response_body.is_not(None)) | (a.response_body_raw.is_not(None)))
                    .values(response_body=None, response_body_raw=None)).rowcount
                if cursor is None:
                    conn.execute(insert(housekeeping).values(name="attempt_bodies",
                                                             last_id=old[-1]))
                else:
                    conn.execute(update(housekeeping).where(
                        housekeeping.c.name == "attempt_bodies").values(last_id=old[-1]))
        hours = conn.execute(delivery_hourly.delete().where(
            delivery_hourly.c.hour < hour_key(now - timedelta(days=KEEP_DAYS)))).rowcount
    return {"attempt_bodies_emptied": int(emptied), "attempts_walked": walked,
            "rollup_hours_dropped": int(hours)}
