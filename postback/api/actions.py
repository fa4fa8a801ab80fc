"""Action routes: brands report and change actions; brands and partners read their own."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from postback.api.deps import Brand, BrandOrPartner, IdPath, IdQuery, read, wake, write
from postback.api.schemas.actions import ActionDetailOut, ActionOut, ActionPage, BatchOut
from postback.api.schemas.base import BODY, refusals
from postback.models import ActionBatchIn, ActionIn, ActionPatchIn, AwareDatetime, ReasonIn
from postback.services import ledger
from postback.services.group_commit import GroupCommit

router = APIRouter(prefix="/v1/actions", tags=["actions"])


def _id(who: Brand | BrandOrPartner) -> int:
    assert who.account_id is not None
    return who.account_id


@router.post("", status_code=201, response_model=ActionOut,
             responses=refusals(401, 403, 404, 409, *BODY))
async def report(body: ActionIn, request: Request, who: Brand) -> dict[str, Any]:
    """One action, answered once it is committed. Concurrent reports are committed
    together (``services/group_commit.py``); each gets the answer it would get alone."""
    commits: GroupCommit[tuple[int, ActionIn], dict[str, Any]] = request.app.state.action_commits
    row = await asyncio.wrap_future(commits.submit((_id(who), body)))
    return ledger.action_out(row)


@router.post("/batch", status_code=201, response_model=BatchOut,
             responses=refusals(401, 403, 404, 409, *BODY))
def report_batch(body: ActionBatchIn, request: Request, who: Brand) -> dict[str, Any]:
    """Up to 10,000 actions, all or none."""
    with write(request) as conn:
        rows = ledger.report_actions(conn, _id(who), body.actions, datetime.now(UTC), batch=True)
    wake(request)
    return {"items": [{"id": r["id"], "oid": r["oid"], "status": r["status"]} for r in rows],
            "count": len(rows)}


@router.get("", response_model=ActionPage, responses=refusals(401, 403, 422))
def list_actions(
    request: Request, who: BrandOrPartner,
    status: Literal["PENDING", "APPROVED", "REVERSED"] | None = None,
    program_id: IdQuery = None, oid: str | None = None,
    since: AwareDatetime | None = None, until: AwareDatetime | None = None,
    cursor: IdQuery = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    scope = {"brand_id": _id(who)} if who.role == "brand" else {"partner_id": _id(who)}
    with read(request) as conn:
        return ledger.list_actions(conn, **scope, status=status, program_id=program_id, oid=oid,
                                   since=since, until=until, cursor=cursor, limit=limit)


@router.get("/{action_id}", response_model=ActionDetailOut,
            responses=refusals(401, 403, 404, 422))
def get_action(action_id: IdPath, request: Request, who: BrandOrPartner) -> dict[str, Any]:
    scope = {"brand_id": _id(who)} if who.role == "brand" else {"partner_id": _id(who)}
    with read(request) as conn:
        return ledger.get_action(conn, action_id, **scope)


@router.patch("/{action_id}", response_model=ActionOut,
              responses=refusals(401, 403, 404, 409, *BODY))
def modify(action_id: IdPath, body: ActionPatchIn, request: Request, who: Brand) -> dict[str, Any]:
    with write(request) as conn:
        row = ledger.modify_action(conn, _id(who), action_id, body, datetime.now(UTC))
    wake(request)
    return ledger.action_out(row)


@router.post("/{action_id}/reverse", response_model=ActionOut,
             responses=refusals(401, 403, 404, 409, *BODY))
def reverse(action_id: IdPath, body: ReasonIn, request: Request, who: Brand) -> dict[str, Any]:
    with write(request) as conn:
        row = ledger.reverse_action(conn, _id(who), action_id, body.reason, datetime.now(UTC))
    wake(request)
    return ledger.action_out(row)


@router.post("/{action_id}/approve", response_model=ActionOut,
             responses=refusals(401, 403, 404, 409, 422))
def approve(action_id: IdPath, request: Request, who: Brand) -> dict[str, Any]:
    with write(request) as conn:
        row = ledger.approve_action(conn, _id(who), action_id, datetime.now(UTC))
    return ledger.action_out(row)
