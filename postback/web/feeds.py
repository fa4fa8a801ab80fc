"""Partner: Data Feeds. The partner's scheduled files (``services/feeds.py``): a list that
says what each feed is in words, with its last run and the next; the form to create and
edit one (content, schedule, window, format, columns, destination); Run now; the runs of a
feed with their status, figures and the destination's answer; the download of a run's
file with the session (never the API key); Test connection for SFTP; Delete, confirmed.

The form is the API's ``FeedIn`` built from the posted fields, refused forms are shown
again as typed with each problem beside its field (secrets excepted: a password or a
private key is never put back in a page), and every change answers with a redirect
(Post/Redirect/Get).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from postback.core.feed_schedule import WEEKDAYS, ScheduleError, parse_schedule
from postback.core.lifecycle import RuleViolation
from postback.core.tokens import ACTION_TOKENS, CATALOG_TOKENS
from postback.db.engine import reader
from postback.models import FeedIn
from postback.services import feeds, programs
from postback.services.errors import Invalid, NotFound
from postback.web.pages import SECURITY_HEADERS, Filled, Forbidden, Form, Id, Page, page

router = APIRouter(prefix="/partner/feeds", include_in_schema=False)

FORMATS = ("csv", "tab", "pipe", "xml", "jsonl")
EVERY = ("hourly", "daily", "weekly", "monthly")
#: what a cashback or loyalty site reconciles its books by (ticked on a new feed)
DEFAULT_COLUMNS = {
    "actions": ("ActionId", "Oid", "Status", "Amount", "Payout", "Currency", "EventDate",
                "SubId1", "Trigger", "Sequence", "ChangeId"),
    "catalog": ("CatalogItemId", "Name", "CurrentPrice", "Currency", "StockAvailability",
                "Url", "ChangeType", "ChangeId"),
}
MEANINGS = {t.name: t.meaning for t in (*CATALOG_TOKENS, *ACTION_TOKENS)}
#: the form's fields, for Filled: a problem about any other is shown above the form
FIELDS = ("name", "content", "program_id", "every", "minute", "at", "weekday", "month_day",
          "time_zone", "window", "window_days", "format", "gzip", "header", "columns",
          "kind", "sftp_host", "sftp_port", "sftp_username", "sftp_auth", "sftp_password",
          "sftp_private_key", "sftp_directory", "sftp_host_key", "email_to", "email_attach",
          "enabled")
#: the model's field paths as the form's fields
NAMES = {
    "schedule.every": "every", "schedule.day": "month_day", "schedule.time_zone": "time_zone",
    "schedule": "every", "window.days": "window_days", "columns": "columns",
    "destination": "kind", "destination.kind": "kind",
    **{f"destination{via}.{name}": field for via in ("", ".sftp")
       for name, field in (("host", "sftp_host"), ("port", "sftp_port"),
                           ("username", "sftp_username"), ("password", "sftp_password"),
                           ("private_key", "sftp_private_key"),
                           ("directory", "sftp_directory"), ("host_key", "sftp_host_key"))},
    **{f"destination{via}.{name}": field for via in ("", ".email")
       for name, field in (("to", "email_to"), ("attach", "email_attach"))},
}
SECRET_FIELDS = ("sftp_password", "sftp_private_key")


@cache
def time_zones() -> tuple[str, ...]:
    """Every IANA zone a feed may run in (the names people pick: Area/City, and UTC)."""
    from zoneinfo import available_timezones
    names = {z for z in available_timezones() if "/" in z and not z.startswith(
        ("Etc/", "SystemV/", "US/", "Canada/", "Mexico/", "Brazil/", "Chile/"))}
    return ("UTC", *sorted(names))


def _labels(p: Page) -> dict[str, str]:
    """The form's fields as a refusal names them (in the reader's words)."""
    return {"name": p.gettext("Name"), "content": p.gettext("Content"),
            "program_id": p.gettext("Program"), "every": p.gettext("Every"),
            "at": p.gettext("Time"), "day": p.gettext("Day"),
            "time_zone": p.gettext("Time zone"), "window": p.gettext("Window"),
            "days": p.gettext("Days"), "format": p.gettext("Format"),
            "gzip": "gzip", "header": p.gettext("Header row"),
            "columns": p.gettext("Columns"), "destination": p.gettext("Destination"),
            "kind": p.gettext("Destination"), "host": p.gettext("Host"),
            "port": p.gettext("Port"), "username": p.gettext("Username"),
            "password": p.gettext("Password"), "private_key": p.gettext("Private key"),
            "directory": p.gettext("Directory"), "host_key": p.gettext("Host key"),
            "to": p.gettext("Email to"), "attach": p.gettext("Attach or link"),
            "enabled": p.gettext("On")}


# -- words -----------------------------------------------------------------------------------

def _program_names(p: Page) -> dict[int, str]:
    with reader(p.request.app.state.db).begin() as conn:
        return {e["program_id"]: e["program_name"]
                for e in programs.contracted_event_types(conn, p.account_id)}


def _weekday(p: Page, day: str) -> str:
    return {"monday": p.gettext("Monday"), "tuesday": p.gettext("Tuesday"),
            "wednesday": p.gettext("Wednesday"), "thursday": p.gettext("Thursday"),
            "friday": p.gettext("Friday"), "saturday": p.gettext("Saturday"),
            "sunday": p.gettext("Sunday")}.get(day, day)


def schedule_words(p: Page, s: Mapping[str, Any]) -> str:
    zone, at = s.get("time_zone") or "UTC", str(s.get("at") or "")
    if s["every"] == "hourly":
        return p.gettext("Every hour at %(minute)s minutes past (%(zone)s)",
                         minute=at.lstrip(":"), zone=zone)
    if s["every"] == "daily":
        return p.gettext("Daily at %(time)s (%(zone)s)", time=at, zone=zone)
    if s["every"] == "weekly":
        return p.gettext("Weekly on %(weekday)s at %(time)s (%(zone)s)",
                         weekday=_weekday(p, str(s.get("day"))), time=at, zone=zone)
    if s.get("day") == "last":
        return p.gettext("Monthly on the last day at %(time)s (%(zone)s)", time=at, zone=zone)
    return p.gettext("Monthly on day %(day)s at %(time)s (%(zone)s)", day=s.get("day"),
                     time=at, zone=zone)


def content_words(p: Page, f: Mapping[str, Any], names: Mapping[int, str]) -> str:
    program = names.get(f["program_id"]) or p.gettext("program %(id)s", id=f["program_id"])
    if f["content"] == "catalog":
        return p.gettext("Catalog of %(program)s", program=program)
    if f["program_id"] is None:
        return p.gettext("Actions of every program")
    return p.gettext("Actions of %(program)s", program=program)


def window_words(p: Page, f: Mapping[str, Any]) -> str:
    window = f.get("window")
    if f["content"] == "catalog" or window is None:
        return p.gettext("the whole catalog as it is now")
    if isinstance(window, dict):
        return p.gettext("each action changed in the last %(n)s days", n=window["days"])
    return p.gettext("the changes since the last run")


def format_words(p: Page, fmt: str, gzip: bool) -> str:
    name = {"csv": "CSV", "tab": p.gettext("TAB (tab-separated)"),
            "pipe": p.gettext("PIPE (|-separated)"), "xml": "XML",
            "jsonl": "JSON Lines"}.get(fmt, fmt)
    return p.gettext("%(format)s, gzipped", format=name) if gzip else name


def destination_words(p: Page, d: Mapping[str, Any]) -> str:
    if d["kind"] == "hosted":
        return p.gettext("Kept here for %(n)s days", n=d["retention_days"])
    if d["kind"] == "email":
        to = ", ".join(d["to"])
        return (p.gettext("Email to %(to)s, attached", to=to) if d["attach"]
                else p.gettext("Email to %(to)s, as a download link", to=to))
    return p.gettext("SFTP to %(host)s:%(port)s %(directory)s", host=d["host"],
                     port=d["port"], directory=d["directory"])


def when(text: str | None, zone_name: str) -> str:
    """An ISO instant as the feed's time zone reads it: ``2026-05-02 06:00``."""
    if not text:
        return ""
    from zoneinfo import ZoneInfo
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(
            ZoneInfo(zone_name))
    except (ValueError, KeyError):
        return text[:16].replace("T", " ")
    return at.strftime("%Y-%m-%d %H:%M")


