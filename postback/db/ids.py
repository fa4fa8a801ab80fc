"""Allocate primary keys up front, so batch inserts need no RETURNING.

On PostgreSQL a multi-row ``INSERT … RETURNING`` is sent as one giant statement that the
driver must parse each time; a plain executemany is pipelined and parsed once. Taking the
ids first makes batch inserts several times cheaper.
"""

from __future__ import annotations

from sqlalchemy import Connection, Table, func, select, text


def allocate_ids(conn: Connection, table: Table, count: int) -> list[int]:
    if count == 0:
        return []
    if conn.dialect.name == "postgresql":
        return list(conn.execute(
            text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
                 "FROM generate_series(1, :n)"), {"table": table.name, "n": count}).scalars())
    # SQLite: writes run under BEGIN IMMEDIATE, so max(id) cannot move until we commit.
    start = int(conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one())
    return list(range(start + 1, start + count + 1))
