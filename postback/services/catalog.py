"""Product catalogs: brands upsert and remove items; every real change (not a re-upload of
the same data) notifies the partners contracted on the program."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from postback.core.lifecycle import RuleViolation
from postback.core.payload import MONEY_FIELDS, changed_fields
from postback.core.values import format_date, format_money
from postback.db.schema import catalog_item, change_log, contract, program
from postback.models import CatalogBulkIn, CatalogItemIn
from postback.services.change_log import START, Cursor, encode_cursor, visible_bound
from postback.services.errors import Invalid, NotFound
from postback.services.integrity import unique_violation
from postback.services.outbox import CatalogChange, enqueue_catalog_events


def _own_program(conn: Connection, brand_id: int, program_id: int) -> None:
    if conn.execute(select(program.c.id).where(program.c.id == program_id,
                                               program.c.brand_id == brand_id)).first() is None:
        raise NotFound("program")


def _data(body: CatalogItemIn) -> dict[str, Any]:
    return body.model_dump(exclude_none=True, exclude={"item_id"})


def item_out(item_id: str, data: dict[str, Any], updated_at: datetime | None = None
             ) -> dict[str, Any]:
    out: dict[str, Any] = {"item_id": item_id}
    out.update({k: format_money(v) if k in MONEY_FIELDS else v for k, v in data.items()})
    if updated_at is not None:
        out["updated_at"] = format_date(updated_at)
    return out


def _check_item_id(item_id: str) -> None:
    if not item_id or len(item_id) > 255:
        raise Invalid("item_id", "must be 1 to 255 characters")


#: the namespace of the per-program advisory lock of catalog writes ("cat1")
_CATALOG_LOCK = 0x63617431


def _one_writer(conn: Connection, program_id: int) -> None:
    """PostgreSQL: one catalog write per program at a time, taken before the transaction
    writes anything (an advisory lock gives it no transaction id). So the writes of one
    program's catalog get their transaction ids in the order they commit, and the changes
    feed (ordered by transaction id) lists them in commit order; and each works out its
    difference from the catalog as the one before it left it. SQLite's writers never
    overlap."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:space, :program)"),
                     {"space": _CATALOG_LOCK, "program": program_id})


def put_item(conn: Connection, brand_id: int, program_id: int, item_id: str,
             body: CatalogItemIn, now: datetime) -> dict[str, Any]:
    _own_program(conn, brand_id, program_id)
    _one_writer(conn, program_id)
    _check_item_id(item_id)
    result = _apply(conn, program_id, {item_id: _data(body)}, remove_missing=False, now=now)
    change = next((k for k in ("added", "updated") if result[k]), "unchanged")
    return {"item": item_out(item_id, _data(body)), "change": change.upper()}


def delete_item(conn: Connection, brand_id: int, program_id: int, item_id: str,
                now: datetime) -> None:
    _own_program(conn, brand_id, program_id)
    _one_writer(conn, program_id)
    row = conn.execute(select(catalog_item).where(
        catalog_item.c.program_id == program_id, catalog_item.c.item_id == item_id)).first()
    if row is None:
        raise NotFound("catalog item")
    conn.execute(delete(catalog_item).where(catalog_item.c.id == row.id))
    enqueue_catalog_events(conn, program_id, [CatalogChange(
        item_id, row.data, "REMOVED", changed_fields(None, row.data))], now)


def bulk_upsert(conn: Connection, brand_id: int, program_id: int, body: CatalogBulkIn,
                now: datetime) -> dict[str, int]:
    """Upsert up to 10,000 items, computing the diff here; with ``remove_missing`` the
    catalog becomes exactly this list. All or nothing."""
    _own_program(conn, brand_id, program_id)
    _one_writer(conn, program_id)
    items: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(body.items):
        if item.item_id in items:
            raise Invalid(f"items[{i}].item_id", f"item {item.item_id!r} appears twice")
        items[item.item_id] = _data(item)
    return _apply(conn, program_id, items, body.remove_missing, now)


_update = (update(catalog_item).where(catalog_item.c.id == bindparam("b_id"))
           .values(data=bindparam("b_data"), updated_at=bindparam("b_now")))


#: how often a change is worked out again when another request adds the same item meanwhile
ATTEMPTS = 3


def _apply(conn: Connection, program_id: int, items: dict[str, dict[str, Any]],
           remove_missing: bool, now: datetime) -> dict[str, int]:
    """Write the difference between the catalog and ``items``. An item another request adds
    at the same time (PostgreSQL: this insert waits for it, then fails) is read again and
    the difference worked out anew, as if this request came after it."""
    for attempt in range(ATTEMPTS):
        try:
            with conn.begin_nested():
                return _apply_once(conn, program_id, items, remove_missing, now)
        except IntegrityError as exc:
            if not unique_violation(exc, catalog_item, "program_id", "item_id"):
                raise
            if attempt == ATTEMPTS - 1:
                raise RuleViolation("conflict", "item_id: other requests keep adding these "
                                    "items at the same time; send this one again") from None
    raise AssertionError("unreachable")


