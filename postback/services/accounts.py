"""Operator, brands, partners and API keys.

Keys are random 32-byte secrets; only their SHA-256 is stored (a fast hash is right for
high-entropy keys), so a database leak reveals no usable key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import Connection, Engine, insert, select, update

from postback.core.values import format_date
from postback.db.schema import api_key, brand, operator_credential, partner
from postback.models import ApiKeyIn, BrandIn, PartnerIn
from postback.services.errors import NotFound

Role = Literal["operator", "brand", "partner"]


@dataclass(frozen=True)
class Principal:
    role: Role
    account_id: int | None = None
    key_id: int | None = None  # the API key it signed in with (None: the operator token)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def ensure_operator_token(engine: Engine, configured: str | None) -> str | None:
    """Store the operator token's hash; return a newly generated token to print once.

    With ``POSTBACK_ADMIN_TOKEN`` set that token is used and nothing is generated. Without
    it, the first start generates one; later starts keep the stored hash.
    """
    with engine.begin() as conn:
        existing = conn.execute(select(operator_credential.c.id)).first()
        if configured is not None:
            return None
        if existing is not None:
            return None
        token = new_key("pbo")
        conn.execute(insert(operator_credential).values(
            token_hash=hash_key(token), created_at=datetime.now(UTC)))
        return token


def authenticate(conn: Connection, token: str, configured_admin: str | None) -> Principal | None:
    digest = hash_key(token)
    if configured_admin is not None:
        if hmac.compare_digest(digest, hash_key(configured_admin)):
            return Principal("operator")
    else:
        for (stored,) in conn.execute(select(operator_credential.c.token_hash)):
            if hmac.compare_digest(digest, stored):
                return Principal("operator")
    row = conn.execute(
        select(api_key.c.id, api_key.c.account_type, api_key.c.account_id)
        .where(api_key.c.key_hash == digest, api_key.c.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    role: Role = "brand" if row.account_type == "brand" else "partner"
    return Principal(role, row.account_id, row.id)


def create_brand(conn: Connection, body: BrandIn) -> dict[str, object]:
    now = datetime.now(UTC)
    new_id = conn.execute(insert(brand).values(name=body.name, created_at=now)).inserted_primary_key
    assert new_id is not None
    return {"id": new_id[0], "name": body.name, "created_at": format_date(now)}


def create_partner(conn: Connection, body: PartnerIn) -> dict[str, object]:
    now = datetime.now(UTC)
    result = conn.execute(insert(partner).values(
        name=body.name, partner_type=body.partner_type.value, created_at=now))
    assert result.inserted_primary_key is not None
    return {"id": result.inserted_primary_key[0], "name": body.name,
            "partner_type": body.partner_type.value, "created_at": format_date(now)}


def issue_key(conn: Connection, body: ApiKeyIn) -> dict[str, object]:
    table = brand if body.account_type == "brand" else partner
    if conn.execute(select(table.c.id).where(table.c.id == body.account_id)).first() is None:
        raise NotFound(body.account_type)
    key = new_key("pbk")
    now = datetime.now(UTC)
    result = conn.execute(insert(api_key).values(
        account_type=body.account_type, account_id=body.account_id, key_hash=hash_key(key),
        prefix=key[:8], created_at=now))
    assert result.inserted_primary_key is not None
    return {"id": result.inserted_primary_key[0], "key": key, "account_type": body.account_type,
            "account_id": body.account_id, "created_at": format_date(now)}


def revoke_key(conn: Connection, key_id: int) -> None:
    """Revoke a key at once; revoking an already revoked key is a no-op."""
    if conn.execute(select(api_key.c.id).where(api_key.c.id == key_id)).first() is None:
        raise NotFound("api key")
    conn.execute(update(api_key).where(api_key.c.id == key_id, api_key.c.revoked_at.is_(None))
                 .values(revoked_at=datetime.now(UTC)))


def list_brands(conn: Connection) -> list[dict[str, object]]:
    return [{"id": r.id, "name": r.name, "created_at": format_date(r.created_at)}
            for r in conn.execute(select(brand).order_by(brand.c.id))]


def list_partners(conn: Connection) -> list[dict[str, object]]:
    return [{"id": r.id, "name": r.name, "partner_type": r.partner_type,
             "created_at": format_date(r.created_at)}
            for r in conn.execute(select(partner).order_by(partner.c.id))]


def list_keys(conn: Connection, account_type: str | None = None,
              account_id: int | None = None) -> list[dict[str, object]]:
    """Keys as the operator reads them: id, account, prefix and dates (never the key)."""
    query = select(api_key).order_by(api_key.c.id)
    if account_type is not None:
        query = query.where(api_key.c.account_type == account_type)
    if account_id is not None:
        query = query.where(api_key.c.account_id == account_id)
    return [{"id": r.id, "account_type": r.account_type, "account_id": r.account_id,
             "prefix": r.prefix, "created_at": format_date(r.created_at),
             "revoked_at": format_date(r.revoked_at) or None}
            for r in conn.execute(query)]
