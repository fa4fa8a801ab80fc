"""The database's clock: the one time every worker agrees on.

Leases, due times and heartbeats are decided by the database's clock, not by each worker's
own, so workers whose clocks are minutes apart neither steal each other's leases nor sit
on due work. On PostgreSQL that is ``now()``; SQLite is embedded, so every process using
the file runs on the same host and its clock is the host's.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, text

from postback.core.values import utc

#: a worker silent for this many heartbeats is presumed dead
STALE_HEARTBEATS = 4


def db_now(conn: Connection) -> datetime:
    """The database's current time (aware UTC)."""
    if conn.dialect.name == "postgresql":
        value = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        return utc(value)
    return datetime.now(UTC)
