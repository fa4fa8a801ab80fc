"""Partner: Deliveries. Filter, read every attempt, resend, recover failed since a time,
replay a window (succeeded ones too) with each replay's progress, and a chart of the last
seven days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup
from pydantic import ValidationError

from postback.core.lifecycle import RuleViolation
from postback.db.engine import reader
from postback.models import ReplayIn
from postback.services import deliveries as service
from postback.services import notification_settings as ns
from postback.services import replay as replays
from postback.services import rollup
from postback.services.errors import Invalid, NotFound
from postback.web.chart import hourly_svg
from postback.web.pages import EMPTY, Filled, Forbidden, Form, Id, Page, page, utc_input

router = APIRouter(prefix="/partner/deliveries", include_in_schema=False)
STATUSES = ("pending", "held", "succeeded", "failed")
TRIGGERS = ("TRACKED", "MODIFIED", "REVERSED", "LOCKED", "PAID", "CLEARED",
            "INQUIRY_CREATED", "INQUIRY_RESOLVED", "ADDED", "UPDATED", "REMOVED")


@router.get("")
def deliveries(request: Request, type: str = "", trigger: str = "", status: str = "",
               since: str = "", until: str = "", action_id: str = "",
               cursor: str = "") -> Response:
    return _list(page(request, "partner"), type=type, trigger=trigger, status=status,
                 since=since, until=until, action_id=action_id, cursor=cursor)


def _list(p: Page, status_code: int = 200, filled: Filled = EMPTY, type: str = "",
          trigger: str = "", status: str = "", since: str = "", until: str = "",
          action_id: str = "", cursor: str = "") -> Response:
    filters = {"type": type if type in ns.TYPES else "",
               "trigger": trigger if trigger in TRIGGERS else "",
               "status": status if status in STATUSES else "",
               "since": since if utc_input(since) else "",
               "until": until if utc_input(until) else "",
               "action_id": action_id if action_id.isdigit() else ""}
    now = datetime.now(UTC)
    with reader(p.request.app.state.db).begin() as conn:
        found = service.list_deliveries(
            conn, p.account_id, status=filters["status"] or None,
            trigger=filters["trigger"] or None, type=filters["type"] or None,
            action_id=int(filters["action_id"]) if filters["action_id"] else None,
            since=utc_input(filters["since"]), until=utc_input(filters["until"]),
            cursor=int(cursor) if cursor.isdigit() else None, limit=50)
        latencies = service.last_latencies(conn, [d["id"] for d in found["items"]])
        # the chart's 168 hours, the current one last: its totals count what it draws
        first_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=7 * 24 - 1)
        counts = rollup.hourly_outcomes(conn, p.account_id, first_hour)
        recent = replays.list_replays(conn, p.account_id, limit=5)["items"]
    for r in recent:
        r["bar"] = Markup(_progress_bar(r, p.gettext(
            "Replay %(id)s: %(s)s delivered, %(f)s failed, %(p)s waiting, %(h)s held, of "
            "%(n)s", id=r["id"], s=r["succeeded"], f=r["failed"], p=r["pending"],
            h=r["held"], n=r["replayed"])))
    totals = {k: sum(c.get(k, 0) for c in counts.values())
              for k in ("delivered", "retrying", "failed")}
    label = p.gettext("Deliveries per hour over the last 7 days: %(d)s delivered, "
                      "%(r)s retrying, %(f)s failed", d=totals["delivered"],
                      r=totals["retrying"], f=totals["failed"])
    chart = Markup(hourly_svg(counts, now, 7 * 24, label))
    query = urlencode({k: v for k, v in filters.items() if v})
    return p.render("partner/deliveries.html", status=status_code, items=found["items"],
                    latencies=latencies, next_cursor=found["next_cursor"], filters=filters,
                    query=query, types=list(ns.TYPES.values()), triggers=TRIGGERS,
                    statuses=STATUSES, chart=chart, totals=totals, filled=filled,
                    replays=recent)


#: a replay's deliveries by state, as the chart colours them (held: grey)
BAR_COLOURS = (("succeeded", "#2e8b57"), ("failed", "#c0392b"), ("pending", "#d99a00"),
               ("held", "#9aa3ad"))
BAR_WIDTH = 240


def _progress_bar(r: dict[str, Any], label: str) -> str:
    """One replay's deliveries as a stacked bar (an SVG: no inline style, which the CSP
    refuses), read out by its label."""
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{BAR_WIDTH}" height="12" '
             f'viewBox="0 0 {BAR_WIDTH} 12" role="img" aria-label="{escape(label)}">',
             f'<rect x="0" y="0" width="{BAR_WIDTH}" height="12" fill="#e8ebef"/>']
    x = 0.0
    for status, colour in BAR_COLOURS:
        n = r[status]
        if not n or not r["replayed"]:
            continue
        w = BAR_WIDTH * n / r["replayed"]
        parts.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="12" '
                     f'fill="{colour}"><title>{status}: {n}</title></rect>')
        x += w
    parts.append("</svg>")
    return "".join(parts)


def _delivery(p: Page, delivery_id: int, status: int = 200, error: str | None = None
              ) -> Response:
    try:
        with reader(p.request.app.state.db).begin() as conn:
            found = service.get_delivery(conn, p.account_id, delivery_id)
    except NotFound:
        raise Forbidden(p.gettext("There is no such delivery."), 404) from None
    return p.render("partner/delivery.html", status=status, d=found, error=error)


@router.get("/{delivery_id}")
def delivery(delivery_id: Id, request: Request) -> Response:
    return _delivery(page(request, "partner"), delivery_id)


@router.post("/{delivery_id}/resend")
def resend(delivery_id: Id, request: Request, sent: Form) -> Response:
    """Queue it again, then show it (Post/Redirect/Get: a reload sends nothing more)."""
    p = page(request, "partner")
    p.form(sent)
    try:
        with request.app.state.db.begin() as conn:
            service.resend_delivery(conn, p.account_id, delivery_id, datetime.now(UTC))
    except NotFound:
        raise Forbidden(p.gettext("There is no such delivery."), 404) from None
    except RuleViolation as exc:  # held, or being sent right now: nothing changed
        return _delivery(p, delivery_id, exc.status, p.refusal_text(exc))
    request.app.state.wake()
    return p.done(f"/partner/deliveries/{delivery_id}", p.gettext(
        "Delivery %(id)s queued again: it is sent now, with the same event id.",
        id=delivery_id))


@router.post("/recover")
def recover(request: Request, sent: Form) -> Response:
    p = page(request, "partner")
    form = p.form(sent)
    since = utc_input(form.get("since"))
    type = form.get("type") or None
    if since is None:
        filled = Filled("recover", form, {"since": p.gettext(
            "Choose the time to recover failed deliveries from.")})
        return _list(p, 422, filled)
    count = service.recover_failed(request.app.state.db, datetime.now(UTC), since=since,
                                   type=type if type in ns.TYPES else None,
                                   partner_id=p.account_id)
    request.app.state.wake()
    return p.done("/partner/deliveries", p.gettext(
        "%(n)s failed deliveries were queued again.", n=count))


REPLAY_FIELDS = ("since", "until", "type", "url")


@router.post("/replay")
def replay(request: Request, sent: Form) -> Response:
    """Replay a window (Post/Redirect/Get: a reload sends nothing more, and the same
    request within 24 hours is the same replay anyway)."""
    p = page(request, "partner")
    form = p.form(sent)
    since, until = utc_input(form.get("since")), utc_input(form.get("until"))
    problems: dict[str, str] = {}
    if since is None:
        problems["since"] = p.gettext("Choose the time to replay notifications from.")
    if form.get("until") and until is None:
        problems["until"] = p.gettext("Write the end as a date and time, or leave it empty.")
    if since is None or problems:
        return _list(p, 422, Filled("replay", form, problems, REPLAY_FIELDS))
    try:
        body = ReplayIn(since=since, until=until, type=form.get("type") or None,
                        url=(form.get("url") or "").strip() or None)
        req = replays.ReplayRequest(body.since, body.until, body.type, body.url)
        warnings = replays.check_request(req, request.app.state.settings)
    except (ValidationError, Invalid) as exc:
        return _list(p, 422, Filled("replay", form, p.refusal(exc), REPLAY_FIELDS))
    out, new = replays.replay_deliveries(request.app.state.db, p.account_id, req,
                                         datetime.now(UTC))
    request.app.state.wake()
    if not new:
        notice = p.gettext("You asked for this same replay (%(id)s) less than 24 hours ago: "
                           "nothing was sent again.", id=out["id"])
    elif out["skipped"]:
        notice = p.gettext("Replay %(id)s: %(n)s notifications are sent again with their "
                           "event ids; %(s)s were skipped because their postback was "
                           "deleted.", id=out["id"], n=out["replayed"], s=out["skipped"])
    else:
        notice = p.gettext("Replay %(id)s: %(n)s notifications are sent again with their "
                           "event ids.", id=out["id"], n=out["replayed"])
    return p.done("/partner/deliveries", notice, warnings=warnings)
