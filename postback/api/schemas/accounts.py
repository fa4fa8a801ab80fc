"""Brands, partners, API keys, and who is calling (``services/accounts.py``)."""

from __future__ import annotations

from typing import Literal

from postback.api.schemas.base import Listed, Out, Timestamp
from postback.models import PartnerType

AccountType = Literal["brand", "partner"]


class BrandOut(Out):
    id: int
    name: str
    created_at: Timestamp


class PartnerOut(Out):
    id: int
    name: str
    partner_type: PartnerType
    created_at: Timestamp


class ApiKeyOut(Out):
    """A key as the operator reads it: never the key itself, only its first characters."""

    id: int
    account_type: AccountType
    account_id: int
    prefix: str
    created_at: Timestamp
    revoked_at: Timestamp | None


class IssuedKeyOut(Out):
    """A new key: ``key`` is shown here once and never again (only its hash is stored)."""

    id: int
    key: str
    account_type: AccountType
    account_id: int
    created_at: Timestamp


class MeOut(Out):
    role: Literal["operator", "brand", "partner"]
    account_id: int | None


class BrandList(Listed[BrandOut]):
    pass


class PartnerList(Listed[PartnerOut]):
    pass


class ApiKeyList(Listed[ApiKeyOut]):
    pass
