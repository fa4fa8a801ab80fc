"""Postbacks a brand creates for one partner: the brand manages them, the partner reads and
tests them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from postback.api.deps import Brand, IdPath, Partner, read, write
from postback.api.notifications import run_test
from postback.api.schemas.base import BODY, refusals
from postback.api.schemas.settings import SavedSettingOut, SettingList, TestResultOut
from postback.core.routing import LIFECYCLE
from postback.models import BrandPostbackIn, SettingTestIn
from postback.services import notification_settings as ns

router = APIRouter(prefix="/v1", tags=["brand postbacks"])


def _id(who: Brand | Partner) -> int:
    assert who.account_id is not None
    return who.account_id


@router.post("/partners/{partner_id}/postbacks", status_code=201,
             response_model=SavedSettingOut, responses=refusals(401, 403, 404, *BODY))
def create(partner_id: IdPath, body: BrandPostbackIn, request: Request,
           who: Brand) -> dict[str, Any]:
    """Only for an event type in that partner's contract on one of your programs."""
    warnings = ns.vet_target(body.url, request.app.state.settings)
    with write(request) as conn:
        saved = ns.add_brand_postback(conn, _id(who), partner_id, body,
                                      request.app.state.settings)
    return {**saved, "warnings": warnings}


@router.get("/partners/{partner_id}/postbacks", response_model=SettingList,
            responses=refusals(401, 403, 404, 422))
def list_for_partner(partner_id: IdPath, request: Request, who: Brand) -> dict[str, Any]:
    with read(request) as conn:
        return {"items": ns.list_scoped(conn, partner_id, "brand", brand_id=_id(who)),
                "next_cursor": None}


@router.delete("/partners/{partner_id}/postbacks/{setting_id}", status_code=204,
               responses=refusals(401, 403, 404, 422))
def delete(partner_id: IdPath, setting_id: IdPath, request: Request, who: Brand) -> Response:
    with write(request) as conn:
        ns.delete_scoped(conn, partner_id, "brand", setting_id, brand_id=_id(who))
    return Response(status_code=204)


@router.get("/brand-postbacks", response_model=SettingList,
            responses=refusals(401, 403))
def list_mine(request: Request, who: Partner) -> dict[str, Any]:
    with read(request) as conn:
        return {"items": ns.list_scoped(conn, _id(who), "brand"), "next_cursor": None}


@router.post("/brand-postbacks/{setting_id}/test", response_model=TestResultOut,
             responses=refusals(401, 403, 404, 429, *BODY))
def test(setting_id: IdPath, body: SettingTestIn, request: Request,
         who: Partner) -> dict[str, Any]:
    """Send one test of this postback exactly as the brand saved it, with sample values:
    any override (``url``, ``method``, ``body_format``, ``body``, ``sample_id``) is a 422."""
    return run_test(request, _id(who), LIFECYCLE, body, ("brand", setting_id))