def size_words(n: int | None) -> str:
    if n is None:
        return "—"
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"


def duration_words(p: Page, ms: int | None) -> str:
    if ms is None:
        return "—"
    if ms < 1000:
        return p.gettext("%(n)s ms", n=ms)
    if ms < 120_000:
        return p.gettext("%(n)s s", n=f"{ms / 1000:.1f}")
    return p.gettext("%(n)s min", n=f"{ms / 60000:.1f}")


def status_words(p: Page, run: Mapping[str, Any]) -> str:
    status = run["status"]
    if status == "queued":
        return p.gettext("Queued")
    if status == "running":
        if run.get("next_attempt_at"):
            return p.gettext("Delivery failed, trying again")
        return p.gettext("Running")
    if status == "succeeded":
        return p.gettext("Delivered")
    return p.gettext("Failed")


_KEPT = re.compile(r"kept for download until (\S+)")


def _answer(p: Page, answer: str | None, zone_name: str) -> str:
    """The destination's answer in the reader's words (a hosted file's in their zone)."""
    kept = _KEPT.fullmatch(answer or "")
    if kept:
        return p.gettext("kept here for download until %(time)s",
                         time=when(kept[1], zone_name))
    return p.said(answer)


def _run_view(p: Page, run: dict[str, Any], zone_name: str) -> dict[str, Any]:
    kept = bool(run["file_name"]) and run["produced_at"] is not None and \
        not run["file_deleted"]
    return {**run, "words": status_words(p, run),
            "scheduled": when(run["scheduled_for"], zone_name),
            "created": when(run["created_at"], zone_name),
            "started": when(run["started_at"], zone_name),
            "finished": when(run["finished_at"], zone_name),
            "retry_at": when(run["next_attempt_at"], zone_name),
            "expires": when(run["file_expires_at"], zone_name),
            "size": size_words(run["bytes"]),
            "took": duration_words(p, run["duration_ms"]),
            "said_error": p.said(run["error"]), "said_answer": _answer(p, run["answer"],
                                                                       zone_name),
            "kept": kept}


