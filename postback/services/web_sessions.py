"""Browser sessions for the web app: signing in with an API key opens one.

The cookie carries a random token; only its SHA-256 is stored (as for API keys). Each
session has its own CSRF token for its forms. A session opened with an API key ends the
moment that key is revoked, an operator's the moment its token is no longer accepted
(another ``POSTBACK_ADMIN_TOKEN``); every session ends after its lifetime.
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from postback.db.schema import api_key, operator_credential, web_session
from postback.services.accounts import Principal, Role, hash_key

LIFETIME = timedelta(hours=12)


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf_token: str


def open_session(conn: Connection, who: Principal, credential: str,
                 now: datetime) -> tuple[str, Session]:
    """A new session for ``who``, who signed in with ``credential``: (the cookie's token,
    the session)."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    conn.execute(delete(web_session).where(web_session.c.expires_at < now))
    conn.execute(insert(web_session).values(
        token_hash=hash_key(token), role=who.role, account_id=who.account_id,
        api_key_id=who.key_id, csrf_token=csrf, created_at=now, expires_at=now + LIFETIME,
        operator_token_hash=hash_key(credential) if who.role == "operator" else None))
    return token, Session(who, csrf)


def _operator_token_accepted(conn: Connection, digest: str | None,
                             configured_admin: str | None) -> bool:
    if digest is None:
        return False
    if configured_admin is not None:
        return hmac.compare_digest(digest, hash_key(configured_admin))
    return conn.execute(select(operator_credential.c.id).where(
        operator_credential.c.token_hash == digest)).first() is not None


def find_session(conn: Connection, token: str, now: datetime,
                 configured_admin: str | None) -> Session | None:
    """The live session behind a cookie's token, or None (unknown, expired, key revoked,
    operator token replaced)."""
    row = conn.execute(
        select(web_session.c.role, web_session.c.account_id, web_session.c.api_key_id,
               web_session.c.csrf_token, web_session.c.operator_token_hash,
               api_key.c.revoked_at)
        .outerjoin(api_key, api_key.c.id == web_session.c.api_key_id)
        .where(web_session.c.token_hash == hash_key(token), web_session.c.expires_at > now)
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    if row.role == "operator" and not _operator_token_accepted(
            conn, row.operator_token_hash, configured_admin):
        return None
    role: Role = row.role
    return Session(Principal(role, row.account_id, row.api_key_id), row.csrf_token)


def close_session(conn: Connection, token: str) -> None:
    conn.execute(delete(web_session).where(web_session.c.token_hash == hash_key(token)))


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


# -- flash: what a form's POST leaves for the one page its redirect leads to ----------------

#: at most this many waiting entries per session (the newest kept), each for this long
FLASH_ENTRIES = 8
FLASH_LIFETIME = timedelta(minutes=10)


def _flash_row(conn: Connection, token: str, lock: bool = False) -> tuple[int, list[Any]] | None:
    query = select(web_session.c.id, web_session.c.flash).where(
        web_session.c.token_hash == hash_key(token))
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        return None
    try:
        entries = json.loads(row.flash) if row.flash else []
    except ValueError:
        entries = []
    return row.id, entries if isinstance(entries, list) else []


def _fresh(entries: list[Any], now: datetime) -> list[dict[str, Any]]:
    def made(entry: dict[str, Any]) -> datetime | None:
        try:
            return datetime.fromisoformat(str(entry.get("at")))
        except ValueError:
            return None

    since = now - FLASH_LIFETIME
    return [e for e in entries
            if isinstance(e, dict) and (at := made(e)) is not None and at >= since]


def add_flash(conn: Connection, token: str, path: str, data: dict[str, Any],
              now: datetime) -> None:
    """Keep ``data`` (JSON) for the next page at ``path`` this session opens: a Post/
    Redirect/Get's result, taken by :func:`take_flash` and so shown once. Call inside a
    write transaction."""
    found = _flash_row(conn, token, lock=True)
    if found is None:
        return
    row_id, entries = found
    kept = _fresh(entries, now)[-(FLASH_ENTRIES - 1):]
    kept.append({"path": path, "at": utc_iso(now), "data": data})
    conn.execute(update(web_session).where(web_session.c.id == row_id)
                 .values(flash=json.dumps(kept)))


def flash_waiting(conn: Connection, token: str, path: str) -> bool:
    """Whether something waits for the page at ``path`` (a read: the page takes it only
    then, so other pages write nothing)."""
    found = _flash_row(conn, token)
    return found is not None and any(
        isinstance(e, dict) and e.get("path") == path for e in found[1])


def take_flash(conn: Connection, token: str, path: str, now: datetime) -> list[dict[str, Any]]:
    """What waits for the page at ``path``, oldest first, removed as it is read: a reload
    finds nothing. Call inside a write transaction."""
    found = _flash_row(conn, token, lock=True)
    if found is None:
        return []
    row_id, entries = found
    fresh = _fresh(entries, now)
    taken = [e for e in fresh if e.get("path") == path]
    if taken or len(fresh) != len(entries):
        rest = [e for e in fresh if e.get("path") != path]
        conn.execute(update(web_session).where(web_session.c.id == row_id)
                     .values(flash=json.dumps(rest) if rest else None))
    return [dict(e.get("data") or {}) for e in taken]
