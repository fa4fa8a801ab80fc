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

A change whose logged values are not a mapping (a damaged row) or a setting whose
template no longer compiles is passed over with a warning: it cannot stall the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select

from postback.core.routing import PRODUCT
from postback.db.schema import catalog_fanout, change_log, contract, delivery
from postback.services.notification_settings import compile_setting
from postback.services.outbox import (
    LoggedChange,
    active_settings,
    catalog_deliveries,
    insert_deliveries,
)

log = logging.getLogger(__name__)

CHUNK = 2000  # postbacks written per transaction
WATERMARK = 10_000  # catalog postbacks waiting to be sent past which no more are written
ROUNDS = 20  # chunks per call of ``expand_due``, so its caller looks up now and then


def waiting(conn: Connection) -> int:
    """Catalog changes whose postbacks are not written yet."""
    return int(conn.execute(select(func.count()).select_from(catalog_fanout)).scalar_one())


def unsent(conn: Connection, up_to: int) -> int:
    """Catalog postbacks waiting to be sent, counted up to ``up_to``."""
    rows = (select(delivery.c.id).where(delivery.c.status == "pending",
                                        delivery.c.notification_type == PRODUCT)
            .limit(up_to).subquery())
    return int(conn.execute(select(func.count()).select_from(rows)).scalar_one())


def expand(engine: Engine, chunk: int = CHUNK, now: datetime | None = None) -> int:
    """Write the postbacks of the oldest waiting changes of one program (about ``chunk``
    of them) in one transaction; the number of changes done, 0 when none wait."""
    with engine.begin() as conn:
        head = conn.execute(select(catalog_fanout.c.program_id).order_by(catalog_fanout.c.id)
                            .limit(1).with_for_update(skip_locked=True)).first()
        if head is None:
            return 0
        program_id = head.program_id
        partner_ids = set(conn.execute(select(contract.c.partner_id).where(
            contract.c.program_id == program_id)).scalars())
        settings = [s for found in active_settings(conn, partner_ids, {PRODUCT}).values()
                    for s in found if _compiles(s)]
        take = max(1, chunk // len(settings)) if settings else 10 * chunk
        found = conn.execute(
            select(catalog_fanout.c.id, change_log.c.change_id, change_log.c.subject,
                   change_log.c.trigger, change_log.c["values"])
            .join(change_log, change_log.c.change_id == catalog_fanout.c.change_id)
            .where(catalog_fanout.c.program_id == program_id)
            .order_by(catalog_fanout.c.id).limit(take)
            .with_for_update(of=catalog_fanout, skip_locked=True)).all()
        changes = [c for c in map(_logged_change, found) if c is not None]
        insert_deliveries(conn, catalog_deliveries(settings, changes, now or datetime.now(UTC)))
        conn.execute(delete(catalog_fanout).where(catalog_fanout.c.id.in_(
            [row.id for row in found])))
        return len(found)


def expand_due(engine: Engine, watermark: int = WATERMARK, chunk: int = CHUNK,
               rounds: int = ROUNDS) -> int:
    """Chunks while changes wait and the engines have fewer than ``watermark`` catalog
    postbacks left to send; the number of changes done."""
    done = 0
    for _ in range(rounds):
        with engine.connect() as conn:
            if unsent(conn, watermark) >= watermark:
                break
        expanded = expand(engine, chunk)
        if not expanded:
            break
        done += expanded
    return done


def _compiles(setting: Mapping[str, Any]) -> bool:
    try:
        compile_setting(setting["type"], setting["url"], setting["method"],
                        setting["body_format"], setting["body"])
    except Exception as exc:  # saved before a rule it breaks: its partner sees none
        log.warning("catalog fan-out: setting %s is passed over: its template does not "
                    "compile (%s)", setting["id"], exc)
        return False
    return True


def _logged_change(row: Any) -> LoggedChange | None:
    values = row.values
    if not isinstance(values, Mapping):
        log.warning("catalog fan-out: change %s has no token values in the change log "
                    "(%s): its postbacks are not written", row.change_id,
                    type(values).__name__)
        return None
    return LoggedChange(row.change_id, row.subject, row.trigger, values)
