"""Operator routes: brands, partners, API keys; and who-am-I for everyone."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response

from postback.api.deps import IdPath, IdQuery, Operator, principal, read, write
from postback.api.schemas.accounts import (
    ApiKeyList,
    BrandList,
    BrandOut,
    IssuedKeyOut,
    MeOut,
    PartnerList,
    PartnerOut,
)
from postback.api.schemas.base import BODY, refusals
from postback.models import ApiKeyIn, BrandIn, PartnerIn
from postback.services import accounts
from postback.services.accounts import Principal

router = APIRouter(prefix="/v1", tags=["accounts"])


@router.post("/brands", status_code=201, response_model=BrandOut,
             responses=refusals(401, 403, *BODY))
def create_brand(body: BrandIn, request: Request, _: Operator) -> dict[str, Any]:
    with write(request) as conn:
        return accounts.create_brand(conn, body)


@router.post("/partners", status_code=201, response_model=PartnerOut,
             responses=refusals(401, 403, *BODY))
def create_partner(body: PartnerIn, request: Request, _: Operator) -> dict[str, Any]:
    with write(request) as conn:
        return accounts.create_partner(conn, body)


@router.get("/brands", response_model=BrandList, responses=refusals(401, 403))
def list_brands(request: Request, _: Operator) -> dict[str, Any]:
    with read(request) as conn:
        return {"items": accounts.list_brands(conn), "next_cursor": None}


@router.get("/partners", response_model=PartnerList,
            responses=refusals(401, 403))
def list_partners(request: Request, _: Operator) -> dict[str, Any]:
    with read(request) as conn:
        return {"items": accounts.list_partners(conn), "next_cursor": None}


@router.get("/api-keys", response_model=ApiKeyList,
            responses=refusals(401, 403, 422))
def list_keys(request: Request, _: Operator,
              account_type: Literal["brand", "partner"] | None = None,
              account_id: IdQuery = None) -> dict[str, Any]:
    """Every key's id, account, prefix and dates; the keys themselves are never stored."""
    with read(request) as conn:
        return {"items": accounts.list_keys(conn, account_type, account_id),
                "next_cursor": None}


@router.post("/api-keys", status_code=201, response_model=IssuedKeyOut,
             responses=refusals(401, 403, 404, *BODY))
def issue_key(body: ApiKeyIn, request: Request, _: Operator) -> dict[str, Any]:
    """Issue a key bound to one account. The key is shown here once and never again."""
    with write(request) as conn:
        return accounts.issue_key(conn, body)


@router.delete("/api-keys/{key_id}", status_code=204,
               responses=refusals(401, 403, 404, 422))
def revoke_key(key_id: IdPath, request: Request, _: Operator) -> Response:
    with write(request) as conn:
        accounts.revoke_key(conn, key_id)
    request.app.state.keys.forget_all()  # refused from the next request on
    return Response(status_code=204)


@router.get("/me", response_model=MeOut, responses=refusals(401))
def me(who: Principal = Depends(principal)) -> dict[str, Any]:
    return {"role": who.role, "account_id": who.account_id}
