"""Partner routes: the Event Notifications settings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from postback.api.deps import IdPath, Partner, read, write
from postback.api.schemas.base import BODY, refusals
from postback.api.schemas.settings import (
    DiscardedOut,
    NotificationTypeList,
    RotatedOut,
    SavedSettingOut,
    SettingList,
    TestResultOut,
)
from postback.models import EventLevelSettingIn, NotificationSettingIn, RotateIn, SettingTestIn
from postback.services import notification_settings as ns
from postback.services import test_tool
from postback.services.lane import Busy, TestLane

router = APIRouter(prefix="/v1/event-notifications", tags=["event notifications"])


def _id(who: Partner) -> int:
    assert who.account_id is not None
    return who.account_id


@router.get("", response_model=NotificationTypeList, responses=refusals(401, 403))
def list_settings(request: Request, who: Partner) -> dict[str, Any]:
    with read(request) as conn:
        return {"items": ns.list_settings(conn, _id(who)), "next_cursor": None}


@router.put("/{slug}", response_model=SavedSettingOut,
            responses=refusals(401, 403, 404, *BODY))
def put_setting(slug: str, body: NotificationSettingIn, request: Request,
                who: Partner) -> dict[str, Any]:
    """Saving checks the URL's host now (a name is resolved once); ``warnings`` lists what
    saved but needs attention, such as a name that does not resolve yet."""
    warnings = ns.vet_target(body.url, request.app.state.settings)
    with write(request) as conn:
        saved = ns.put_setting(conn, _id(who), slug, body, request.app.state.settings)
    return {**saved, "warnings": warnings}


@router.post("/action-lifecycle/event-level", status_code=201, response_model=SavedSettingOut,
             responses=refusals(401, 403, 404, *BODY))
def add_event_level(body: EventLevelSettingIn, request: Request, who: Partner) -> dict[str, Any]:
    """A setting for one (program, event type): it fires for new actions (TRACKED) only."""
    warnings = ns.vet_target(body.url, request.app.state.settings)
    with write(request) as conn:
        saved = ns.add_event_level(conn, _id(who), body, request.app.state.settings)
    return {**saved, "warnings": warnings}


@router.get("/action-lifecycle/event-level", response_model=SettingList,
            responses=refusals(401, 403))
def list_event_level(request: Request, who: Partner) -> dict[str, Any]:
    with read(request) as conn:
        return {"items": ns.list_scoped(conn, _id(who), "event_level"), "next_cursor": None}


@router.delete("/action-lifecycle/event-level/{setting_id}", status_code=204,
               responses=refusals(401, 403, 404, 422))
def delete_event_level(setting_id: IdPath, request: Request, who: Partner) -> Response:
    with write(request) as conn:
        ns.delete_scoped(conn, _id(who), "event_level", setting_id)
    return Response(status_code=204)


def run_test(request: Request, partner_id: int, slug: str, body: SettingTestIn,
             scoped: tuple[str, int] | None = None) -> dict[str, Any]:
    """Prepare and send one test postback, on the test tool's own lane (429 when it is
    full). Called on a request thread: it reads the database and waits for the answer."""
    settings = request.app.state.settings
    with read(request) as conn:
        saved = ns.scoped_setting(conn, partner_id, *scoped) if scoped else None
        setting, compiled, values, event_id = test_tool.prepare(
            conn, partner_id, slug, body, settings.sealer, saved)
    lane: TestLane = request.app.state.test_lane
    try:
        return lane.send(settings, setting, compiled, values, event_id)
    except Busy as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": "5"}) from None


@router.post("/{slug}/test", response_model=TestResultOut,
             responses=refusals(401, 403, 404, 429, *BODY))
def test_setting(slug: str, body: SettingTestIn, request: Request,
                 who: Partner) -> dict[str, Any]:
    """Render the saved setting (with any overrides) with sample values, or with one of
    your actions (``sample_id``), send it as production would, and explain the result.
    With a ``url`` other than the saved one the saved headers are left out
    (``left_out_headers`` names them); tests are signed with the setting's test secret,
    never the live one (``test_signing_secret`` / ``test_signing_public_key`` verify
    them), and carry ``webhook-test: true``.
    A few tests at a time per server: over that, 429 (test again in a few seconds)."""
    return run_test(request, _id(who), slug, body)


@router.post("/{slug}/signing-secret/rotate", response_model=RotatedOut,
             responses=refusals(401, 403, 404, 409, *BODY))
def rotate(slug: str, body: RotateIn, request: Request, who: Partner) -> dict[str, Any]:
    """A new signing secret, shown once; the previous one also signs until
    ``previous_secret_expires_at`` (default 24 h), so you can switch without a gap."""
    with write(request) as conn:
        return ns.rotate_signing_secret(conn, _id(who), slug, body.grace_seconds,
                                        request.app.state.settings, datetime.now(UTC))


@router.delete("/{slug}", status_code=204, responses=refusals(401, 403, 404, 422))
def delete_setting(slug: str, request: Request, who: Partner) -> Response:
    with write(request) as conn:
        ns.delete_setting(conn, _id(who), slug)
    return Response(status_code=204)


@router.post("/{slug}/held/discard", response_model=DiscardedOut,
             responses=refusals(401, 403, 404, 422))
def discard_held(slug: str, request: Request, who: Partner) -> dict[str, int]:
    """Give up the deliveries this setting holds while it is off (``status: held``): they
    end as failed (``last_error: discarded``) and stay readable and resendable."""
    with write(request) as conn:
        return ns.discard_held(conn, _id(who), slug)
