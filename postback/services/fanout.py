"""Catalog fan-out off the request path: the postbacks of a large catalog change written
by the scheduler, a bounded chunk per transaction, at the pace the engines send.

A bulk upsert of 10,000 items to a program with 100 partners is a million postbacks.
Written in the brand's transaction, the request took minutes and, on SQLite, held the
write lock that every other write waits for. Instead that transaction writes the change
log (every change's token values, as always) and one ``catalog_fanout`` row per change
(``outbox.enqueue_catalog_events``). Here each transaction takes the oldest waiting
changes of one program, enough for about ``CHUNK`` postbacks to its partners' current
settings, writes their deliveries rendered from the logged values (the same rows the
request would have written) and deletes those waiting rows: a crash anywhere leaves a
chunk written whole or not at all, and nothing twice. Chunks are written only while fewer
than ``WATERMARK`` catalog postbacks wait to be sent, so a million never sit in the queue
ahead of the actions and inquiries that come after them.

A change whose log row is missing or damaged, or a setting whose template no longer
compiles, is passed over with a warning: it cannot stall the rest. On PostgreSQL one
scheduler at a time writes a program's changes (an advisory lock), so they keep their
order whatever the number of schedulers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Text, cast, delete, func, select

from postback.core.routing import PRODUCT
from postback.db.schema import catalog_fanout, change_log, delivery
from postback.services.outbox import (
    LoggedChange,
    catalog_deliveries,
    catalog_settings,
    insert_deliveries,
)

log = logging.getLogger(__name__)

CHUNK = 2000  # postbacks written per transaction
WATERMARK = 10_000  # catalog postbacks waiting to be sent past which no more are written
ROUNDS = 20  # chunks per call of ``expand_due``, so its caller looks up now and then
FANOUT_LOCK = 0x666F  # PostgreSQL advisory lock class ("fo"), with the program's id


def waiting(conn: Connection) -> bool:
    """Whether any catalog change waits for its postbacks to be written."""
    return conn.execute(select(catalog_fanout.c.id).limit(1)).first() is not None


def unsent(conn: Connection, up_to: int, now: datetime) -> int:
    """Catalog postbacks due and waiting to be sent, counted up to ``up_to``: those a
    partner's Minimum Delay or retry backoff holds back are not in the engines' way."""
    rows = (select(delivery.c.id).where(delivery.c.status == "pending",
                                        delivery.c.notification_type == PRODUCT,
                                        delivery.c.next_attempt_at <= now)
            .limit(up_to).subquery())
    return int(conn.execute(select(func.count()).select_from(rows)).scalar_one())


def expand(engine: Engine, chunk: int = CHUNK, now: datetime | None = None) -> int:
    """Write the postbacks of the oldest waiting changes of one program (about ``chunk``
    of them) in one transaction; the number of changes done, 0 when none wait (or, on
    PostgreSQL, when another scheduler is writing that program's)."""
    with engine.begin() as conn:
        head = conn.execute(select(catalog_fanout.c.program_id).order_by(catalog_fanout.c.id)
                            .limit(1).with_for_update(skip_locked=True)).first()
        if head is None:
            return 0
        program_id = head.program_id
        if conn.dialect.name == "postgresql" and not conn.execute(
                select(func.pg_try_advisory_xact_lock(FANOUT_LOCK, program_id))).scalar_one():
            return 0  # one writer per program, so that its changes stay in order
        settings = catalog_settings(conn, program_id)
        take = max(1, chunk // len(settings)) if settings else chunk
        found = conn.execute(
            select(catalog_fanout.c.id, catalog_fanout.c.change_id, change_log.c.subject,
                   change_log.c.trigger, cast(change_log.c["values"], Text)
                   .label("values"))  # as text: what does not parse fails alone
            .outerjoin(change_log, (change_log.c.change_id == catalog_fanout.c.change_id)
                       & (change_log.c.program_id == catalog_fanout.c.program_id))
            .where(catalog_fanout.c.program_id == program_id)
            .order_by(catalog_fanout.c.id).limit(take)
            .with_for_update(of=catalog_fanout, skip_locked=True)).all()
        at = now or datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        for row in found:
            rows += _deliveries(row, settings, at)
        insert_deliveries(conn, rows)
        conn.execute(delete(catalog_fanout).where(catalog_fanout.c.id.in_(
            [row.id for row in found])))
        return len(found)


def expand_due(engine: Engine, watermark: int = WATERMARK, chunk: int = CHUNK,
               rounds: int = ROUNDS) -> int:
    """Chunks while changes wait and the engines have fewer than ``watermark`` catalog
    postbacks due to send; the number of changes done."""
    done = 0
    for _ in range(rounds):
        with engine.connect() as conn:
            if not waiting(conn) or unsent(conn, watermark, datetime.now(UTC)) >= watermark:
                break
        expanded = expand(engine, chunk)
        if not expanded:
            break
        done += expanded
    return done


def _deliveries(row: Any, settings: list[Mapping[str, Any]], now: datetime
                ) -> list[dict[str, Any]]:
    """One change's deliveries; none, with a warning, for a change whose log row is
    missing or damaged, so that it cannot hold up the changes after it."""
    try:
        if row.values is None:
            raise ValueError("its change-log row is missing")
        values = json.loads(row.values)
        if not isinstance(values, Mapping) or not all(
                isinstance(v, str) for v in values.values()):
            raise ValueError(f"its token values are not text ({type(values).__name__})")
        return catalog_deliveries(settings, [LoggedChange(
            row.change_id, row.subject, row.trigger, values)], now)
    except Exception as exc:
        log.warning("catalog fan-out: change %s gets no postbacks: %s", row.change_id, exc)
        return []
