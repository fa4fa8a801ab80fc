"""Partner routes: deliveries and their attempts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from postback.api.deps import IdPath, IdQuery, Partner, read, wake, write
from postback.api.schemas.base import BODY, refusals
from postback.api.schemas.deliveries import DeliveryDetailOut, DeliveryPage, RequeuedOut
from postback.models import AwareDatetime, RecoverIn
from postback.services import deliveries

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"])


def _id(who: Partner) -> int:
    assert who.account_id is not None
    return who.account_id


@router.get("", response_model=DeliveryPage, responses=refusals(401, 403, 422))
def list_deliveries(
    request: Request, who: Partner,
    status: Literal["pending", "held", "succeeded", "failed"] | None = None,
    trigger: str | None = None, action_id: IdQuery = None,
    type: Literal["action-lifecycle", "action-clearing", "action-inquiry",
                  "product-data-change"] | None = None,
    since: AwareDatetime | None = None, until: AwareDatetime | None = None,
    cursor: IdQuery = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    with read(request) as conn:
        return deliveries.list_deliveries(conn, _id(who), status=status, trigger=trigger,
                                          action_id=action_id, type=type,
                                          since=since, until=until,
                                          cursor=cursor, limit=limit)


@router.post("/recover", response_model=RequeuedOut,
             responses=refusals(401, 403, *BODY))
def recover(body: RecoverIn, request: Request, who: Partner) -> dict[str, int]:
    """Queue again every failed delivery created in the window (optionally of one type)."""
    count = deliveries.recover_failed(request.app.state.db, datetime.now(UTC),
                                      since=body.since, until=body.until, type=body.type,
                                      partner_id=_id(who))
    wake(request)
    return {"requeued": count}


@router.get("/{delivery_id}", response_model=DeliveryDetailOut,
            responses=refusals(401, 403, 404, 422))
def get_delivery(delivery_id: IdPath, request: Request, who: Partner) -> dict[str, Any]:
    with read(request) as conn:
        return deliveries.get_delivery(conn, _id(who), delivery_id)


@router.post("/{delivery_id}/resend", response_model=DeliveryDetailOut,
             responses=refusals(401, 403, 404, 409, 422))
def resend(delivery_id: IdPath, request: Request, who: Partner) -> dict[str, Any]:
    with write(request) as conn:
        out = deliveries.resend_delivery(conn, _id(who), delivery_id, datetime.now(UTC))
    wake(request)
    return out
