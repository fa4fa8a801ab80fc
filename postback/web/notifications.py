"""Partner: Settings → Technical → Event Notifications, as on impact.com.

The four types with their state; the edit form (URL, method, body format, body, a token
picker from the one registry, the optional settings); Save with errors shown where they
stand; a live preview of the exact request; Test, which sends it as production would.
Everything goes through the same services as the API, so the rules are the same.

Save, Test, Rotate, Discard and Delete redirect to the page they belong to (Post/Redirect/
Get); what they have to show (a test's request and response, a signing secret) waits in
the session for that one page, so a reload neither repeats them nor shows them again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy import Connection, select

from postback.core.diagnosis import diagnosis
from postback.core.lifecycle import RuleViolation
from postback.core.messages import known, refusal
from postback.core.render import BodyFormat, TemplateError
from postback.core.retry import ErrorClass, Outcome
from postback.core.routing import EXTRA_TRIGGERS, LIFECYCLE
from postback.db.engine import reader
from postback.db.schema import delivery, notification_setting
from postback.models import EventLevelSettingIn, NotificationSettingIn, SettingTestIn
from postback.sealing import MASK
from postback.services import notification_settings as ns
from postback.services import programs, test_tool
from postback.services.errors import Invalid, NotFound
from postback.services.ids import uuid7
from postback.services.lane import Busy, TestLane
from postback.web.pages import (
    EMPTY,
    Filled,
    Forbidden,
    Form,
    Id,
    JsonBody,
    Page,
    Posted,
    page,
)

router = APIRouter(prefix="/partner/event-notifications", include_in_schema=False)
FIELDS = ("url", "method", "body_format", "body", "minimum_delay_seconds",
          "max_requests_per_second", "success_response", "error_response", "signing_scheme")


RECENT = 10_000


def _last_deliveries(conn: Connection, partner_id: int) -> dict[str, Any]:
    """The newest delivery of each type among the partner's newest ``RECENT`` (a bounded
    read on the partner's index, however many deliveries it has): outcome and time."""
    recent = (select(delivery.c.id).where(delivery.c.partner_id == partner_id)
              .order_by(delivery.c.id.desc()).limit(RECENT).scalar_subquery())
    out = {}
    for slug in ns.TYPES:
        row = conn.execute(
            select(delivery.c.status, delivery.c.last_status_code, delivery.c.last_error,
                   delivery.c.created_at, delivery.c.completed_at)
            .where(delivery.c.id.in_(recent), delivery.c.notification_type == slug)
            .order_by(delivery.c.id.desc()).limit(1)).first()
        if row is not None:
            out[slug] = row
    return out


@router.get("")
def overview(request: Request) -> Response:
    return _overview(page(request, "partner"))


def _overview(p: Page, status: int = 200, filled: Filled = EMPTY) -> Response:
    with reader(p.request.app.state.db).begin() as conn:
        types = ns.list_settings(conn, p.account_id)
        last = _last_deliveries(conn, p.account_id)
        event_level = ns.list_scoped(conn, p.account_id, "event_level")
        brand_made = ns.list_scoped(conn, p.account_id, "brand")
        event_types = programs.contracted_event_types(conn, p.account_id)
    return p.render("partner/notifications.html", status=status, types=types, last=last,
                    event_level=event_level, brand_made=brand_made, event_types=event_types,
                    filled=filled)


# -- event-level postbacks ---------------------------------------------------------------

EVENT_LEVEL_FIELDS = ("event_type", "url", "method", "body_format", "body")


