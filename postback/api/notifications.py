"""Partner routes: the Event Notifications settings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from postback.api.deps import Partner, read, write
from postback.models import NotificationSettingIn
from postback.services import notification_settings as ns

router = APIRouter(prefix="/v1/event-notifications", tags=["event notifications"])


def _id(who: Partner) -> int:
    assert who.account_id is not None
    return who.account_id


@router.get("")
def list_settings(request: Request, who: Partner) -> dict[str, Any]:
    with read(request) as conn:
        return {"items": ns.list_settings(conn, _id(who)), "next_cursor": None}


@router.put("/{slug}")
def put_setting(slug: str, body: NotificationSettingIn, request: Request,
                who: Partner) -> dict[str, Any]:
    with write(request) as conn:
        return ns.put_setting(conn, _id(who), slug, body)


@router.delete("/{slug}", status_code=204)
def delete_setting(slug: str, request: Request, who: Partner) -> Response:
    with write(request) as conn:
        ns.delete_setting(conn, _id(who), slug)
    return Response(status_code=204)