# -- the list ----------------------------------------------------------------------------------

@router.get("")
def feed_list(request: Request) -> Response:
    p = page(request, "partner")
    config = request.app.state.settings
    names = _program_names(p)
    rows = []
    with reader(request.app.state.db).begin() as conn:
        for f in feeds.list_feeds(conn, p.account_id, config):
            last = feeds.list_runs(conn, p.account_id, f["id"], config, limit=1)["items"]
            rows.append((f, last[0] if last else None))
    shown = []
    for f, last in rows:
        zone_name = f["schedule"].get("time_zone") or "UTC"
        shown.append({
            "feed": f, "title": f["name"] or content_words(p, f, names),
            "content": content_words(p, f, names), "schedule": schedule_words(p, f["schedule"]),
            "window": window_words(p, f), "format": format_words(p, f["format"], f["gzip"]),
            "destination": destination_words(p, f["destination"]),
            "next": when(f["next_run_at"], zone_name), "zone": zone_name,
            "last": _run_view(p, last, zone_name) if last else None})
    return p.render("partner/feeds.html", feeds=shown)


# -- the form ----------------------------------------------------------------------------------

def _default_zone(p: Page) -> str:
    return "Asia/Shanghai" if p.language == "zh" else "UTC"


def _values_of(f: Mapping[str, Any] | None, p: Page) -> dict[str, Any]:
    """A saved feed (or a new one) as the form's fields."""
    if f is None:
        return {"name": "", "content": "actions", "program_id": "", "every": "daily",
                "minute": "0", "at": "06:00", "weekday": "monday", "month_day": "1",
                "time_zone": _default_zone(p), "window": "since_last_run",
                "window_days": "7", "format": "csv", "gzip": False, "header": True,
                "columns": list(DEFAULT_COLUMNS["actions"]),
                "columns_catalog": list(DEFAULT_COLUMNS["catalog"]),
                "kind": "hosted", "sftp_host": "", "sftp_port": "22", "sftp_username": "",
                "sftp_auth": "password", "sftp_directory": ".", "sftp_host_key": "",
                "email_to": "", "email_attach": "attach", "enabled": True}
    s, d, window = f["schedule"], f["destination"], f["window"]
    values = _values_of(None, p)
    values.update({
        "name": f["name"], "content": f["content"],
        "program_id": "" if f["program_id"] is None else str(f["program_id"]),
        "every": s["every"], "time_zone": s["time_zone"],
        "window": "days" if isinstance(window, dict) else "since_last_run",
        "window_days": str(window["days"]) if isinstance(window, dict) else "7",
        "format": f["format"], "gzip": f["gzip"], "header": f["header"],
        "kind": d["kind"], "enabled": f["enabled"]})
    if s["every"] == "hourly":
        values["minute"] = str(int(str(s["at"]).lstrip(":") or 0))
    else:
        values["at"] = s["at"]
    if s["every"] == "weekly":
        values["weekday"] = s["day"]
    if s["every"] == "monthly":
        values["month_day"] = str(s["day"])
    values["columns" if f["content"] == "actions" else "columns_catalog"] = list(f["columns"])
    if d["kind"] == "sftp":
        values.update({"sftp_host": d["host"], "sftp_port": str(d["port"]),
                       "sftp_username": d["username"], "sftp_directory": d["directory"],
                       "sftp_auth": "key" if d["private_key_set"] and not d["password_set"]
                       else "password"})
    if d["kind"] == "email":
        values.update({"email_to": ", ".join(d["to"]),
                       "email_attach": "attach" if d["attach"] else "link"})
    return values


