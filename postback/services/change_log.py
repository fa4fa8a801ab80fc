"""The change log: every ledger change once, with its token values, in transaction order.

The outbox records each change here in the transaction that makes it (``record_changes``);
the updates feeds and the data feeds read it (``read_changes``) with a cursor that never
skips or repeats a change, whatever commits concurrently.

The cursor is ``(txid, id)``. SQLite's writers never overlap, so ``id`` order is commit
order and ``txid`` stays 0. On PostgreSQL the order is that of the writing transactions'
ids (given at their first write): commit order for writes that wait for each other before
writing (one program's catalog: ``services/catalog.py``), while two overlapping changes of
one action may come the other way round, which ``Sequence`` orders. A read returns only
rows whose ``txid`` is below the lowest transaction its snapshot sees open: every
transaction that could still commit a row ordered before the cursor has ended, so the
rows a reader has passed are final. A long-open writer holds the feed back (never
past it) until it commits or rolls back — only a writer in this database: the snapshot's
open transactions that ``pg_stat_activity`` shows in another database of the server are
left out of the bound (they cannot write here), so another application's long transaction
on the same server does not stall the feeds. Where the role may not see other sessions'
transaction ids (no ``pg_read_all_stats``), every open one counts, which is only slower.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, and_, insert, literal_column, or_, select, text, tuple_

from postback.db.schema import change_log


class Cursor(NamedTuple):
    txid: int
    id: int


#: the position before every change
START = Cursor(0, 0)
_CURSOR = re.compile(r"([0-9]{1,19})\.([0-9]{1,19})")


def encode_cursor(cursor: Cursor) -> str:
    return f"{cursor.txid}.{cursor.id}"


def decode_cursor(raw: str) -> Cursor:
    """The cursor a client sent back; ValueError when it is not one we gave out."""
    found = _CURSOR.fullmatch(raw.strip())
    if found is None:
        raise ValueError("not a cursor: pass back a next_cursor exactly as you received it")
    txid, row_id = int(found[1]), int(found[2])
    if txid >= 2**63 or row_id >= 2**63:
        raise ValueError("not a cursor: pass back a next_cursor exactly as you received it")
    return Cursor(txid, row_id)


def _txid(conn: Connection) -> Any:
    """The writing transaction's id on PostgreSQL (assigned now if it has none), else 0."""
    if conn.dialect.name == "postgresql":
        return literal_column("pg_current_xact_id()::text::bigint")
    return 0


#: Below it every transaction of this database that could write a change has ended: the
#: lowest transaction the snapshot sees open, leaving out those of other databases, or the
#: snapshot's xmax when there is none. (A separate statement before the read is safe: the
#: read's snapshot is later, and sees every transaction this one saw ended.)
_BOUND = text("""
WITH s AS (SELECT pg_current_snapshot() AS snap)
SELECT coalesce(
  (SELECT min(x::text::bigint) FROM s, pg_snapshot_xip(s.snap) AS x
    WHERE x::text::bigint % 4294967296 NOT IN (
      SELECT backend_xid::text::bigint FROM pg_stat_activity
       WHERE datname IS DISTINCT FROM current_database() AND backend_xid IS NOT NULL)),
  (SELECT pg_snapshot_xmax(snap)::text::bigint FROM s))
""")


def visible_bound(conn: Connection) -> int | None:
    """PostgreSQL: the ``txid`` below which the change log is final (see the module's
    docstring); None on SQLite, where every committed row is."""
    if conn.dialect.name != "postgresql":
        return None
    return int(conn.execute(_BOUND).scalar_one())


def record_changes(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert change rows (``kind``, ``change_id``, ``brand_id``, ``program_id``,
    ``partner_id``, ``subject``, ``trigger``, ``sequence``, ``values``, ``created_at``)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        txid = conn.execute(select(_txid(conn))).scalar_one()
    else:
        txid = 0
    conn.execute(insert(change_log), [{**row, "txid": txid} for row in rows])


def read_changes(conn: Connection, kind: str, *, partner_id: int | None = None,
                 brand_id: int | None = None, program_id: int | None = None,
                 after: Cursor | None = None, limit: int = 100,
                 ) -> tuple[list[Any], Cursor]:
    """Up to ``limit`` changes of ``kind`` after ``after``, narrowed to one partner, brand
    and/or program, and the cursor to read on from (``after`` itself when none is new)."""
    after = after or START
    query = select(change_log).where(change_log.c.kind == kind)
    for column, value in ((change_log.c.partner_id, partner_id),
                          (change_log.c.brand_id, brand_id),
                          (change_log.c.program_id, program_id)):
        if value is not None:
            query = query.where(column == value)
    bound = visible_bound(conn)
    if bound is not None:
        query = query.where(
            tuple_(change_log.c.txid, change_log.c.id) > tuple_(after.txid, after.id),
            change_log.c.txid < bound)
    else:
        query = query.where(or_(change_log.c.txid > after.txid,
                                and_(change_log.c.txid == after.txid,
                                     change_log.c.id > after.id)))
    rows = list(conn.execute(query.order_by(change_log.c.txid, change_log.c.id).limit(limit)))
    return rows, (Cursor(rows[-1].txid, rows[-1].id) if rows else after)
