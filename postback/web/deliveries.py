"""Partner: Deliveries. Filter, read every attempt, resend, recover failed since a time,
and a chart of the last seven days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
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
from postback.web.pages import Forbidden, Form, page, redirect, utc_input

router = APIRouter(prefix="/partner/deliveries", include_in_schema=False)
STATUSES = ("pending", "held", "succeeded", "failed")
TRIGGERS = ("TRACKED", "MODIFIED", "REVERSED", "LOCKED", "PAID", "CLEARED",
            "INQUIRY_CREATED", "INQUIRY_RESOLVED", "ADDED", "UPDATED", "REMOVED")


@router.get("")
def deliveries(request: Request, type: str = "", trigger: str = "", status: str = "",
               since: str = "", until: str = "", action_id: str = "",
               cursor: str = "") -> Response:
    p = page(request, "partner")
    filters = {"type": type if type in ns.TYPES else "",
               "trigger": trigger if trigger in TRIGGERS else "",
               "status": status if status in STATUSES else "",
               "since": since if utc_input(since) else "",
               "until": until if utc_input(until) else "",
               "action_id": action_id if action_id.isdigit() else ""}
    now = datetime.now(UTC)
    with reader(request.app.state.db).begin() as conn:
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
    return p.render("partner/deliveries.html", items=found["items"], latencies=latencies,
                    next_cursor=found["next_cursor"], filters=filters, query=query,
                    types=list(ns.TYPES.values()), triggers=TRIGGERS, statuses=STATUSES,
                    chart=chart, totals=totals, recovered=request.query_params.get("recovered"))


@router.get("/{delivery_id}")
def delivery(delivery_id: int, request: Request) -> Response:
    p = page(request, "partner")
    try:
        with reader(request.app.state.db).begin() as conn:
            found = service.get_delivery(conn, p.account_id, delivery_id)
    except NotFound:
        raise Forbidden(p.gettext("There is no such delivery."), 404) from None
    return p.render("partner/delivery.html", d=found, notice=None)


@router.post("/{delivery_id}/resend")
def resend(delivery_id: int, request: Request, sent: Form) -> Response:
    p = page(request, "partner")
    p.form(sent)
    try:
        with request.app.state.db.begin() as conn:
            found: dict[str, Any] = service.resend_delivery(conn, p.account_id, delivery_id,
                                                            datetime.now(UTC))
    except NotFound:
        raise Forbidden(p.gettext("There is no such delivery."), 404) from None
    except RuleViolation as exc:
        raise Forbidden(exc.message) from None
    request.app.state.wake()
    return p.render("partner/delivery.html", d=found,
                    notice=p.gettext("Queued again: it is sent now, with the same event id."))


@router.post("/recover")
def recover(request: Request, sent: Form) -> Response:
    p = page(request, "partner")
    form = p.form(sent)
    since = utc_input(form.get("since"))
    if since is None:
        raise Forbidden(p.gettext("Choose the time to recover failed deliveries from."))
    type = form.get("type") or None
    count = service.recover_failed(request.app.state.db, datetime.now(UTC), since=since,
                                   type=type if type in ns.TYPES else None,
                                   partner_id=p.account_id)
    request.app.state.wake()
    return redirect(f"/partner/deliveries?recovered={count}")
