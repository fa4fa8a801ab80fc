"""Commit-driven wake-ups across processes: PostgreSQL LISTEN/NOTIFY.

Writers call :func:`notify_due` inside the transaction that creates due deliveries; the
notification is delivered only if and when that transaction commits. Workers run
:func:`listen` and wake at once instead of waiting for their next poll. On SQLite there is
no cross-process signal: workers in other processes poll (``serve`` wakes its own engine
directly).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy import Connection, text

CHANNEL = "postback_due"
log = logging.getLogger("postback.wakeup")


def notify_due(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"NOTIFY {CHANNEL}"))


def libpq_url(url: str) -> str | None:
    """The libpq form of a PostgreSQL URL, or None for other databases."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return None


async def listen(url: str, wake: Callable[[], None]) -> None:
    """Call ``wake`` on every notification, reconnecting after errors, until cancelled."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                wake()  # anything committed while we were not listening
                async for _ in conn.notifies():
                    wake()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database restarted, say: poll until it is back
            log.warning("LISTEN connection lost (%s); retrying in 1 s", exc)
            await asyncio.sleep(1)