@router.post("/event-level")
def add_event_level(request: Request, sent: Form) -> Response:
    p = page(request, "partner")
    form = p.form(sent)
    values = _posted(form, sent.lists)
    program_id, _, event_type_id = form.get("event_type", "").partition(":")
    config = request.app.state.settings
    try:
        body = _setting_in(values, None, p, EventLevelSettingIn,
                           program_id=program_id or None, event_type_id=event_type_id or None)
        ns.vet_target(body.url, config)
        with request.app.state.db.begin() as conn:
            ns.add_event_level(conn, p.account_id, body, config)  # type: ignore[arg-type]
    except (ValidationError, Invalid, RuleViolation, NotFound) as exc:
        errors = p.refusal(exc, names={"program_id": "event_type",
                                       "event_type_id": "event_type"})
        return _overview(p, 422, Filled("event-level", form, errors, EVENT_LEVEL_FIELDS))
    return p.done("/partner/event-notifications#event-level",
                  p.gettext("Event-level postback added."))


@router.post("/{slug}/held/discard")
def discard_held(slug: str, request: Request, sent: Form) -> Response:
    """Give up what a turned-off postback holds (Post/Redirect/Get back to the list)."""
    p = page(request, "partner")
    p.form(sent)
    try:
        with request.app.state.db.begin() as conn:
            out = ns.discard_held(conn, p.account_id, slug)
    except (NotFound, RuleViolation):
        raise Forbidden(p.gettext("There is no such postback."), 404) from None
    return p.done("/partner/event-notifications", p.gettext(
        "%(n)s held deliveries discarded.", n=out.get("discarded", 0)))


def _busy(p: Page, exc: Busy) -> str:
    return p.gettext("%(n)s tests are being sent already; wait a few seconds for one to "
                     "finish and test again", n=exc.size)


@router.post("/event-level/{setting_id}/delete")
def delete_event_level(setting_id: Id, request: Request, sent: Form) -> Response:
    p = page(request, "partner")
    p.form(sent)
    try:
        with request.app.state.db.begin() as conn:
            ns.delete_scoped(conn, p.account_id, "event_level", setting_id)
    except NotFound:
        raise Forbidden(p.gettext("There is no such postback."), 404) from None
    return p.done("/partner/event-notifications#event-level",
                  p.gettext("Postback %(id)s deleted.", id=setting_id))


def _result(p: Page, result: dict[str, Any], setting: dict[str, Any]) -> dict[str, Any]:
    """A test's result as the page shows it: the diagnosis and the error in the reader's
    words, and only what the page shows (kept in the session for the page after the
    redirect)."""
    outcome = Outcome(result["outcome"])
    error = ErrorClass(result["error_class"]) if result.get("error_class") else None
    response = result.get("response")
    location = (response.get("headers") or {}).get("Location") if response else None
    said = diagnosis(outcome, error, response["status"] if response else None,
                     setting.get("success_response"), setting.get("error_response"),
                     location)
    return {"outcome": result["outcome"], "error_class": result.get("error_class"),
            "latency_ms": result.get("latency_ms") or 0, "diagnosis": p.say(said),
            "error": p.say(known(result["error"])) if result.get("error") else None,
            "request": result["request"], "response": response,
            "left_out_headers": list(result.get("left_out_headers") or [])}


@router.post("/scoped/{setting_id}/test")
def test_scoped(setting_id: Id, request: Request, sent: Form) -> Response:
    """Test an event-level or brand-created postback as saved, with sample values; the
    result is shown on the page this redirects to."""
    p = page(request, "partner")
    p.form(sent)
    config = request.app.state.settings
    try:
        with reader(request.app.state.db).begin() as conn:
            row = ns.scoped_setting(conn, p.account_id, None, setting_id)
            setting, compiled, sample, event_id = test_tool.prepare(
                conn, p.account_id, LIFECYCLE, SettingTestIn(), config.sealer, row)
    except NotFound:
        raise Forbidden(p.gettext("There is no such postback."), 404) from None
    except (Invalid, RuleViolation) as exc:
        raise Forbidden(p.refusal_text(exc), 422) from None
    try:
        result = _lane(request).send(config, setting, compiled, sample, event_id)
    except Busy as exc:
        raise Forbidden(_busy(p, exc), 429) from None
    return p.done(f"/partner/event-notifications/scoped/{setting_id}/test",
                  result=_result(p, result, setting))


