"""Partner: Deliveries. Filter, read every attempt, resend, recover failed since a time,
and a chart of the last seven days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup

from postback.core.lifecycle import RuleViolation
from postback.db.engine import reader
from postback.services import deliveries as service
from postback.services import notification_settings as ns
from postback.services.errors import NotFound
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
        counts = service.hourly_outcomes(conn, p.account_id, now - timedelta(days=7))
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
                    statuses=STATUSES, chart=chart, totals=totals, filled=filled)


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
