"""Partner: Actions (status, payout, dates) and Inquiries (create, close, read the
resolution; for cashback and loyalty partners)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from postback.core.lifecycle import RuleViolation
from postback.db.engine import reader
from postback.models import InquiryIn
from postback.services import inquiries, ledger, programs
from postback.services import notification_settings as ns
from postback.services.errors import Invalid, NotFound
from postback.web.pages import EMPTY, Filled, Forbidden, Form, Id, Page, page, utc_input

router = APIRouter(prefix="/partner", include_in_schema=False)
ACTION_STATUSES = ("PENDING", "APPROVED", "REVERSED")
INQUIRY_TYPES = ("UNTRACKED", "INCORRECT", "DECLINED")


@router.get("/actions")
def actions(request: Request, status: str = "", cursor: str = "") -> Response:
    p = page(request, "partner")
    with reader(request.app.state.db).begin() as conn:
        found = ledger.list_actions(conn, partner_id=p.account_id,
                                    status=status if status in ACTION_STATUSES else None,
                                    cursor=int(cursor) if cursor.isdigit() else None, limit=50)
    return p.render("partner/actions.html", items=found["items"],
                    next_cursor=found["next_cursor"], chosen=status,
                    statuses=ACTION_STATUSES)


INQUIRY_FIELDS = ("program_id", "inquiry_type", "oid", "transaction_date",
                  "transaction_amount", "expected_payout", "customer_id", "notes")


def _inquiries(p: Page, status: int = 200, filled: Filled = EMPTY,
               error: str | None = None) -> Response:
    with reader(p.request.app.state.db).begin() as conn:
        unavailable = None
        try:
            ns.check_available(conn, p.account_id, "action-inquiry")
        except RuleViolation as exc:
            unavailable = p.refusal_text(exc)
        found = inquiries.list_inquiries(conn, partner_id=p.account_id, limit=100)
        contracted = {e["program_id"]: e["program_name"]
                      for e in programs.contracted_event_types(conn, p.account_id)}
    return p.render("partner/inquiries.html", status=status, items=found["items"],
                    unavailable=unavailable, programs=contracted, types=INQUIRY_TYPES,
                    filled=filled, error=error)


@router.get("/inquiries")
def inquiry_list(request: Request) -> Response:
    return _inquiries(page(request, "partner"))


@router.post("/inquiries")
def create_inquiry(request: Request, sent: Form) -> Response:
    p = page(request, "partner")
    form = p.form(sent)
    try:
        body = InquiryIn.model_validate({
            "program_id": form.get("program_id"), "inquiry_type": form.get("inquiry_type"),
            "oid": form.get("oid", "").strip(),
            "transaction_date": utc_input(form.get("transaction_date")) or
            form.get("transaction_date", ""),  # unreadable: the model names the field
            "transaction_amount": form.get("transaction_amount", "").strip(),
            "expected_payout": form.get("expected_payout", "").strip(),
            "customer_id": form.get("customer_id", "").strip() or None,
            "notes": form.get("notes", "").strip() or None})
        with request.app.state.db.begin() as conn:
            made = inquiries.create_inquiry(conn, p.account_id, body, datetime.now(UTC))
    except (ValidationError, Invalid, RuleViolation, NotFound) as exc:
        return _inquiries(p, 422, Filled("inquiry", form, p.refusal(exc), INQUIRY_FIELDS))
    request.app.state.wake()
    return p.done("/partner/inquiries", p.gettext(
        "Inquiry %(id)s sent to the brand.", id=made["id"]))


@router.post("/inquiries/{inquiry_id}/close")
def close_inquiry(inquiry_id: Id, request: Request, sent: Form) -> Response:
    p = page(request, "partner")
    p.form(sent)
    try:
        with request.app.state.db.begin() as conn:
            inquiries.close_inquiry(conn, p.account_id, inquiry_id, datetime.now(UTC))
    except NotFound:
        raise Forbidden(p.gettext("There is no such inquiry."), 404) from None
    except RuleViolation as exc:  # no longer open: nothing changed
        return _inquiries(p, exc.status, error=p.refusal_text(exc))
    request.app.state.wake()
    return p.done("/partner/inquiries", p.gettext("Inquiry %(id)s closed.", id=inquiry_id))
