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

from sqlalchemy import Engine, delete, insert, select, update

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
    renewed: int
    held: list[int]  #: of the ids asked about, those whose setting was turned off


def heartbeat(engine: Engine, name: str, kind: str, started_at: datetime,
              heartbeat_seconds: float, lease_seconds: float,
              renew: Sequence[int] = (), watch: Sequence[int] = ()) -> Beat:
    """One heartbeat, in one transaction: prove this worker alive, hand back the work of
    workers that stopped, extend the leases of ``renew``, and say which of ``watch``
    (deliveries this worker holds but has not sent) are now held."""
    with engine.begin() as conn:
        now = db_now(conn)
        known = conn.execute(update(worker).where(worker.c.name == name)
                             .values(heartbeat_at=now)).rowcount > 0
        if not known:
            conn.execute(insert(worker).values(
                name=name, kind=kind, host=socket.gethostname()[:255], pid=os.getpid(),
                started_at=started_at, heartbeat_at=now))
        reclaimed = 0
        if kind == "engine":
            cutoff = now - timedelta(seconds=STALE_HEARTBEATS * heartbeat_seconds)
            dead = list(conn.execute(select(worker.c.name).where(
                worker.c.kind == "engine", worker.c.heartbeat_at < cutoff)).scalars())
            if dead:
                reclaimed = conn.execute(update(delivery).where(
                    delivery.c.lease_owner.in_(dead),
                    delivery.c.status.in_(("pending", "held")))
                    .values(lease_owner=None, next_attempt_at=now)).rowcount
                conn.execute(delete(worker).where(worker.c.name.in_(dead),
                                                  worker.c.heartbeat_at < cutoff))
                if reclaimed:
                    notify_due(conn)
        renewed = 0
        if renew:
            renewed = conn.execute(update(delivery).where(
                delivery.c.id.in_(renew), delivery.c.lease_owner == name)
                .values(next_attempt_at=now + timedelta(seconds=lease_seconds))).rowcount
        held = list(conn.execute(select(delivery.c.id).where(
            delivery.c.id.in_(watch), delivery.c.status == "held")).scalars()) if watch else []
    return Beat(now, known, reclaimed, renewed, held)


def leave(engine: Engine, name: str) -> None:
    """A clean stop: the worker's row goes (it holds nothing any more)."""
    with engine.begin() as conn:
        conn.execute(delete(worker).where(worker.c.name == name))