@router.get("/scoped/{setting_id}/test")
def test_scoped_result(setting_id: Id, request: Request) -> Response:
    """A scoped postback's last test, shown once; afterwards, the button to test again."""
    p = page(request, "partner")
    try:
        with reader(request.app.state.db).begin() as conn:
            row = ns.scoped_setting(conn, p.account_id, None, setting_id)
    except NotFound:
        raise Forbidden(p.gettext("There is no such postback."), 404) from None
    return p.render("partner/test_result.html", result=p.flash.get("result"),
                    setting=ns.setting_out(row))


# -- the edit form ------------------------------------------------------------------------

def _form_values(row: Any) -> dict[str, Any]:
    """A saved setting as the form shows it (header values masked)."""
    if row is None:
        return {"url": "", "method": "GET", "body_format": "json", "body": "",
                "enabled": True, "minimum_delay_seconds": "0", "max_requests_per_second": "",
                "success_response": "", "error_response": "", "headers": [],
                "extra_triggers": [], "signed": False, "signing_scheme": "v1"}
    out = ns.setting_out(row)
    return {**{k: ("" if out[k] is None else str(out[k])) for k in FIELDS if k in out},
            "enabled": out["enabled"], "headers": list(out["headers"].items()),
            "extra_triggers": out["extra_triggers"], "signed": out["signed"],
            "signing_scheme": out["signing_scheme"] or "v1",
            "disabled_reason": out["disabled_reason"], "disabled_at": out["disabled_at"],
            "signing_public_key": out["signing_public_key"],
            "signing_rotation_ends_at": out["signing_rotation_ends_at"]}


def _saved(conn: Connection, partner_id: int, slug: str) -> Any:
    return conn.execute(select(notification_setting).where(
        notification_setting.c.partner_id == partner_id,
        notification_setting.c.type == slug,
        notification_setting.c.scope == "global")).mappings().first()


def _type_or_404(p: Page, slug: str) -> ns.NotificationType:
    try:
        return ns.notification_type(slug)
    except NotFound:
        raise Forbidden(p.gettext("There is no such event notification type."),
                        404) from None


def _edit(p: Page, slug: str, values: dict[str, Any], status: int = 200,
          **extra: Any) -> Response:
    kind = _type_or_404(p, slug)
    with reader(p.request.app.state.db).begin() as conn:
        try:
            ns.check_available(conn, p.account_id, slug)
            unavailable = None
        except RuleViolation as exc:
            unavailable = p.refusal_text(exc)
    tokens = sorted(kind.vocabulary.values(), key=lambda t: t.name)
    return p.render("partner/notification_edit.html", status=status, kind=kind, slug=slug,
                    values=values, tokens=tokens, unavailable=unavailable,
                    extra_triggers=sorted(EXTRA_TRIGGERS.get(slug, ())),
                    errors=extra.pop("errors", {}), **extra)


@router.get("/{slug}")
def edit(slug: str, request: Request) -> Response:
    """The edit form: as saved, or as it was tested (Test redirects here with the form as it
    stood and the result, shown once)."""
    p = page(request, "partner")
    _type_or_404(p, slug)
    with reader(request.app.state.db).begin() as conn:
        row = _saved(conn, p.account_id, slug)
    flash = p.flash
    values = _form_values(row)
    if isinstance(flash.get("values"), dict):  # as tested; the header rows sealed until now
        values = {**values, **flash["values"],
                  "headers": [tuple(h) for h in flash.get("headers") or []]}
    return _edit(p, slug, values, saved_exists=row is not None, result=flash.get("result"),
                 secret=flash.get("secret"))


def _posted(form: dict[str, str], lists: dict[str, list[str]]) -> dict[str, Any]:
    """The form as it was sent, to show again (never the header values: they are secret)."""
    names = lists.get("header_name", [])
    values = lists.get("header_value", [])
    headers = [(n.strip(), v) for n, v in zip(names, values, strict=False) if n.strip()]
    return {**{k: form.get(k, "") for k in FIELDS}, "enabled": form.get("enabled") == "on",
            "headers": headers, "extra_triggers": lists.get("extra_triggers", []),
            "signed": form.get("signed") == "on",
            "signing_scheme": form.get("signing_scheme") or "v1"}