def _posted_values(form: Mapping[str, str], lists: Mapping[str, list[str]]
                   ) -> dict[str, Any]:
    """The form as sent, to show again (the secrets left out: never put back in a page)."""
    values: dict[str, Any] = {k: form.get(k, "") for k in FIELDS if k not in SECRET_FIELDS}
    values.update({"gzip": form.get("gzip") == "on", "header": form.get("header") == "on",
                   "enabled": form.get("enabled") == "on",
                   "forget_host_key": form.get("forget_host_key") == "on",
                   "columns": list(lists.get("columns", [])),
                   "columns_catalog": list(lists.get("columns_catalog", []))})
    for key, default in (("content", "actions"), ("every", "daily"), ("kind", "hosted"),
                         ("window", "since_last_run"), ("sftp_auth", "password"),
                         ("email_attach", "attach")):
        values[key] = values[key] or default
    values["typed_secret"] = any(form.get(k) for k in SECRET_FIELDS)
    return values


def _names(form: Mapping[str, str]) -> dict[str, str]:
    """The model's paths as this form's fields (the schedule's depend on its ``every``)."""
    every = form.get("every")
    return {**NAMES, "schedule.at": "minute" if every == "hourly" else "at",
            "schedule.day": "weekday" if every == "weekly" else "month_day"}


