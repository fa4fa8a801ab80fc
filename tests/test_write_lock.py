"""SQLite's writers queue on a lock that wakes the next one the moment it is free
(``db/write_lock.py``): what a user would notice is that it never outlives its
transaction, whatever ends it (a commit, an error, a killed process), that readers never
wait for it, and that a write kept waiting fails with SQLite's own words."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, exc, text

from postback.db import engine as db_engine
from postback.db.engine import make_engine, reader

BOUND = 30.0  # seconds: a bound on a broken run, not a timing claim


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setattr(db_engine, "BUSY_SECONDS", 0.5)  # a leaked turn fails fast
    engine = make_engine(f"sqlite:///{tmp_path / 'lock.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    yield engine
    engine.dispose()


def _count(db: Engine) -> int:
    with reader(db).connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM t")).scalar_one())


class _Holder(threading.Thread):
    """A write transaction held open on another thread until ``done`` is set."""

    def __init__(self, db: Engine) -> None:
        super().__init__(daemon=True)
        self.db, self.holding, self.done = db, threading.Event(), threading.Event()

    def run(self) -> None:
        with self.db.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
            self.holding.set()
            self.done.wait(BOUND)

    def __enter__(self) -> _Holder:
        self.start()
        assert self.holding.wait(BOUND)
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.join(BOUND)


def test_a_write_kept_waiting_fails_as_database_is_locked_and_reads_go_on(
        db: Engine) -> None:
    with _Holder(db):
        assert _count(db) == 0  # a reader sees the last commit, without waiting
        with pytest.raises(exc.OperationalError, match="database is locked"), db.begin() as c:
            c.execute(text("INSERT INTO t VALUES (2)"))
    with db.begin() as conn:  # the holder's commit let go of the lock
        conn.execute(text("INSERT INTO t VALUES (3)"))
    assert _count(db) == 2


def test_a_transaction_that_fails_lets_go_of_the_lock(db: Engine) -> None:
    with pytest.raises(ZeroDivisionError), db.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        1 / 0  # noqa: B018
    with pytest.raises(exc.OperationalError), db.begin() as conn:
        conn.execute(text("INSERT INTO nowhere VALUES (1)"))

    def write() -> None:  # from another thread: the turn is not this thread's to keep
        with db.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(BOUND)
    assert _count(db) == 1


_HOLD = """
import sys, time
from sqlalchemy import text
from postback.db.engine import make_engine
db = make_engine(sys.argv[1])
with db.begin() as conn:
    conn.execute(text("INSERT INTO t VALUES (1)"))
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_writer_killed_mid_transaction_leaves_neither_its_write_nor_the_lock(
        db: Engine) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(db.url)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(BOUND)
    finally:
        proc.kill()
    with db.begin() as conn:  # within BUSY_SECONDS (0.5 s), or "database is locked"
        conn.execute(text("INSERT INTO t VALUES (2)"))
    assert _count(db) == 1


def test_a_writer_that_never_lets_go_costs_a_write_its_timeout_not_a_hung_thread(
        db: Engine) -> None:
    """Another process holding its transaction open (stopped with Ctrl-Z, say): a write
    here fails after its timeout, as with SQLite's own; once that process is gone the
    next write goes, though this process's wait for the file lock had been given up."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(db.url)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        for _ in range(2):  # the second asks while the first's wait is still pending
            with pytest.raises(exc.OperationalError, match="database is locked"), \
                    db.begin() as conn:
                conn.execute(text("INSERT INTO t VALUES (2)"))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(BOUND)
    finally:
        proc.kill()
    with db.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (3)"))
    assert _count(db) == 1


def test_the_lock_file_is_made_with_the_databases_mode(tmp_path: Path) -> None:
    """As SQLite makes its -wal and -shm files: a database its group may write keeps a
    lock file its group may open."""
    path = tmp_path / "shared.db"
    sqlite3.connect(path).close()
    path.chmod(0o660)
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
    finally:
        engine.dispose()
    assert stat.S_IMODE((tmp_path / "shared.db-writer").stat().st_mode) == 0o660
