"""The updates feeds: every change of a caller's actions, inquiries or a program's catalog,
in commit order, read from the change log (``services/change_log.py``) a page at a time.

A page's ``next_cursor`` is always where to read on from: the last change's cursor, or the
cursor sent (the start, when none was) when nothing new is there yet. A client loop is
``after = page["next_cursor"]``, forever."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import Connection, func, select

from postback.db.schema import change_log
from postback.services.catalog import readable_program
from postback.services.change_log import (
    START,
    Cursor,
    decode_cursor,
    encode_cursor,
    read_changes,
    visible_bound,
)
from postback.services.errors import Invalid

Kind = Literal["action", "inquiry", "catalog"]
Role = Literal["brand", "partner"]

#: what a cursor that is not one of ours is told
BAD_CURSOR = ("is not a cursor this feed gave out: send back a next_cursor (or an item's "
              "cursor) exactly as you received it, or leave after out to start from the "
              "first change")


def parse_cursor(raw: str | None, field: str = "after") -> Cursor | None:
    """The cursor a client sent (None: from the start); a refusal naming ``field`` when it
    is not one."""
    if raw is None or raw == "":
        return None
    try:
        return decode_cursor(raw)
    except ValueError:
        raise Invalid(field, BAD_CURSOR) from None


#: the name of a change's subject in each feed
SUBJECT = {"action": "action_id", "inquiry": "inquiry_id", "catalog": "item_id"}


def _out(kind: Kind, row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"cursor": encode_cursor(Cursor(row.txid, row.id)),
                           "change_id": row.change_id}
    if kind != "catalog":
        out["sequence"] = row.sequence
    out["trigger"] = row.trigger
    out[SUBJECT[kind]] = row.subject if kind == "catalog" else int(row.subject)
    out["values"] = row.values
    return out


def read_updates(conn: Connection, kind: Kind, role: Role, account_id: int,
                 after: Cursor | None, limit: int,
                 program_id: int | None = None) -> dict[str, Any]:
    """One page of a feed: the caller's own changes (a partner's actions or inquiries, a
    brand's programs'; a catalog's for anyone ``readable_program`` lets in)."""
    if kind == "catalog":
        assert program_id is not None
        readable_program(conn, role, account_id, program_id)
        scope: dict[str, int] = {"program_id": program_id}
    else:
        scope = {"brand_id" if role == "brand" else "partner_id": account_id}
    rows, cursor = read_changes(conn, kind, after=after or START, limit=limit, **scope)
    return {"items": [_out(kind, r) for r in rows], "next_cursor": encode_cursor(cursor)}


def signature(conn: Connection) -> tuple[int, ...]:
    """What changes whenever a feed read could return something it did not before, and
    (mostly) only then: a long poll reads again when this changes. SQLite: the newest
    change's id. PostgreSQL: the newest transaction id among the changes a read may return
    now (below the bound): a change becoming readable always raises it, since its
    transaction id is at or above the bound every change readable before was below; other
    transactions ending (heartbeats, deliveries) move the bound but not this."""
    bound = visible_bound(conn)
    if bound is None:
        return (int(conn.execute(select(func.coalesce(func.max(change_log.c.id), 0)))
                    .scalar_one()),)
    return (int(conn.execute(select(func.coalesce(func.max(change_log.c.txid), -1))
                             .where(change_log.c.txid < bound)).scalar_one()),)
