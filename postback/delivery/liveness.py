"""Worker liveness: heartbeats in the database, and taking up a dead worker's work.

Every engine worker writes the database's time into its ``worker`` row every
``POSTBACK_HEARTBEAT_SECONDS``. A worker silent for ``STALE_HEARTBEATS`` heartbeats is
presumed dead: the first live worker to notice hands its leased deliveries back (due at
once) and removes its row, so after a SIGKILL its work is sent again within seconds, not
when its leases run out. A live worker renews the leases of what it still holds before
they end (a slow receiver never gets a duplicate), and reads the database's clock at each
heartbeat, so workers whose clocks disagree still agree on every lease and due time.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, insert, or_, select, update

from postback.db.clock import STALE_HEARTBEATS, db_now
from postback.db.schema import delivery, worker
from postback.db.wakeup import notify_due


def worker_name(kind: str = "engine") -> str:
    """Unique per process start (a restarted container may get the same pid again)."""
    host = socket.gethostname()[:20]
    prefix = "" if kind == "engine" else f"{kind[:9]}:"
    return f"{prefix}{host}:{os.getpid()}:{secrets.token_hex(3)}"[:40]


@dataclass(frozen=True)
class Beat:
    now: datetime  #: the database's time
    #: False when others had presumed this worker dead (its work was handed out)
    known: bool
    reclaimed: int  #: deliveries taken back from dead workers
    #: of the ids asked about, those no longer this worker's to send: held (their setting
    #: was turned off), discarded, or leased to another
    gone: list[int]


def heartbeat(engine: Engine, name: str, kind: str, started_at: datetime,
              heartbeat_seconds: float, lease_seconds: float,
              renew: Sequence[int] = (), watch: Sequence[int] = ()) -> Beat:
    """One heartbeat, in one transaction: prove this worker alive, hand back the work of
    workers that stopped, extend the leases of ``renew`` (what this worker has on the
    wire), and say which of ``renew`` and ``watch`` (what it holds unsent) it has lost.

    A worker judges others only when its own heartbeats have been regular: after the
    database was unreachable or slow for everyone (a restart, a failover, a long lock),
    every heartbeat looks old, and reclaiming then would send everything on the wire
    twice."""
    with engine.begin() as conn:
        now = db_now(conn)
        stale = timedelta(seconds=STALE_HEARTBEATS * heartbeat_seconds)
        previous = conn.execute(select(worker.c.heartbeat_at).where(worker.c.name == name)
                                .with_for_update()).scalar()
        known = previous is not None
        if known:
            conn.execute(update(worker).where(worker.c.name == name).values(heartbeat_at=now))
        else:
            conn.execute(insert(worker).values(
                name=name, kind=kind, host=socket.gethostname()[:255], pid=os.getpid(),
                started_at=started_at, heartbeat_at=now))
        reclaimed = 0
        regular = previous is not None and now - previous < stale / 2
        if kind == "engine" and regular:
            # deleted first (the row lock decides a race with a late heartbeat: a worker
            # that beat meanwhile is not deleted, and keeps its work)
            dead = list(conn.execute(delete(worker).where(
                worker.c.kind == "engine", worker.c.heartbeat_at < now - stale)
                .returning(worker.c.name)).scalars())
            if dead:
                reclaimed = conn.execute(update(delivery).where(
                    delivery.c.lease_owner.in_(dead),
                    delivery.c.status.in_(("pending", "held")))
                    .values(lease_owner=None, next_attempt_at=now)).rowcount
                if reclaimed:
                    notify_due(conn)
        if renew:
            conn.execute(update(delivery).where(
                delivery.c.id.in_(renew), delivery.c.lease_owner == name,
                delivery.c.status.in_(("pending", "held")))
                .values(next_attempt_at=now + timedelta(seconds=lease_seconds)))
        asked = [*renew, *watch]
        gone = list(conn.execute(select(delivery.c.id).where(
            delivery.c.id.in_(asked),
            or_(delivery.c.status != "pending", delivery.c.lease_owner.is_(None),
                delivery.c.lease_owner != name))).scalars()) if asked else []
    return Beat(now, known, reclaimed, gone)


def leave(engine: Engine, name: str, still_held: Sequence[int] = ()) -> None:
    """A clean stop: what the worker still holds (results it could not record) is handed
    back, due at once, and its row goes."""
    with engine.begin() as conn:
        if still_held:
            conn.execute(update(delivery).where(
                delivery.c.id.in_(still_held), delivery.c.lease_owner == name)
                .values(lease_owner=None, next_attempt_at=db_now(conn)))
        conn.execute(delete(worker).where(worker.c.name == name))
