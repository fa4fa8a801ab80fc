"""Partner routes: the Event Notifications settings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from postback.api.deps import Partner, read, write
from postback.delivery.http import Sender
from postback.models import NotificationSettingIn, SettingTestIn
from postback.services import notification_settings as ns
from postback.services import test_tool

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


@router.post("/{slug}/test")
async def test_setting(slug: str, body: SettingTestIn, request: Request,
                       who: Partner) -> dict[str, Any]:
    """Render the saved setting (with any overrides) with sample values, or with one of
    your actions (``sample_id``), send it as production would, and explain the result."""

    def prepare() -> Any:
        with read(request) as conn:
            return test_tool.prepare(conn, _id(who), slug, body)

    setting, compiled, values, event_id = await run_in_threadpool(prepare)
    s = request.app.state.settings
    async with Sender(s.connect_timeout, s.total_timeout, 1, s.user_agent) as sender:
        return await test_tool.send_test(sender, setting, compiled, values, event_id)


@router.delete("/{slug}", status_code=204)
def delete_setting(slug: str, request: Request, who: Partner) -> Response:
    with write(request) as conn:
        ns.delete_setting(conn, _id(who), slug)
    return Response(status_code=204)
