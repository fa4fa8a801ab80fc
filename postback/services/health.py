"""System health: for the operator, what is due, how fast it goes out, how much fails
(:func:`health`); for a load balancer or an orchestrator, whether every part of the
deployment is there to do its work (:class:`Readiness`, ``GET /readyz``)."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.exc import DBAPIError

from postback.core.values import format_date, utc
from postback.db.clock import STALE_HEARTBEATS, db_now
from postback.db.engine import reader
from postback.db.migrate import alembic_config
from postback.db.schema import delivery, delivery_attempt, worker


def health(conn: Connection, now: datetime) -> dict[str, Any]:
    due = (delivery.c.status == "pending") & (delivery.c.next_attempt_at <= now)
    backlog, oldest = conn.execute(
        select(func.count(), func.min(delivery.c.next_attempt_at)).where(due)).one()
    window = now - timedelta(minutes=5)
    recent = conn.execute(
        select(func.count(), func.count().filter(delivery_attempt.c.outcome != "success"))
        .where(delivery_attempt.c.started_at >= window)).one()
    hour = conn.execute(
        select(func.count(), func.count().filter(delivery_attempt.c.outcome != "success"))
        .where(delivery_attempt.c.started_at >= now - timedelta(hours=1))).one()
    workers = conn.execute(
        select(delivery_attempt.c.worker, func.max(delivery_attempt.c.started_at),
               func.count())
        .where(delivery_attempt.c.started_at >= now - timedelta(minutes=10))
        .group_by(delivery_attempt.c.worker).order_by(delivery_attempt.c.worker)).all()
    return {
        "due_backlog": backlog,
        "oldest_due_at": format_date(oldest) or None,
        "oldest_due_seconds": round((now - oldest).total_seconds(), 1) if oldest else None,
        "deliveries_per_minute": round(recent[0] / 5, 1),
        "failure_rate_last_hour": round(hour[1] / hour[0], 4) if hour[0] else None,
        "attempts_last_hour": hour[0],
        "workers_seen": [{"name": w or "?", "last_attempt_at": format_date(at),
                          "attempts_last_10_minutes": n} for w, at, n in workers],
    }


# -- readiness (GET /readyz) ----------------------------------------------------------------

@dataclass(frozen=True)
class Component:
    ok: bool
    detail: str


@cache
def migration_head() -> frozenset[str]:
    """The schema revision(s) this code expects: the migration scripts' head."""
    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def _liveness(conn: Connection, kind: str, now: datetime, stale_after: float,
              one: str, many: str) -> Component:
    cutoff = now - timedelta(seconds=stale_after)
    live, latest = conn.execute(
        select(func.count(), func.max(worker.c.heartbeat_at))
        .where(worker.c.kind == kind, worker.c.heartbeat_at > cutoff)).one()
    if live:
        ago = max(0.0, (now - utc(latest)).total_seconds())
        return Component(True, f"{live} {one if live == 1 else many}, last heartbeat "
                               f"{ago:.1f} s ago")
    last = conn.execute(select(func.max(worker.c.heartbeat_at))
                        .where(worker.c.kind == kind)).scalar()
    if last is None:
        return Component(False, f"no {one} is running (none has sent a heartbeat)")
    return Component(False, f"no {one} heartbeat for {(now - utc(last)).total_seconds():.0f} s")


def readiness(conn: Connection, head: frozenset[str], heartbeat_seconds: float
              ) -> dict[str, Component]:
    """Whether this deployment can do its work, part by part: the database answers, its
    schema is the one this code expects, and at least one delivery engine and one scheduler
    have sent a heartbeat lately (within ``STALE_HEARTBEATS`` heartbeats)."""
    conn.execute(select(1)).one()
    out = {"database": Component(True, "answers")}
    try:
        found = frozenset(conn.execute(text("SELECT version_num FROM alembic_version"))
                          .scalars())
    except DBAPIError:
        found = frozenset()
        conn.rollback()
    if found == head:
        out["migrations"] = Component(True, f"at {', '.join(sorted(head))}")
    elif not found:
        out["migrations"] = Component(False, "the database has no schema version: run "
                                             "`postback migrate`")
    else:
        out["migrations"] = Component(False, f"the database is at {', '.join(sorted(found))}, "
                                             f"this code expects {', '.join(sorted(head))}: "
                                             "run `postback migrate`")
    now = db_now(conn)
    stale = STALE_HEARTBEATS * heartbeat_seconds
    out["engine"] = _liveness(conn, "engine", now, stale, "engine worker", "engine workers")
    out["scheduler"] = _liveness(conn, "scheduler", now, stale, "scheduler", "schedulers")
    return out


class Readiness:
    """Answers ``/readyz`` without ever waiting longer than ``timeout``: the checks run on
    one thread of their own, and a caller that comes while a check is under way waits for
    that one (so a database that hangs holds one thread, however often it is asked)."""

    def __init__(self, db: Engine, heartbeat_seconds: float, timeout: float = 2.0) -> None:
        self.db = db
        self.heartbeat_seconds = heartbeat_seconds
        self.timeout = timeout
        self.head = migration_head()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readyz")
        self._lock = threading.Lock()
        self._running: Future[dict[str, Component]] | None = None

    def _check(self) -> dict[str, Component]:
        with reader(self.db).connect() as conn:
            return readiness(conn, self.head, self.heartbeat_seconds)

    def check(self) -> dict[str, Component]:
        """Every component; blocks the calling thread (never an event loop) for at most
        ``timeout`` seconds."""
        with self._lock:
            if self._running is None or self._running.done():
                self._running = self._pool.submit(self._check)
            running = self._running
        try:
            return running.result(self.timeout)
        except FutureTimeout:
            why = f"no answer within {self.timeout:g} s"
        except Exception as exc:  # the database is down, say
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        unknown = Component(False, "unknown: the database did not answer")
        return {"database": Component(False, why), "migrations": unknown,
                "engine": unknown, "scheduler": unknown}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