class _Refused(Exception):
    """A problem the form's own reading found (before the model): {field: message}."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors


def _feed_in(p: Page, form: Mapping[str, str], lists: Mapping[str, list[str]]) -> FeedIn:
    """The API's input from the posted form; what only the form can get wrong (a minute, a
    day of the month) is refused here, the rest by the model and the service."""
    content = form.get("content") or "actions"
    every = form.get("every") or "daily"
    problems: dict[str, str] = {}
    schedule: dict[str, Any] = {"every": every,
                                "time_zone": (form.get("time_zone") or "UTC").strip()}
    if every == "hourly":
        minute = (form.get("minute") or "0").strip()
        if not minute.isdigit() or not 0 <= int(minute) <= 59:
            problems["minute"] = p.gettext(
                "Minute past the hour: enter a whole number from 0 to 59, e.g. 15")
        else:
            schedule["at"] = f":{int(minute):02d}"
    else:
        schedule["at"] = (form.get("at") or "").strip()[:5]
        if every == "weekly":
            schedule["day"] = form.get("weekday") or ""
        elif every == "monthly":
            day = (form.get("month_day") or "").strip()
            schedule["day"] = int(day) if day.isdigit() else day
    kind = form.get("kind") or "hosted"
    destination: dict[str, Any] = {"kind": kind}
    if kind == "sftp":
        destination.update({
            "host": form.get("sftp_host", "").strip(),
            "port": form.get("sftp_port", "").strip() or 22,
            "username": form.get("sftp_username", "").strip(),
            "directory": form.get("sftp_directory", "").strip() or "."})
        if form.get("sftp_auth") == "key":
            if form.get("sftp_private_key", "").strip():
                destination["private_key"] = form["sftp_private_key"].strip() + "\n"
        elif form.get("sftp_password"):
            destination["password"] = form["sftp_password"]
        if form.get("forget_host_key") == "on":
            destination["host_key"] = None
        elif form.get("sftp_host_key", "").strip():
            destination["host_key"] = form["sftp_host_key"].strip()
    elif kind == "email":
        to = [a.strip() for a in form.get("email_to", "").replace(";", ",").replace(
            "\n", ",").split(",") if a.strip()]
        if not to:
            problems["email_to"] = p.gettext(
                "Email to: enter at least one address, e.g. feeds@example.com")
        destination.update({"to": to, "attach": form.get("email_attach") != "link"})
    body: dict[str, Any] = {
        "name": form.get("name", "").strip(), "content": content,
        "program_id": form.get("program_id") or None, "schedule": schedule,
        "format": form.get("format") or "csv", "gzip": form.get("gzip") == "on",
        "header": form.get("header") == "on",
        "columns": list(lists.get("columns" if content == "actions" else "columns_catalog",
                                  [])),
        "destination": destination, "enabled": form.get("enabled") == "on"}
    if content == "actions":
        if form.get("window") == "days":
            days = (form.get("window_days") or "").strip()
            body["window"] = {"days": int(days) if days.isdigit() else days}
        else:
            body["window"] = "since_last_run"
    # every problem at once: the form's own, the model's, and the schedule's (the service
    # names only the first it meets)
    names, labels = _names(form), _labels(p)
    found: FeedIn | None = None
    try:
        found = FeedIn.model_validate(body)
    except ValidationError as exc:
        problems = {**p.refusal(exc, names, labels), **problems}
    try:
        parse_schedule(every, schedule.get("at"), schedule.get("day"), schedule["time_zone"])
    except ScheduleError as exc:
        for key, said in p.refusal(Invalid(f"schedule.{exc.field}", exc.message), names,
                                   labels).items():
            problems.setdefault(key, said)
    if problems or found is None:
        raise _Refused(problems)
    return found


def _column_choices(content: str, first: list[str]) -> list[dict[str, Any]]:
    """The columns the form offers: the feed's own in its order, then the rest in the
    registry's order."""
    allowed = feeds.column_choices(content)
    order = [c for c in first if c in allowed] + [c for c in allowed if c not in first]
    return [{"name": c, "meaning": MEANINGS.get(c, "")} for c in order]


