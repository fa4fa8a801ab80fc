"""The test tool: render a setting (or overrides of it) with sample values or with one of
the caller's own objects, send it through the production sender, and explain the result.

What a test may not do (docs/security.md, "The test tool"): send the saved secret header
values anywhere but the saved URL (with a URL override they are left out and named in
``left_out_headers``); sign with a live key (tests sign with the setting's test key,
``core.signing.test_secret``, and carry ``webhook-test: true``); change a brand-created
setting (those are tested exactly as the brand saved them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from postback.core.diagnosis import diagnose
from postback.core.payload import ActionContext, InquiryContext, action_values, inquiry_values
from postback.core.render import CONTENT_TYPES, BodyFormat, Value
from postback.core.retry import classify
from postback.core.routing import CLEARING, INQUIRY, LIFECYCLE
from postback.core.signing import SYMMETRIC, public_key, secret_key, test_secret
from postback.core.urls import wire_url
from postback.db.schema import action, event_type, inquiry, notification_setting, partner, program
from postback.delivery.http import Sender, outgoing_headers
from postback.models import NotificationSettingIn, SettingTestIn
from postback.sealing import MASK, Sealer
from postback.services.errors import Invalid, NotFound
from postback.services.ids import uuid7
from postback.services.notification_settings import (
    Compiled,
    check_available,
    check_setting,
    example_values,
)

TEST_HEADER = "webhook-test"  # on every test request, never on a live delivery
OVERRIDES = ("url", "method", "body_format", "body", "sample_id")


def sample_values(slug: str, event_id: str) -> dict[str, Value]:
    """A realistic value for every token of the type (the registry's examples)."""
    return {**example_values(slug), "EventId": event_id}


def _action_values(conn: Connection, partner_id: int, action_id: int,
                   event_id: str) -> dict[str, Value]:
    act = conn.execute(select(action).where(action.c.id == action_id,
                                            action.c.partner_id == partner_id)).first()
    if act is None:
        raise NotFound("action", "sample_id")
    etype = conn.execute(select(event_type.c.name, event_type.c.action_type)
                         .where(event_type.c.id == act.event_type_id)).one()
    return action_values(ActionContext(
        dict(act._mapping),
        program_name=conn.execute(select(program.c.name)
                                  .where(program.c.id == act.program_id)).scalar_one(),
        event_type_name=etype.name, action_type=etype.action_type,
        partner_name=conn.execute(select(partner.c.name)
                                  .where(partner.c.id == act.partner_id)).scalar_one(),
        trigger="TRACKED", delta_amount=act.amount, delta_payout=act.payout,
        event_id=event_id, change_id=uuid7()))


def _inquiry_values(conn: Connection, partner_id: int, inquiry_id: int,
                    event_id: str) -> dict[str, Value]:
    row = conn.execute(select(inquiry).where(inquiry.c.id == inquiry_id,
                                             inquiry.c.partner_id == partner_id)).first()
    if row is None:
        raise NotFound("inquiry", "sample_id")
    trigger = "INQUIRY_CREATED" if row.state == "OPEN" else "INQUIRY_RESOLVED"
    return inquiry_values(InquiryContext(
        dict(row._mapping),
        conn.execute(select(program.c.name).where(program.c.id == row.program_id)).scalar_one(),
        conn.execute(select(partner.c.name).where(partner.c.id == partner_id)).scalar_one(),
        trigger, event_id, uuid7()))


def _test_signing(secret: str | None) -> dict[str, Any]:
    """How a test of a setting with this live secret (opened; None when unsigned) is
    signed: with the setting's test key only, never the live one (current or previous).
    The partner gets what verifies it: the ``whsec_`` test secret of a v1 setting, the
    ``whpk_`` test public key of a v1a one."""
    if secret is None:
        return {"signing_keys": (), "test_signing_secret": None,
                "test_signing_public_key": None}
    test = test_secret(secret)
    return {"signing_keys": (secret_key(test),),
            "test_signing_secret": test if test.startswith(SYMMETRIC) else None,
            "test_signing_public_key": public_key(test)}


def prepare(conn: Connection, partner_id: int, slug: str, overrides: SettingTestIn,
            sealer: Sealer, saved: Any = None
            ) -> tuple[dict[str, Any], Compiled, dict[str, Value], str]:
    """The setting to test (``saved``, by default the partner's global one for ``slug``,
    with overrides), compiled, and the values to render."""
    check_available(conn, partner_id, slug)
    if saved is None:
        saved = conn.execute(select(notification_setting).where(
            notification_setting.c.partner_id == partner_id,
            notification_setting.c.type == slug,
            notification_setting.c.scope == "global")).mappings().first()
    if saved is None and overrides.url is None:
        raise Invalid("url", f"no {slug} setting is saved yet; pass url (and method, body) "
                      "to test one before saving it")
    if saved is not None and saved["scope"] == "brand":
        for field in OVERRIDES:
            if getattr(overrides, field) is not None:
                raise Invalid(field, "brand-created postbacks are tested as the brand saved "
                              f"them, with sample values; remove {field}")
    if saved is not None:
        headers = sealer.open_values(saved["headers"])
        # the saved header values go only where the setting sends: a test elsewhere
        # (a different URL) leaves them out and says which
        elsewhere = overrides.url is not None and overrides.url != saved["url"]
        base: dict[str, Any] = {
            **saved, "headers": {} if elsewhere else headers,
            "left_out_headers": sorted(headers) if elsewhere else [],
            **_test_signing(sealer.open(saved["signing_secret"])
                            if saved["signing_secret"] else None)}
    else:
        base = {"url": overrides.url, "method": "GET", "body_format": "json", "body": "",
                "headers": {}, "success_response": None, "error_response": None,
                "left_out_headers": [], **_test_signing(None)}
    for field in ("url", "method", "body_format", "body"):
        value = getattr(overrides, field)
        if value is not None:
            base[field] = value.value if isinstance(value, BodyFormat) else value
    if base["method"] == "GET" and overrides.body is None:
        base["body"] = ""
    compiled = check_setting(slug, NotificationSettingIn(
        url=base["url"], method=base["method"], body_format=base["body_format"],
        body=base["body"], headers=base["headers"]))
    event_id = uuid7()
    if overrides.sample_id is None:
        values = sample_values(slug, event_id)
    elif slug in (LIFECYCLE, CLEARING):
        values = _action_values(conn, partner_id, overrides.sample_id, event_id)
    elif slug == INQUIRY:
        values = _inquiry_values(conn, partner_id, overrides.sample_id, event_id)
    else:
        raise Invalid("sample_id", f"{slug} tests use sample values; remove sample_id")
    return base, compiled, values, event_id


def rendered(method: str, body_format: str, compiled: Compiled, values: dict[str, Value]
             ) -> tuple[str, str | None, dict[str, str]]:
    """The request a setting makes for these values: URL, body (POST only) and the
    Content-Type it carries. Pure: the test tool and the editor's preview both show it."""
    if method != "POST":
        return compiled.url.render(values), None, {}
    body = compiled.body.render(values) if compiled.body else None
    return (compiled.url.render(values), body,
            {"Content-Type": CONTENT_TYPES[BodyFormat(body_format)]})


async def send_test(sender: Sender, setting: dict[str, Any], compiled: Compiled,
                    values: dict[str, Value], event_id: str) -> dict[str, Any]:
    url, body, base = rendered(setting["method"], setting["body_format"], compiled, values)
    own = {k: v for k, v in setting["headers"].items() if k.lower() != TEST_HEADER}
    try:  # a GET signs the URL as it goes on the wire, as a delivery does (Job.signed_content)
        signed = body.encode("utf-8") if body is not None else wire_url(url).encode("ascii")
    except ValueError:  # it will not be sent (invalid_url): nothing to match
        signed = url.encode("utf-8")
    headers = outgoing_headers(sender.user_agent, event_id,
                               {**base, **own, TEST_HEADER: "true"},
                               setting["signing_keys"], signed)
    started = datetime.now(UTC)
    response = await sender.send(setting["method"], url, headers,
                                 body.encode("utf-8") if body is not None else None)
    outcome, error = classify(response.status, response.error, response.text,
                              setting["success_response"], setting["error_response"])
    location = (response.headers or {}).get("Location")
    return {
        "request": {"method": setting["method"], "url": url,
                    "headers": {k: MASK if k in setting["headers"] else v
                                for k, v in headers.items()},
                    "body": body},
        "response": None if response.status is None else {
            "status": response.status, "headers": response.headers, "body": response.text},
        "left_out_headers": setting.get("left_out_headers", []),
        "test_signing_secret": setting.get("test_signing_secret"),
        "test_signing_public_key": setting.get("test_signing_public_key"),
        "sent_at": started.isoformat(),
        "latency_ms": round(response.latency_ms, 3),
        "outcome": outcome.value,
        "error_class": error.value if error else None,
        "error": response.message,
        "diagnosis": diagnose(outcome, error, response.status, setting["success_response"],
                              setting["error_response"], location),
    }
