"""Partner routes: deliveries and their attempts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from postback.api.deps import IdPath, IdQuery, Partner, read, wake, write
from postback.api.schemas.base import BODY, refusals
from postback.api.schemas.deliveries import (
    DeliveryDetailOut,
    DeliveryPage,
    ReplayOut,
    ReplayPage,
    ReplayStartedOut,
    RequeuedOut,
)
from postback.models import AwareDatetime, RecoverIn, ReplayIn
from postback.services import deliveries
from postback.services import replay as replays

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


@router.post("/replay", response_model=ReplayStartedOut,
             responses=refusals(401, 403, *BODY))
def replay(body: ReplayIn, request: Request, who: Partner) -> dict[str, Any]:
    """Send every notification of the window again, succeeded ones too, as new deliveries
    with their original ``event_id`` (``webhook-id``, ``{EventId}``) and ``{Sequence}``,
    made from each setting as it is now (or to a one-off ``url``). Original deliveries
    only: replays are not replayed. The same request within 24 hours is the same replay
    (the same answer, nothing sent twice); one that was stopped part way is taken up where
    it stopped. ``replayed`` counts the new deliveries; follow them with
    ``GET /v1/deliveries/replays/{id}``."""
    req = replays.ReplayRequest(body.since, body.until, body.type, body.url)
    warnings = replays.check_request(req, request.app.state.settings)
    out, _ = replays.replay_deliveries(request.app.state.db, _id(who), req, datetime.now(UTC))
    wake(request)
    return {**out, "warnings": warnings}


@router.get("/replays", response_model=ReplayPage, responses=refusals(401, 403, 422))
def list_replays(request: Request, who: Partner, cursor: IdQuery = None,
                 limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    """Your replays, newest first, each with its deliveries counted by status."""
    with read(request) as conn:
        return replays.list_replays(conn, _id(who), cursor=cursor, limit=limit)


@router.get("/replays/{replay_id}", response_model=ReplayOut,
            responses=refusals(401, 403, 404, 422))
def get_replay(replay_id: IdPath, request: Request, who: Partner) -> dict[str, Any]:
    with read(request) as conn:
        return replays.get_replay(conn, _id(who), replay_id)


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
