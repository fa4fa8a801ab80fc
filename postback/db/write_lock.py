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

A write waits at most ``timeout`` seconds for its turn, in its process and then among
processes, and then fails with "database is locked", as SQLite's busy timeout would.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from typing import Any

log = logging.getLogger("postback.db")
_locks: dict[tuple[int, str], WriteLock | None] = {}
_registry = threading.Lock()


class WriteLock:
    """One writer at a time for one database file, across threads and processes.

    The threads of a process take turns on a ``threading.Lock``; the one whose turn it is
    asks this process's waiter thread for the ``flock``, and waits at most until its
    deadline. A ``flock`` that comes after its asker gave up is let go at once, so a holder
    that never ends (a process stopped with Ctrl-Z) costs a write its timeout, as SQLite's
    busy handler would, never a thread hung for ever."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._local = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._asked = False  # the waiter is (or is about to be) blocked in flock
        self._asking = False  # a thread waits for the flock now
        self._granted = False
        self._waiter: threading.Thread | None = None

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        if not self._local.acquire(timeout=timeout):
            raise sqlite3.OperationalError(
                f"database is locked (no turn to write in {timeout:g} s)")
        try:
            if not self._take_file(deadline):
                raise sqlite3.OperationalError(
                    f"database is locked (another process held it for {timeout:g} s)")
        except BaseException:
            self._local.release()
            raise

    def _take_file(self, deadline: float) -> bool:
        with self._cond:
            if not self._asked:  # nothing pending: try at once, without the waiter
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    pass
                self._asked = True
                if self._waiter is None:
                    self._waiter = threading.Thread(target=self._wait_loop, daemon=True,
                                                    name="postback-sqlite-writer")
                    self._waiter.start()
                self._cond.notify_all()
            self._asking = True
            try:
                while not self._granted:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                self._granted = False
                return True
            finally:
                self._asking = False

    def _wait_loop(self) -> None:
        while True:
            with self._cond:
                while not self._asked:
                    self._cond.wait()
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # blocks until the holder lets go
            with self._cond:
                self._asked = False
                if self._asking:
                    self._granted = True
                    self._cond.notify_all()
                else:  # its asker gave up meanwhile
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def release(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._local.release()


def for_file(path: str) -> WriteLock | None:
    """This process's lock for the database at ``path`` (one per file and process: a
    forked child opens its own, since a ``flock`` is shared by inherited descriptors), or
    None where its file cannot be opened (then writers wait in SQLite's busy handler, as
    they would without it)."""
    key = (os.getpid(), os.path.realpath(path))
    with _registry:
        if key not in _locks:
            _locks[key] = _open(key[1])
        return _locks[key]


def _open(database: str) -> WriteLock | None:
    """The lock file, made as SQLite makes ``-wal`` and ``-shm``: the database's mode, and,
    for root, its owner (so a migration run as root leaves nothing the service cannot
    open). Read-only is enough for ``flock``."""
    path = database + "-writer"
    try:
        st: os.stat_result | None = os.stat(database)
    except OSError:
        st = None
    mode = st.st_mode & 0o666 if st is not None else 0o644
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, mode)
    except OSError as exc:
        log.warning("SQLite's writers will wait in its busy handler, not in turn: %s "
                    "cannot be opened (%s)", path, exc.strerror or exc)
        return None
    if st is not None:
        with contextlib.suppress(OSError):  # not its owner: leave it as it is
            os.fchmod(fd, mode)
            if os.geteuid() == 0:
                os.fchown(fd, st.st_uid, st.st_gid)
    return WriteLock(fd)


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


def attach(path: str, dbapi_connection: Any, _record: Any) -> None:
    """Give a new connection (made with ``factory=Connection``) its file's lock: a
    ``connect`` listener, with ``path`` bound."""
    if isinstance(dbapi_connection, Connection):
        dbapi_connection.write_lock = for_file(path)
