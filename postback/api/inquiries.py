"""Inquiry routes: partners (cashback and loyalty) claim, brands resolve."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from postback.api.deps import Brand, BrandOrPartner, IdPath, IdQuery, Partner, read, wake, write
from postback.api.schemas.base import BODY, refusals
from postback.api.schemas.inquiries import InquiryOut, InquiryPage, InquirySettingsOut
from postback.models import InquiryIn, InquirySettingsIn, ResolveIn
from postback.services import inquiries
from postback.services.programs import get_program

router = APIRouter(prefix="/v1", tags=["inquiries"])


def _owner(who: BrandOrPartner) -> dict[str, int]:
    assert who.account_id is not None
    return {"brand_id" if who.role == "brand" else "partner_id": who.account_id}


@router.post("/inquiries", status_code=201, response_model=InquiryOut,
             responses=refusals(401, 403, 404, *BODY))
def create(body: InquiryIn, request: Request, who: Partner) -> dict[str, Any]:
    assert who.account_id is not None
    with write(request) as conn:
        out = inquiries.create_inquiry(conn, who.account_id, body, datetime.now(UTC))
    wake(request)
    return out


@router.get("/inquiries", response_model=InquiryPage,
            responses=refusals(401, 403, 422))
def list_inquiries(request: Request, who: BrandOrPartner,
                   state: Literal["OPEN", "RESOLVED", "CLOSED"] | None = None,
                   cursor: IdQuery = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    with read(request) as conn:
        return inquiries.list_inquiries(conn, state=state, cursor=cursor, limit=limit,
                                        **_owner(who))


@router.get("/inquiries/{inquiry_id}", response_model=InquiryOut,
            responses=refusals(401, 403, 404, 422))
def get(inquiry_id: IdPath, request: Request, who: BrandOrPartner) -> dict[str, Any]:
    with read(request) as conn:
        return inquiries.get_inquiry(conn, inquiry_id, **_owner(who))


@router.post("/inquiries/{inquiry_id}/close", response_model=InquiryOut,
             responses=refusals(401, 403, 404, 409, 422))
def close(inquiry_id: IdPath, request: Request, who: Partner) -> dict[str, Any]:
    assert who.account_id is not None
    with write(request) as conn:
        out = inquiries.close_inquiry(conn, who.account_id, inquiry_id, datetime.now(UTC))
    wake(request)
    return out


@router.post("/inquiries/{inquiry_id}/resolve", response_model=InquiryOut,
             responses=refusals(401, 403, 404, 409, *BODY))
def resolve(inquiry_id: IdPath, body: ResolveIn, request: Request, who: Brand) -> dict[str, Any]:
    """VALID creates the action (ReferringType ACTION_INQUIRY, a TRACKED postback);
    DECLINED needs one of the exact reject reasons."""
    assert who.account_id is not None
    with write(request) as conn:
        out = inquiries.resolve_inquiry(conn, who.account_id, inquiry_id, body,
                                        datetime.now(UTC))
    wake(request)
    return out


@router.put("/programs/{program_id}/inquiry-settings", response_model=InquirySettingsOut,
            responses=refusals(401, 403, 404, *BODY))
def put_settings(program_id: IdPath, body: InquirySettingsIn, request: Request,
                 who: Brand) -> dict[str, Any]:
    assert who.account_id is not None
    with write(request) as conn:
        return inquiries.put_policy(conn, who.account_id, program_id, body, datetime.now(UTC))


@router.get("/programs/{program_id}/inquiry-settings", response_model=InquirySettingsOut,
            responses=refusals(401, 403, 404, 422))
def get_settings(program_id: IdPath, request: Request, who: Brand) -> dict[str, Any]:
    assert who.account_id is not None
    with read(request) as conn:
        get_program(conn, who.account_id, program_id)  # 404 unless it is yours
        return inquiries.policy_out(inquiries.policy(conn, program_id))
