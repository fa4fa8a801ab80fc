"""Database engines: SQLite (WAL, the embedded default) or PostgreSQL via psycopg 3."""

from __future__ import annotations

import functools
import sqlite3
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url

from postback.db import write_lock

#: how long a write waits for its turn (SQLite's busy timeout, and the writer queue's)
BUSY_SECONDS = 30.0


def normalize_url(url: str) -> str:
    """Accept the plain ``postgresql://`` form users know and pick the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, pool_size: int = 10) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        if url.endswith(":memory:") or url == "sqlite://":
            raise ValueError("use a SQLite file, not :memory: (workers need to share it)")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_SECONDS,
                          "factory": write_lock.Connection},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        path = make_url(url).database or ""
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "connect", functools.partial(write_lock.attach, path))
        # pysqlite's own transaction handling defers BEGIN; take the write lock up front
        # so read-then-write transactions cannot deadlock against each other.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def use_wal(cursor: Any, timeout: float = 30.0) -> None:
    """Put the database in WAL mode. On a new file two processes starting at once both
    convert it, and SQLite answers the second "database is locked" at once, without its
    busy timeout: try again until the first is done."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
    cursor = dbapi_connection.cursor()
    use_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    if conn.get_execution_options().get("postback_readonly", False):
        conn.exec_driver_sql("BEGIN")
        return
    raw: write_lock.Connection = conn.connection.dbapi_connection  # make_engine's factory
    try:  # the writers' queue first (see write_lock): woken the moment the lock is free
        raw.take_turn(BUSY_SECONDS)
    except sqlite3.OperationalError as error:
        raise exc.OperationalError("BEGIN IMMEDIATE", None, error) from error
    try:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    except BaseException:
        raw.let_go()
        raise


def reader(engine: Engine) -> Engine:
    """The same engine for read-only transactions (no write lock taken on SQLite)."""
    return engine.execution_options(postback_readonly=True)
