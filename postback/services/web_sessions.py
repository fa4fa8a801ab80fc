"""Browser sessions for the web app: signing in with an API key opens one.

The cookie carries a random token; only its SHA-256 is stored (as for API keys). Each
session has its own CSRF token for its forms. A session opened with an API key ends the
moment that key is revoked, an operator's the moment its token is no longer accepted
(another ``POSTBACK_ADMIN_TOKEN``); every session ends after its lifetime.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select

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