def _setting_in(values: dict[str, Any], saved: Any, p: Page,
                model: type[NotificationSettingIn] = NotificationSettingIn,
                **more: Any) -> NotificationSettingIn:
    """The API's input model from the form; a header left at the mask keeps its value."""
    sealer = p.request.app.state.settings.sealer
    old = sealer.open_values(saved["headers"]) if saved is not None else {}
    headers = {}
    for name, value in values["headers"]:
        headers[name] = old.get(name, "") if value == MASK else value

    def blank_none(key: str) -> str | None:
        text = str(values.get(key) or "").strip()
        return text or None

    return model.model_validate({
        "url": values["url"].strip(), "method": values["method"] or "GET",
        "body_format": values["body_format"] or "json",
        "body": values["body"] if values["method"] == "POST" else "",
        "headers": headers, "enabled": values["enabled"],
        "minimum_delay_seconds": blank_none("minimum_delay_seconds") or 0,
        "max_requests_per_second": blank_none("max_requests_per_second"),
        "success_response": blank_none("success_response"),
        "error_response": blank_none("error_response"),
        "extra_triggers": values["extra_triggers"], "signed": values["signed"],
        "signing_scheme": values["signing_scheme"], **more})


def highlight(text: str, problems: list[dict[str, Any]], field: str) -> list[tuple[str, bool]]:
    """The field's text cut into (piece, is-a-problem) so a template can mark each bad token
    where it stands."""
    spans = sorted((int(p["position"]), text.find("}", int(p["position"])))
                   for p in problems if p.get("field") == field and p.get("position") is not None)
    out: list[tuple[str, bool]] = []
    at = 0
    for start, end in spans:
        end = len(text) - 1 if end < 0 else end
        if start < at:
            continue
        out.append((text[at:start], False))
        out.append((text[start:end + 1], True))
        at = end + 1
    out.append((text[at:], False))
    return [piece for piece in out if piece[0]]


def _refused(p: Page, slug: str, values: dict[str, Any], exc: Exception,
             saved_exists: bool) -> Response:
    """The form again, as sent, with each problem where it stands (422)."""
    errors = p.refusal(exc)
    marks = {f: highlight(values[f], errors.get("problems", []), f) for f in ("url", "body")}
    return _edit(p, slug, values, status=422, errors=errors, marks=marks,
                 saved_exists=saved_exists)


def _lane(request: Request) -> TestLane:
    """The test tool's own lane (``api/lane.py``): a few tests at a time, never the
    delivery engine's capacity."""
    lane: TestLane = request.app.state.test_lane
    return lane


def _sent_form(request: Request, sent: Posted, slug: str) -> tuple[Page, dict[str, Any], Any]:
    """A posted edit form: the page (session and CSRF checked), the form's values as sent,
    and the saved setting (or None)."""
    p = page(request, "partner")
    _type_or_404(p, slug)
    form = p.form(sent)
    values = _posted(form, sent.lists)
    with reader(request.app.state.db).begin() as conn:
        saved = _saved(conn, p.account_id, slug)
    return p, values, saved


@router.post("/{slug}")
def save(slug: str, request: Request, sent: Form) -> Response:
    p, values, saved = _sent_form(request, sent, slug)
    db = request.app.state.db
    config = request.app.state.settings
    try:
        body = _setting_in(values, saved, p)
        warnings = ns.vet_target(body.url, config)
        with db.begin() as conn:
            out = ns.put_setting(conn, p.account_id, slug, body, config)
    except (ValidationError, Invalid, RuleViolation) as exc:
        return _refused(p, slug, values, exc, saved is not None)
    secret = out.get("signing_secret")
    return p.done(f"/partner/event-notifications/{slug}", p.gettext("Saved."),
                  warnings=[p.say(known(w)) for w in warnings],
                  sealed={"secret": secret} if secret else None)