def _apply_once(conn: Connection, program_id: int, items: dict[str, dict[str, Any]],
                remove_missing: bool, now: datetime) -> dict[str, int]:
    existing = {r.item_id: r for r in conn.execute(select(
        catalog_item.c.id, catalog_item.c.item_id, catalog_item.c.data).where(
        catalog_item.c.program_id == program_id))}
    changes: list[CatalogChange] = []
    added: list[dict[str, Any]] = []
    updated: list[dict[str, Any]] = []
    for item_id, data in items.items():
        old = existing.get(item_id)
        if old is None:
            added.append({"program_id": program_id, "item_id": item_id, "data": data,
                          "created_at": now, "updated_at": now})
            changes.append(CatalogChange(item_id, data, "ADDED", changed_fields(None, data)))
        elif old.data != data:
            updated.append({"b_id": old.id, "b_data": data, "b_now": now})
            changes.append(CatalogChange(item_id, data, "UPDATED",
                                         changed_fields(old.data, data)))
    removed = [r for item_id, r in existing.items()
               if remove_missing and item_id not in items]
    for r in removed:
        changes.append(CatalogChange(r.item_id, r.data, "REMOVED", changed_fields(None, r.data)))
    if added:
        conn.execute(insert(catalog_item), added)
    if updated:
        conn.execute(_update, updated)
    if removed:
        conn.execute(delete(catalog_item).where(catalog_item.c.id.in_([r.id for r in removed])))
    enqueue_catalog_events(conn, program_id, changes, now)
    return {"added": len(added), "updated": len(updated), "removed": len(removed),
            "unchanged": len(items) - len(added) - len(updated)}


def readable_program(conn: Connection, role: str, account_id: int, program_id: int) -> None:
    """404 unless the caller may read this program's catalog: the brand that owns it, or a
    partner contracted on it; anyone else is told exactly what a missing program is."""
    if role == "brand":
        _own_program(conn, account_id, program_id)
        return
    if conn.execute(select(contract.c.id).where(
            contract.c.program_id == program_id,
            contract.c.partner_id == account_id).limit(1)).first() is None:
        raise NotFound("program")


#: an ``updated_since`` read's cursor: the last item's ``updated_at`` (microseconds since
#: 1970, UTC) and row id
_UPDATED_CURSOR = re.compile(r"u([0-9]{1,17})\.([0-9]{1,10})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BAD_ITEMS_CURSOR = ("is not a cursor this read gave out: send back next_cursor exactly as "
                    "you received it, with the same updated_since, or leave after out to "
                    "start from the first item")


def _updated_cursor(raw: str) -> tuple[datetime, int]:
    found = _UPDATED_CURSOR.fullmatch(raw)
    if found is None or int(found[2]) > 2**31 - 1:
        raise Invalid("after", BAD_ITEMS_CURSOR)
    try:
        at = _EPOCH + timedelta(microseconds=int(found[1]))
    except OverflowError:
        raise Invalid("after", BAD_ITEMS_CURSOR) from None
    return at, int(found[2])


def read_items(conn: Connection, role: str, account_id: int, program_id: int, *,
               after: str | None, updated_since: datetime | None, limit: int
               ) -> dict[str, Any]:
    """One page of a program's catalog for its brand or a contracted partner.

    Without ``updated_since``: every item by ``item_id`` (``next_cursor`` is the page's last
    ``item_id``). With it: the items updated at or after it, oldest change first, by
    ``(updated_at, id)``. ``changes_cursor`` is where the catalog's changes feed reads on
    from: every change committed after this read comes after it. It is found before the
    items are read (each statement sees a newer snapshot at READ COMMITTED): a change
    committed in between is both in the page and after the cursor (it comes again, which
    is harmless), never in neither."""
    readable_program(conn, role, account_id, program_id)
    changes_cursor = head_cursor(conn, program_id)
    query = select(catalog_item).where(catalog_item.c.program_id == program_id)
    if updated_since is None:
        query = query.order_by(catalog_item.c.item_id)
        if after:
            query = query.where(catalog_item.c.item_id > after)
    else:
        query = query.where(catalog_item.c.updated_at >= updated_since).order_by(
            catalog_item.c.updated_at, catalog_item.c.id)
        if after:
            at, row_id = _updated_cursor(after)
            query = query.where(or_(catalog_item.c.updated_at > at,
                                    and_(catalog_item.c.updated_at == at,
                                         catalog_item.c.id > row_id)))
    rows = conn.execute(query.limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = (last.item_id if updated_since is None else
                       f"u{(last.updated_at - _EPOCH) // timedelta(microseconds=1)}.{last.id}")
    return {"items": [item_out(r.item_id, r.data, r.updated_at) for r in rows],
            "next_cursor": next_cursor, "changes_cursor": changes_cursor}


def head_cursor(conn: Connection, program_id: int) -> str:
    """The cursor of the latest catalog change of a program a changes read would return now
    (the start when there is none): reading the changes feed on from it misses no change
    committed after this transaction's reads (one it already saw may come again)."""
    query = select(change_log.c.txid, change_log.c.id).where(
        change_log.c.kind == "catalog", change_log.c.program_id == program_id)
    bound = visible_bound(conn)
    if bound is not None:
        query = query.where(change_log.c.txid < bound)
    row = conn.execute(query.order_by(change_log.c.txid.desc(), change_log.c.id.desc())
                       .limit(1)).first()
    return encode_cursor(Cursor(row.txid, row.id) if row else START)


def list_items(conn: Connection, brand_id: int, program_id: int, cursor: str | None,
               limit: int) -> dict[str, Any]:
    """A brand's page of its program's items by ``item_id`` (``read_items``)."""
    return read_items(conn, "brand", brand_id, program_id, after=cursor, updated_since=None,
                      limit=limit)


def get_item(conn: Connection, account_id: int, program_id: int, item_id: str,
             role: str = "brand") -> dict[str, Any]:
    """One item, for the program's brand or (``role="partner"``) a partner contracted on
    it."""
    readable_program(conn, role, account_id, program_id)
    row = conn.execute(select(catalog_item).where(
        catalog_item.c.program_id == program_id, catalog_item.c.item_id == item_id)).first()
    if row is None:
        raise NotFound("catalog item")
    return item_out(row.item_id, row.data, row.updated_at)
