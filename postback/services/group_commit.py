"""Group commit: concurrent requests written in one transaction.

A brand that reports each sale as it happens sends many small ``POST /v1/actions`` at
once. Run one transaction each, they queue for SQLite's write lock (or PostgreSQL's WAL
flush) and, worse, for the interpreter: each request's dozen round trips hand the GIL
back and wait to take it again behind every other request thread. Here one thread takes
whatever has queued while the last transaction ran (up to ``MAX_GROUP``), writes it in one
transaction with one round trip per table, commits once and answers each request. A
request that arrives alone goes at once: nothing waits for company.

Each request's answer comes only after its commit. A request the work function refuses
(a rule, a missing program) gets its own error and the others commit. If the whole group
fails on something one request may have caused (a row the database refuses, a deadlock),
it is split in halves and each half tried again, so one that cannot be written fails
alone after a few transactions, not one per request. If it fails on something no request
caused (the database unreachable or locked, the pool exhausted), every request in it is
answered with that error at once: retried one by one on this single thread, each would
wait out the same timeout while every later request waited behind them.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy import exc as sa_exc

log = logging.getLogger(__name__)

MAX_GROUP = 500
IDLE_SECONDS = 5.0  # the thread ends after this long with nothing to do; the next starts it

T = TypeVar("T")
R = TypeVar("R")

Work = Callable[[Connection, Sequence[T]], Sequence["R | Exception"]]

# SQLSTATE classes of errors that are no one request's doing: the connection (08), the
# transaction's state (25, a read-only standby after a failover), the schema (42, a
# deploy under way), resources (53), a lock or object not available (55), an operator or
# timeout (57), the system (58, XX)
_EVERYONES = frozenset({"08", "25", "42", "53", "55", "57", "58", "XX"})


class BrokenContract(RuntimeError):
    """The work function returned a different number of outcomes than it was given items."""


def _splittable(exc: Exception) -> bool:
    """Whether a failed group is worth retrying in halves: the error may be one request's
    doing (a value the database refuses, a trigger, a bug a row's data sets off) or a race
    a smaller group may win (a deadlock, a serialization failure). Errors of the
    connection, the pool, the schema or a lock wait are the same for every request and
    fail the group whole."""
    if isinstance(exc, BrokenContract | sa_exc.TimeoutError | sa_exc.InterfaceError
                  | sa_exc.PendingRollbackError):
        return False
    if not isinstance(exc, sa_exc.DBAPIError):
        return True
    if exc.connection_invalidated:
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate[:2] not in _EVERYONES
    # SQLite says no SQLSTATE: a refused value or constraint is the request's, anything
    # else (locked, I/O, a damaged file) everyone's
    return isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError)


class GroupCommit(Generic[T, R]):
    """``submit(item)`` → a future of ``work``'s outcome for that item, after the commit.

    ``work(conn, items)`` returns one outcome per item, in order: a result, or the
    exception that item is answered with (it must write nothing for such an item).
    ``after_commit`` runs once per committed group that recorded something (the engines'
    wake-up)."""

    def __init__(self, engine: Engine, work: Work[T, R],
                 after_commit: Callable[[], None] = lambda: None,
                 max_group: int = MAX_GROUP, idle_seconds: float = IDLE_SECONDS) -> None:
        self._engine = engine
        self._work = work
        self._after_commit = after_commit
        self._max_group = max_group
        self._idle_seconds = idle_seconds
        self._queue: deque[tuple[T, Future[R]]] = deque()
        self._ready = threading.Condition()
        self._running = False
        self.groups = 0  # committed groups, for tests and benchmarks
        self.in_flight = 0  # requests in the transaction now running

    @property
    def queued(self) -> int:
        """Requests waiting for the next transaction."""
        return len(self._queue)

    def submit(self, item: T) -> Future[R]:
        future: Future[R] = Future()
        with self._ready:
            self._queue.append((item, future))
            if self._running:
                self._ready.notify()
            else:
                try:
                    self._start()
                except BaseException:  # no thread (none to be had): this request fails,
                    self._queue.pop()  # and the next submit tries to start one again
                    raise
        return future

    def _start(self) -> None:
        """The thread (with ``_ready`` held, so it waits for the flag to be set)."""
        threading.Thread(target=self._run, name="group-commit", daemon=True).start()
        self._running = True

    def _run(self) -> None:
        group: list[tuple[T, Future[R]]] = []
        try:
            while True:
                with self._ready:
                    if not self._queue:
                        self._ready.wait(self._idle_seconds)
                    if not self._queue:
                        self._running = False
                        return
                    group = [self._queue.popleft()
                             for _ in range(min(len(self._queue), self._max_group))]
                    self.in_flight = len(group)
                live = [(item, f) for item, f in group if f.set_running_or_notify_cancel()]
                if live:
                    self._commit(live)
                self.in_flight = 0
                group = []
        except BaseException as exc:  # never leave a request waiting on a dead thread
            log.exception("group commit: the thread failed")
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            with self._ready:
                self.in_flight = 0
                self._running = False
                if self._queue:
                    try:
                        self._start()
                    except BaseException as start_exc:
                        while self._queue:
                            waiting = self._queue.popleft()[1]
                            if waiting.set_running_or_notify_cancel():  # not given up
                                waiting.set_exception(start_exc)
            raise

    def _commit(self, group: list[tuple[T, Future[R]]]) -> None:
        try:
            with self._engine.begin() as conn:
                outcomes = self._work(conn, [item for item, _ in group])
                if len(outcomes) != len(group):
                    raise BrokenContract(f"group commit: {len(outcomes)} outcomes for "
                                         f"{len(group)} items")
        except Exception as exc:
            if len(group) == 1 or not _splittable(exc):
                if len(group) > 1:
                    log.warning("a group of %d requests failed to commit: %s", len(group),
                                exc)
                for _, future in group:
                    future.set_exception(exc)
                return
            log.warning("a group of %d requests failed to commit (%s); trying it again in "
                        "halves", len(group), exc)
            half = len(group) // 2
            self._commit(group[:half])
            self._commit(group[half:])
            return
        self.groups += 1
        if any(not isinstance(out, Exception) for out in outcomes):
            try:
                self._after_commit()
            except Exception:  # the commit stands; the engines also poll
                log.exception("group commit: the wake-up after a commit failed")
        for (_, future), out in zip(group, outcomes, strict=True):
            if isinstance(out, Exception):
                future.set_exception(out)
            else:
                future.set_result(out)