@router.post("/{slug}/test")
def test(slug: str, request: Request, sent: Form) -> Response:
    """Send the form as it stands (saved or not) with sample values; the result is shown on
    the edit form this redirects to, with the form as it stood."""
    p, values, saved = _sent_form(request, sent, slug)
    config = request.app.state.settings
    if not values["url"].strip() and saved is None:
        return _edit(p, slug, values, status=422, saved_exists=False, errors={
            "url": p.gettext("URL: enter the address of your server, e.g. "
                             "https://example.com/postback")})
    try:
        overrides = SettingTestIn.model_validate({
            "url": values["url"].strip() or None, "method": values["method"] or None,
            "body_format": values["body_format"] or None,
            "body": values["body"] if values["method"] == "POST" else None})
        with reader(request.app.state.db).begin() as conn:
            setting, compiled, sample, event_id = test_tool.prepare(
                conn, p.account_id, slug, overrides, config.sealer)
    except (ValidationError, Invalid, RuleViolation) as exc:
        return _refused(p, slug, values, exc, saved is not None)
    try:
        result = _lane(request).send(config, setting, compiled, sample, event_id)
    except Busy as exc:
        return _edit(p, slug, values, status=429, errors={"form": _busy(p, exc)},
                     saved_exists=saved is not None)
    return p.done(f"/partner/event-notifications/{slug}#test-result",
                  result=_result(p, result, setting),
                  values={k: v for k, v in values.items() if k != "headers"},
                  sealed={"headers": values["headers"]})


@router.post("/{slug}/preview")
def preview(slug: str, request: Request, data: JsonBody) -> Response:
    """The exact request for sample values, as the form stands (JSON, for the live
    preview); the CSRF token comes in the ``X-CSRF-Token`` header."""
    p = page(request, "partner")
    assert p.session is not None
    if request.headers.get("x-csrf-token") != p.session.csrf_token:
        return JSONResponse({"error": "csrf"}, status_code=403)
    kind = ns.TYPES.get(slug)
    if kind is None:
        return JSONResponse({"error": "unknown type"}, status_code=404)
    if not isinstance(data, dict):  # NOT_JSON included
        return JSONResponse({"error": "send a JSON object: url, method, body_format, body"},
                            status_code=400)
    method = "POST" if data.get("method") == "POST" else "GET"
    try:
        body_format = BodyFormat(data.get("body_format") or "json")
    except ValueError:
        body_format = BodyFormat.JSON
    url, body = str(data.get("url", "")), str(data.get("body", ""))
    try:
        compiled = ns.checked_setting(slug, url, method, body_format.value,
                                      body if method == "POST" else "")
    except TemplateError as exc:
        return JSONResponse({"problems": [
            {**x, "message": p.say(refusal(str(x["message"]), plain=True)[1])}
            for x in ns.problems_out(exc)]})
    url, rendered_body, headers = test_tool.rendered(
        method, body_format.value, compiled, test_tool.sample_values(slug, uuid7()))
    return JSONResponse({"request": {"method": method, "url": url, "headers": headers,
                                     "body": rendered_body}})


@router.post("/{slug}/signing-secret/rotate")
def rotate(slug: str, request: Request, sent: Form) -> Response:
    p = page(request, "partner")
    _type_or_404(p, slug)
    p.form(sent)
    config = request.app.state.settings
    try:
        with request.app.state.db.begin() as conn:
            out = ns.rotate_signing_secret(conn, p.account_id, slug, 86400, config,
                                           datetime.now(UTC))
    except NotFound:
        raise Forbidden(p.gettext("There is no such postback."), 404) from None
    except (Invalid, RuleViolation) as exc:
        raise Forbidden(p.refusal_text(exc), 409) from None
    secret = out.get("signing_secret")
    return p.done(f"/partner/event-notifications/{slug}",
                  p.gettext("A new signing secret was made; the previous one signs beside "
                            "it for 24 hours."),
                  sealed={"secret": secret} if secret else None)
