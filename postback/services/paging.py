"""Keyset pagination: newest first, ``next_cursor`` is the last id of the page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Select, Table


def page(conn: Connection, query: Select[Any], table: Table, cursor: int | None, limit: int,
         out: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Run ``query`` (already filtered) one page at a time: ``{items, next_cursor}``."""
    query = query.order_by(table.c.id.desc()).limit(limit + 1)
    if cursor is not None:
        query = query.where(table.c.id < cursor)
    rows = conn.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [out(r) for r in rows],
            "next_cursor": str(rows[-1].id) if more and rows else None}