def _form(p: Page, values: dict[str, Any], saved: dict[str, Any] | None, status: int = 200,
          errors: Mapping[str, Any] | None = None, **extra: Any) -> Response:
    config = p.request.app.state.settings
    names = _program_names(p)
    program_id = values.get("program_id")
    if program_id and str(program_id).isdigit() and int(program_id) not in names:
        names = {**names, int(program_id): p.gettext("program %(id)s", id=program_id)}
    filled = Filled("feed", values, errors or {}, FIELDS)
    zones = time_zones()
    if values.get("time_zone") and values["time_zone"] not in zones:
        zones = (values["time_zone"], *zones)  # as typed, to show beside its problem
    return p.render(
        "partner/feed_edit.html", status=status, values=values, saved=saved, f=filled,
        programs=names, zones=zones, formats=FORMATS, every=EVERY, weekdays=[
            (d, _weekday(p, d)) for d in WEEKDAYS],
        format_names={k: format_words(p, k, False) for k in FORMATS},
        columns=_column_choices("actions", values.get("columns") or []),
        columns_catalog=_column_choices("catalog", values.get("columns_catalog") or []),
        email_available=bool(config.smtp_host), retention_days=config.feed_retention_days,
        **extra)


def _own(p: Page, feed_id: int) -> dict[str, Any]:
    try:
        with reader(p.request.app.state.db).begin() as conn:
            return feeds.get_feed(conn, p.account_id, feed_id, p.request.app.state.settings)
    except NotFound:
        raise Forbidden(p.gettext("There is no such data feed."), 404) from None


@router.get("/new")
def new_feed(request: Request) -> Response:
    p = page(request, "partner")
    return _form(p, _values_of(None, p), None)


def _save(request: Request, sent: Any, feed_id: int | None) -> Response:
    p = page(request, "partner")
    saved = _own(p, feed_id) if feed_id is not None else None
    form = p.form(sent)
    values = _posted_values(form, sent.lists)
    config = request.app.state.settings
    try:
        body = _feed_in(p, form, sent.lists)
        warnings = feeds.vet_destination(body, config)
        with request.app.state.db.begin() as conn:
            if feed_id is None:
                out = feeds.create_feed(conn, p.account_id, body, config)
            else:
                out = feeds.update_feed(conn, p.account_id, feed_id, body, config)
    except _Refused as exc:
        return _form(p, values, saved, 422, exc.errors)
    except NotFound as exc:
        if str(exc).startswith("feed"):  # deleted meanwhile
            raise Forbidden(p.gettext("There is no such data feed."), 404) from None
        return _form(p, values, saved, 422, p.refusal(exc, _names(form), _labels(p)))
    except (Invalid, RuleViolation) as exc:
        return _form(p, values, saved, 422, p.refusal(exc, _names(form), _labels(p)))
    notice = (p.gettext("Data feed %(id)s created.", id=out["id"]) if feed_id is None
              else p.gettext("Data feed %(id)s saved.", id=out["id"]))
    return p.done("/partner/feeds", notice, warnings=[p.said(w) for w in warnings])


@router.post("")
def create(request: Request, sent: Form) -> Response:
    return _save(request, sent, None)


@router.get("/{feed_id}")
def edit(feed_id: Id, request: Request) -> Response:
    p = page(request, "partner")
    saved = _own(p, feed_id)
    return _form(p, _values_of(saved, p), saved, test=p.flash.get("test"))


@router.post("/{feed_id}")
def update(feed_id: Id, request: Request, sent: Form) -> Response:
    return _save(request, sent, feed_id)


# -- test connection, run now, delete -----------------------------------------------------------

@router.post("/{feed_id}/test")
def test_connection(feed_id: Id, request: Request, sent: Form) -> Response:
    """Connect to the saved SFTP server now (no transaction held meanwhile); the result is
    shown on the edit form this redirects to."""
    p = page(request, "partner")
    p.form(sent)
    try:
        out = feeds.test_destination(request.app.state.db, p.account_id, feed_id,
                                     request.app.state.settings)
    except NotFound:
        raise Forbidden(p.gettext("There is no such data feed."), 404) from None
    except Invalid as exc:
        raise Forbidden(p.refusal_text(exc, labels=_labels(p)), 422) from None
    test = {"ok": out["ok"], "answer": p.said(out["answer"])}
    return p.done(f"/partner/feeds/{feed_id}#test-result", test=test)


