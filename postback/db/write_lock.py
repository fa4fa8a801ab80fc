"""SQLite's one writer, handed over at once instead of by polling.

SQLite lets one connection write at a time, and a writer that finds the lock taken waits
in its busy handler, which *sleeps* (1, 2, 5 … then 100 ms at a time) and tries again. Under
load a process that writes in a loop (a delivery engine claiming and recording) takes the
lock again the instant it lets go, while a brand's request sleeps through the gaps: on
this machine its p99 reached 1.5 s beside a catalog fan-out (docs/performance.md).

So every write transaction (``BEGIN IMMEDIATE``) first takes a lock that wakes its waiter
the moment it is free: a ``threading.Lock`` among the threads of a process, then
``flock`` on a file beside the database (``<file>-writer``) among processes. The kernel
drops a dead process's ``flock``, as it drops SQLite's own locks, so a killed writer never
leaves it held. SQLite's lock stays the real one (anything that writes without this layer
still waits in the busy handler as before); this one only makes the queue in front of it
wake at once.

A thread waits at most ``timeout`` seconds for its process's turn and then fails with
"database is locked", as SQLite's busy timeout would; the one thread per process that waits
on ``flock`` waits until the holder's transaction ends.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from typing import Any

_locks: dict[tuple[int, str], WriteLock] = {}
_registry = threading.Lock()


class WriteLock:
    """One writer at a time for one database file, across threads and processes."""

    def __init__(self, path: str) -> None:
        self.path = path + "-writer"
        # read-only is enough for flock, so any user who may open the database may queue
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
        self._local = threading.Lock()

    def acquire(self, timeout: float) -> None:
        if not self._local.acquire(timeout=timeout):
            raise sqlite3.OperationalError(
                f"database is locked (no turn to write in {timeout:g} s)")
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._local.release()
            raise

    def release(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._local.release()


def for_file(path: str) -> WriteLock:
    """This process's lock for the database at ``path`` (one per file and process: a
    forked child opens its own, since a ``flock`` is shared by inherited descriptors)."""
    key = (os.getpid(), os.path.realpath(path))
    with _registry:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = WriteLock(key[1])
        return lock


class Connection(sqlite3.Connection):
    """A pysqlite connection that lets go of its :class:`WriteLock` when its transaction
    ends: on commit, on rollback and on close, whatever they raise."""

    write_lock: WriteLock | None = None
    _holding = False

    def take_turn(self, timeout: float) -> None:
        """Wait for this connection's turn to write (call before ``BEGIN IMMEDIATE``; the
        turn ends with the transaction, or with :meth:`let_go` if the BEGIN fails)."""
        if self.write_lock is not None and not self._holding:
            self.write_lock.acquire(timeout)
            self._holding = True

    def let_go(self) -> None:
        if self._holding and self.write_lock is not None:
            self._holding = False
            self.write_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            if not self.in_transaction:
                self.let_go()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.let_go()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.let_go()

    def __del__(self) -> None:  # dropped without a close: its turn must not outlive it
        self.let_go()


def attach(dbapi_connection: Any, path: str) -> None:
    """Give a new connection (made with ``factory=Connection``) its file's lock."""
    if isinstance(dbapi_connection, Connection):
        dbapi_connection.write_lock = for_file(path)
