"""Time-driven work: lock and clear actions whose contract dates have passed; and the
scheduler's heartbeat, by which ``/readyz`` knows a scheduler is running."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, insert, update

from postback.db.clock import STALE_HEARTBEATS, db_now
from postback.db.schema import worker
from postback.services.inquiries import run_auto_approvals
from postback.services.ledger import run_lifecycle


def run_due(engine: Engine, as_of: datetime, batch: int = 1000) -> dict[str, int]:
    """Lock and clear every action due at ``as_of``, then apply inquiry auto-approval
    rules, in transactions of ``batch`` rows."""
    total = {"locked": 0, "cleared": 0, "auto_approved": 0}
    while True:
        with engine.begin() as conn:
            done = run_lifecycle(conn, as_of, datetime.now(UTC), batch)
        for key, value in done.items():
            total[key] += value
        if not any(done.values()):
            break
    with engine.begin() as conn:  # one pass: what its rules refuse stays open
        total["auto_approved"] = run_auto_approvals(conn, as_of, datetime.now(UTC))
    return total


def scheduler_name() -> str:
    """This process's row in ``worker`` (at most 40 characters)."""
    return f"scheduler:{socket.gethostname()[:22]}:{os.getpid()}"[:40]


def heartbeat(engine: Engine, name: str, heartbeat_seconds: float) -> None:
    """Prove this scheduler alive: its ``worker`` row (kind ``scheduler``) gets the
    database's time; the rows of schedulers silent for ``STALE_HEARTBEATS`` heartbeats (a
    killed one's) are removed."""
    with engine.begin() as conn:
        now = db_now(conn)
        found = conn.execute(update(worker).where(worker.c.name == name)
                             .values(heartbeat_at=now)).rowcount
        if not found:
            conn.execute(insert(worker).values(
                name=name, kind="scheduler", host=socket.gethostname()[:255], pid=os.getpid(),
                started_at=now, heartbeat_at=now))
        cutoff = now - timedelta(seconds=STALE_HEARTBEATS * heartbeat_seconds)
        conn.execute(delete(worker).where(worker.c.kind == "scheduler",
                                          worker.c.heartbeat_at < cutoff))


def leave(engine: Engine, name: str) -> None:
    """A clean stop: the scheduler's row goes."""
    with engine.begin() as conn:
        conn.execute(delete(worker).where(worker.c.name == name))
