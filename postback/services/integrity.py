"""Which integrity rule a write broke: the few the services expect (a key written by a
request running at the same time) are told apart from every other, which stays a bug
(the API answers 500 for it, so tests see it)."""

from __future__ import annotations

import re

from sqlalchemy import Table
from sqlalchemy.exc import IntegrityError

_KEY = re.compile(r"Key \(([^)]*)\)=")


def _pg(exc: IntegrityError, sqlstate: str, table: Table, columns: tuple[str, ...]) -> bool:
    diag = getattr(exc.orig, "diag", None)
    if diag is None or getattr(exc.orig, "sqlstate", None) != sqlstate:
        return False
    found = _KEY.match(diag.message_detail or "")
    return (diag.table_name == table.name and found is not None
            and tuple(c.strip() for c in found.group(1).split(",")) == columns)


def unique_violation(exc: IntegrityError, table: Table, *columns: str) -> bool:
    """Whether ``exc`` is a duplicate of ``table``'s unique key (or primary key) over
    exactly ``columns``: psycopg names the table and the key, SQLite the columns."""
    if getattr(exc.orig, "diag", None) is not None:
        return _pg(exc, "23505", table, columns)
    return str(exc.orig) == "UNIQUE constraint failed: " + ", ".join(
        f"{table.name}.{c}" for c in columns)