@router.post("/{feed_id}/run")
def run_now(feed_id: Id, request: Request, sent: Form) -> Response:
    p = page(request, "partner")
    p.form(sent)
    try:
        with request.app.state.db.begin() as conn:
            out = feeds.request_run(conn, p.account_id, feed_id)
    except NotFound:
        raise Forbidden(p.gettext("There is no such data feed."), 404) from None
    notice = (p.gettext("Run %(id)s is queued: it starts within a minute.", id=out["run_id"])
              if out["created"] else
              p.gettext("Run %(id)s was already waiting to start: it makes the next file.",
                        id=out["run_id"]))
    return p.done(f"/partner/feeds/{feed_id}/runs", notice)


@router.get("/{feed_id}/delete")
def confirm_delete(feed_id: Id, request: Request) -> Response:
    p = page(request, "partner")
    saved = _own(p, feed_id)
    names = _program_names(p)
    return p.render("partner/feed_delete.html", feed=saved,
                    title=saved["name"] or content_words(p, saved, names),
                    schedule=schedule_words(p, saved["schedule"]),
                    destination=destination_words(p, saved["destination"]))


@router.post("/{feed_id}/delete")
def delete(feed_id: Id, request: Request, sent: Form) -> Response:
    p = page(request, "partner")
    p.form(sent)
    try:
        with request.app.state.db.begin() as conn:
            feeds.delete_feed(conn, p.account_id, feed_id)
    except NotFound:
        raise Forbidden(p.gettext("There is no such data feed."), 404) from None
    return p.done("/partner/feeds", p.gettext(
        "Data feed %(id)s deleted, with its runs and their files.", id=feed_id))


# -- runs and files ----------------------------------------------------------------------------

@router.get("/{feed_id}/runs")
def runs(feed_id: Id, request: Request, cursor: str = "") -> Response:
    p = page(request, "partner")
    config = request.app.state.settings
    try:
        with reader(request.app.state.db).begin() as conn:
            saved = feeds.get_feed(conn, p.account_id, feed_id, config)
            found = feeds.list_runs(conn, p.account_id, feed_id, config,
                                    int(cursor) if cursor.isdigit() and
                                    0 < int(cursor) < 2**31 else None, 50)
    except NotFound:
        raise Forbidden(p.gettext("There is no such data feed."), 404) from None
    zone_name = saved["schedule"].get("time_zone") or "UTC"
    names = _program_names(p)
    return p.render("partner/feed_runs.html", feed=saved, zone=zone_name,
                    title=saved["name"] or content_words(p, saved, names),
                    schedule=schedule_words(p, saved["schedule"]),
                    destination=destination_words(p, saved["destination"]),
                    runs=[_run_view(p, r, zone_name) for r in found["items"]],
                    next_cursor=found["next_cursor"])


@router.get("/{feed_id}/runs/{run_id}/file")
def download(feed_id: Id, run_id: Id, request: Request) -> Response:
    """The run's file, streamed a chunk at a time, for the signed-in partner."""
    p = page(request, "partner")
    try:
        with reader(request.app.state.db).begin() as conn:
            stored = feeds.run_file(conn, p.account_id, feed_id, run_id)
    except NotFound:
        raise Forbidden(p.gettext("There is no such file."), 404) from None
    except RuleViolation as exc:  # not made yet (409), or deleted after retention (410)
        raise Forbidden(p.refusal_text(exc), exc.status) from None
    headers = {**SECURITY_HEADERS,
               "Content-Disposition": f'attachment; filename="{stored.file_name}"',
               "Content-Length": str(stored.size), "Cache-Control": "private, no-store"}
    return StreamingResponse(feeds.file_bytes(request.app.state.db, stored),
                             media_type=stored.content_type, headers=headers)

