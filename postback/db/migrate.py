"""Run Alembic migrations programmatically (``postback migrate``; ``serve`` runs them too).

An upgrade is all or nothing. ``migrations/env.py`` applies every pending migration, and
records the new version, inside one database transaction, on SQLite as on PostgreSQL: a
process stopped at any point (SIGKILL included) leaves the revision it started from, and the
next start runs the whole upgrade again. Two processes upgrading at once take turns: the
second waits for the first's transaction and then finds the schema at head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, pool, text

from postback.db.engine import normalize_url, use_wal

MIGRATIONS = Path(__file__).parent / "migrations"
#: how long a start waits for another process's upgrade (or a writer) before giving up
BUSY_TIMEOUT_SECONDS = 300
#: the PostgreSQL advisory lock that makes concurrent upgrades take turns ("postback")
PG_LOCK_KEY = 0x706F73746261636B


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    try:
        command.upgrade(alembic_config(url), revision)
    except Exception as exc:
        stop = _interruption(exc)
        if stop is None:
            raise
        raise stop from None


def _interruption(exc: BaseException) -> BaseException | None:
    """The SystemExit or KeyboardInterrupt that ``exc`` was raised while handling, if any.

    A stop during start-up (``cli._stop_before_start``) can land while Alembic rebuilds a
    table; its clean-up there (``except: drop the new table; raise``) then fails on the
    connection SQLAlchemy has given up, and would turn a clean stop into a crash. The
    transaction is rolled back either way; this keeps the stop a stop."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, SystemExit | KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__context__
    return None


def migration_engine(url: str) -> Engine:
    """The engine migrations run on: one connection, whose transactions include DDL."""
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        return create_engine(url, poolclass=pool.NullPool)
    engine = create_engine(url, poolclass=pool.NullPool,
                           connect_args={"timeout": BUSY_TIMEOUT_SECONDS})
    # pysqlite opens a transaction only before INSERT/UPDATE/DELETE, so CREATE, DROP and
    # ALTER would each commit on their own: take over BEGIN, as SQLAlchemy documents for
    # transactional DDL on pysqlite.
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # no implicit BEGIN/COMMIT: _sqlite_begin's
    cursor = dbapi_connection.cursor()  # (the busy timeout is the connect argument's)
    use_wal(cursor)  # persistent; the mode the service runs in
    # A batch migration rebuilds a table (copy, DROP, rename); with foreign keys enforced,
    # the DROP fails, or cascades into (or nulls) the rows that refer to the table. The
    # setting cannot change inside a transaction, so it is made here, before BEGIN.
    cursor.execute("PRAGMA foreign_keys=OFF")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # The write lock before the first read: a second upgrade waits here (busy timeout) and
    # reads the version the first one committed.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def lock_for_upgrade(connection: Connection) -> None:
    """Within the upgrade's transaction, before Alembic reads the version: wait for any other
    upgrade (SQLite's BEGIN IMMEDIATE has done this already)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
