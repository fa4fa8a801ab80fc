"""Commit-driven wake-ups across processes.

A process that commits due deliveries wakes the delivery engines, which otherwise find
them at their next poll (``POSTBACK_POLL_INTERVAL``).

* PostgreSQL: writers call :func:`notify_due` inside the transaction that creates due
  deliveries; the notification is delivered only if and when that transaction commits, to
  every worker on every machine that runs :func:`listen`.
* SQLite (one host by nature): each engine process binds a Unix datagram socket in a
  directory beside the database file (``postback.db-wake/``); after a commit the API sends
  one byte to every socket there (:func:`waker`). Sending never blocks and never fails the
  request: a full socket already has a wake-up waiting, and a socket nobody listens on any
  more (a killed worker's) is removed.

The engine runs :func:`listener` for either database; the API passes :func:`waker` to
``create_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from postback.db.engine import normalize_url

CHANNEL = "postback_due"
log = logging.getLogger("postback.wakeup")
#: room for a socket's own name (``<pid>-<8 hex>.sock``) after the directory, within the
#: 107 bytes a Unix socket address may hold
_NAME_ROOM = 30
_SUN_PATH_MAX = 107


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


def wake_directory(database_url: str) -> Path | None:
    """Where the engines of a SQLite database bind their wake-up sockets: beside the file
    (``postback.db-wake``), or, when that path is too long for a socket address, a directory
    in the temporary directory named after it. None for other databases."""
    url = make_url(normalize_url(database_url))
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    database = Path(url.database).resolve()
    beside = database.with_name(database.name + "-wake")
    if len(os.fsencode(beside)) + _NAME_ROOM <= _SUN_PATH_MAX:
        return beside
    digest = hashlib.sha256(os.fsencode(beside)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"postback-wake-{digest}"


def listener(database_url: str, wake: Callable[[], None]) -> Coroutine[Any, Any, None]:
    """What a delivery engine runs (as a task, until cancelled) to be woken by commits in
    other processes: LISTEN on PostgreSQL, a datagram socket on SQLite. It calls ``wake``
    once when it starts, for anything committed before it listened."""
    pg = libpq_url(database_url)
    if pg is not None:
        return listen(pg, wake)
    directory = wake_directory(database_url)
    if directory is None:
        return _never()
    return _listen_datagrams(directory, wake)


async def _never() -> None:
    await asyncio.Event().wait()


async def _listen_datagrams(directory: Path, wake: Callable[[], None]) -> None:
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    except OSError as exc:
        log.warning("no wake-up socket in %s (%s): polling only", directory, exc)
        return
    path = directory / f"{os.getpid()}-{secrets.token_hex(4)}.sock"
    loop = asyncio.get_running_loop()
    try:
        sock.setblocking(False)
        sock.bind(os.fsencode(path))
    except OSError as exc:
        sock.close()
        log.warning("no wake-up socket at %s (%s): polling only", path, exc)
        return

    def readable() -> None:
        with contextlib.suppress(OSError):
            while sock.recv(64):  # every waiting byte: one wake-up covers them all
                pass
        wake()

    loop.add_reader(sock.fileno(), readable)
    try:
        wake()
        await asyncio.Event().wait()
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
        with contextlib.suppress(OSError):
            path.unlink()


class _DatagramWaker:
    """Send one byte to every engine's socket in ``directory``; safe from any thread."""

    RESCAN_SECONDS = 1.0

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._lock = threading.Lock()
        self._seen: tuple[int, float] | None = None  # (directory mtime, when scanned)
        self._targets: tuple[bytes, ...] = ()

    def _current(self) -> tuple[bytes, ...]:
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except OSError:
            return ()
        now = time.monotonic()
        seen = self._seen
        # a socket bound or removed changes the directory's mtime; rescan now and then as
        # well, in case the file system keeps coarse times
        if seen is not None and seen[0] == mtime and now - seen[1] < self.RESCAN_SECONDS:
            return self._targets
        with self._lock:
            try:
                names = [e.path for e in os.scandir(self.directory) if e.name.endswith(".sock")]
            except OSError:
                names = []
            self._targets = tuple(os.fsencode(n) for n in names)
            self._seen = (mtime, now)
            return self._targets

    def __call__(self) -> None:
        for target in self._current():
            try:
                self._sock.sendto(b"!", target)
            except (BlockingIOError, InterruptedError):
                pass  # its queue is full: it has wake-ups waiting already
            except (ConnectionRefusedError, FileNotFoundError):
                # nobody listens there any more (a worker that was killed): remove it
                with contextlib.suppress(OSError):
                    os.unlink(target)
                self._seen = None
            except OSError:
                pass


def waker(database_url: str) -> Callable[[], None]:
    """What the API calls after committing due deliveries (``create_app(wake=...)``):
    thread-safe, never blocks, never raises. On PostgreSQL the commit's NOTIFY has woken
    every worker already, so this does nothing."""
    directory = None if libpq_url(database_url) else wake_directory(database_url)
    if directory is None:
        return lambda: None
    return _DatagramWaker(directory)
