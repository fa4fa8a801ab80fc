"""Action inquiries: partners claim missing commissions, brands (or their auto-approval
rules) resolve them; a VALID resolution creates the action. Each change notifies the
partner's Action Inquiry setting in the same transaction."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from postback.core.inquiries import (
    CLOSED,
    DECLINED,
    REJECT_REASONS,
    UNRESOLVED,
    VALID,
    AutoMode,
    InquiryPolicy,
    InquiryState,
)
from postback.core.lifecycle import RuleViolation, month_begin, month_end
from postback.core.values import format_date, format_money, units_problem
from postback.db.schema import contract, event_type, inquiry, inquiry_policy, program
from postback.models import ActionIn, InquiryIn, InquirySettingsIn, ResolveIn
from postback.services.errors import Invalid, NotFound
from postback.services.integrity import unique_violation
from postback.services.ledger import report_actions
from postback.services.notification_settings import check_available
from postback.services.outbox import enqueue_inquiry_events
from postback.services.paging import page

log = logging.getLogger("postback.inquiries")
CREATED, RESOLVED = "INQUIRY_CREATED", "INQUIRY_RESOLVED"


# -- program settings -------------------------------------------------------------------


def policy(conn: Connection, program_id: int) -> InquiryPolicy:
    row = conn.execute(select(inquiry_policy).where(
        inquiry_policy.c.program_id == program_id)).first()
    if row is None:
        return InquiryPolicy()
    return InquiryPolicy(row.deadline_days, AutoMode(row.auto_mode), row.auto_days,
                         row.max_expected_payout, row.monthly_cap, row.event_type_id)


def policy_out(p: InquiryPolicy) -> dict[str, Any]:
    return {"resolution_deadline_days": p.deadline_days, "auto_approval": {
        "mode": p.auto_mode.value, "days": p.auto_days,
        "max_expected_payout": format_money(p.max_expected_payout) or None,
        "monthly_cap": format_money(p.monthly_cap) or None, "event_type_id": p.event_type_id}}


def put_policy(conn: Connection, brand_id: int, program_id: int, body: InquirySettingsIn,
               now: datetime) -> dict[str, Any]:
    prog = conn.execute(select(program.c.currency).where(
        program.c.id == program_id, program.c.brand_id == brand_id)).first()
    if prog is None:
        raise NotFound("program")
    auto = body.auto_approval
    misfit = units_problem(prog.currency, {"max_expected_payout": auto.max_expected_payout,
                                           "monthly_cap": auto.monthly_cap})
    if misfit is not None:
        raise Invalid(f"auto_approval.{misfit[0]}", f"{misfit[1]} (the program's currency)")
    if auto.event_type_id is not None and conn.execute(select(event_type.c.id).where(
            event_type.c.id == auto.event_type_id,
            event_type.c.program_id == program_id)).first() is None:
        raise Invalid("auto_approval.event_type_id",
                      f"event type {auto.event_type_id} is not in program {program_id}")
    if auto.mode != "off" and auto.event_type_id is None:
        raise Invalid("auto_approval.event_type_id", "auto-approval needs the event type "
                      "its actions get; set auto_approval.event_type_id")
    values = {"deadline_days": body.resolution_deadline_days, "auto_mode": auto.mode,
              "auto_days": auto.days, "max_expected_payout": auto.max_expected_payout,
              "monthly_cap": auto.monthly_cap, "event_type_id": auto.event_type_id,
              "updated_at": now}
    where = inquiry_policy.c.program_id == program_id
    if conn.execute(update(inquiry_policy).where(where).values(**values)).rowcount == 0:
        try:
            with conn.begin_nested():
                conn.execute(insert(inquiry_policy).values(program_id=program_id, **values))
        except IntegrityError as exc:
            # saved by a request at the same time: this one comes after
            if not unique_violation(exc, inquiry_policy, "program_id"):
                raise
            conn.execute(update(inquiry_policy).where(where).values(**values))
    return policy_out(policy(conn, program_id))


# -- the workflow -----------------------------------------------------------------------


def inquiry_out(row: Any) -> dict[str, Any]:
    m = row if isinstance(row, dict) else row._mapping
    out = dict(m)
    for key in ("transaction_amount", "expected_payout", "final_payout"):
        out[key] = format_money(m[key]) or None
    for key in ("transaction_date", "resolution_date", "resolution_deadline_date",
                "auto_approval_date", "creation_date"):
        out[key] = format_date(m[key]) or None
    return out


def _load(conn: Connection, inquiry_id: int, **owner: int) -> Row[Any]:
    query = select(inquiry).where(inquiry.c.id == inquiry_id).with_for_update()
    for key, value in owner.items():
        query = query.where(inquiry.c[key] == value)
    row = conn.execute(query).first()
    if row is None:
        raise NotFound("inquiry")
    return row


def create_inquiry(conn: Connection, partner_id: int, body: InquiryIn,
                   now: datetime) -> dict[str, Any]:
    check_available(conn, partner_id, "action-inquiry")
    prog = conn.execute(select(program).where(program.c.id == body.program_id)).first()
    if prog is None or conn.execute(select(contract.c.id).where(
            contract.c.program_id == body.program_id,
            contract.c.partner_id == partner_id)).first() is None:
        raise NotFound("program", "program_id")
    misfit = units_problem(prog.currency, {"transaction_amount": body.transaction_amount,
                                           "expected_payout": body.expected_payout})
    if misfit is not None:
        raise Invalid(misfit[0], f"{misfit[1]} (the program's currency)")
    rules = policy(conn, body.program_id)
    row = {
        **body.model_dump(), "brand_id": prog.brand_id, "partner_id": partner_id,
        "currency": prog.currency, "state": InquiryState.OPEN.value,
        "resolution_status": UNRESOLVED, "resolution_deadline_date": rules.deadline(now),
        "auto_approval_date": rules.auto_approval_date(now), "sequence": 1,
        "creation_date": now, "reject_reason": None, "final_payout": None,
        "resolution_date": None, "action_id": None,
    }
    result = conn.execute(insert(inquiry).values(**row))
    assert result.inserted_primary_key is not None
    row["id"] = result.inserted_primary_key[0]
    enqueue_inquiry_events(conn, [(row, CREATED)], now)
    return inquiry_out(row)


def _finish(conn: Connection, before: Row[Any], now: datetime, **changes: Any) -> dict[str, Any]:
    after = {**before._mapping, **changes, "sequence": before.sequence + 1,
             "resolution_date": now}
    conn.execute(update(inquiry).where(inquiry.c.id == before.id).values(
        **changes, sequence=after["sequence"], resolution_date=now))
    enqueue_inquiry_events(conn, [(after, RESOLVED)], now)
    return inquiry_out(after)


def _open(row: Row[Any]) -> None:
    if row.state != InquiryState.OPEN.value:
        raise RuleViolation("inquiry_not_open", f"inquiry {row.id} is {row.state}, not OPEN; "
                            "only an open inquiry can be closed or resolved")


def close_inquiry(conn: Connection, partner_id: int, inquiry_id: int,
                  now: datetime) -> dict[str, Any]:
    row = _load(conn, inquiry_id, partner_id=partner_id)
    _open(row)
    return _finish(conn, row, now, state=InquiryState.CLOSED.value, resolution_status=CLOSED)


def resolve_inquiry(conn: Connection, brand_id: int, inquiry_id: int, body: ResolveIn,
                    now: datetime) -> dict[str, Any]:
    row = _load(conn, inquiry_id, brand_id=brand_id)
    _open(row)
    if body.resolution_status == DECLINED:
        if body.reject_reason not in REJECT_REASONS:
            raise Invalid("reject_reason", "a DECLINED resolution needs one of these exact "
                          "reject reasons: " + "; ".join(f'"{r}"' for r in REJECT_REASONS),
                          {"allowed": list(REJECT_REASONS)})
        return _finish(conn, row, now, state=InquiryState.RESOLVED.value,
                       resolution_status=DECLINED, reject_reason=body.reject_reason)
    event_type_id = body.event_type_id or policy(conn, row.program_id).event_type_id
    if event_type_id is None:
        raise Invalid("event_type_id", "a VALID resolution needs the event type of the "
                      "action it creates")
    payout = row.expected_payout if body.payout is None else body.payout
    amount = row.transaction_amount if body.amount is None else body.amount
    created = report_actions(conn, brand_id, [ActionIn.model_validate({  # money as it travels
        "program_id": row.program_id, "event_type_id": event_type_id,
        "partner_id": row.partner_id, "oid": row.oid, "amount": format_money(amount),
        "payout": format_money(payout), "currency": row.currency,
        "event_date": body.transaction_date or row.transaction_date,
        "referring_type": "ACTION_INQUIRY", "customer_id": row.customer_id})], now)[0]
    return _finish(conn, row, now, state=InquiryState.RESOLVED.value, resolution_status=VALID,
                   final_payout=payout, action_id=created["id"])


def get_inquiry(conn: Connection, inquiry_id: int, **owner: int) -> dict[str, Any]:
    query = select(inquiry).where(inquiry.c.id == inquiry_id)
    for key, value in owner.items():
        query = query.where(inquiry.c[key] == value)
    row = conn.execute(query).first()
    if row is None:
        raise NotFound("inquiry")
    return inquiry_out(row)


def list_inquiries(conn: Connection, *, state: str | None = None, cursor: int | None = None,
                   limit: int = 100, **owner: int) -> dict[str, Any]:
    query = select(inquiry)
    for key, value in owner.items():
        query = query.where(inquiry.c[key] == value)
    if state is not None:
        query = query.where(inquiry.c.state == state)
    return page(conn, query, inquiry, cursor, limit, inquiry_out)


def run_auto_approvals(conn: Connection, as_of: datetime, now: datetime,
                       limit: int = 500) -> int:
    """Resolve VALID every open inquiry whose auto-approval date has passed and that its
    program's rules allow; the others wait for the brand."""
    approved = 0
    month_start = month_begin(as_of)
    totals: dict[int, int] = {}
    for row in conn.execute(select(inquiry).where(
            inquiry.c.state == InquiryState.OPEN.value,
            inquiry.c.auto_approval_date <= as_of)
            .order_by(inquiry.c.auto_approval_date).limit(limit)).all():
        rules = policy(conn, row.program_id)
        if rules.auto_mode is AutoMode.OFF or rules.event_type_id is None:
            continue
        if row.program_id not in totals:
            totals[row.program_id] = int(conn.execute(
                select(func.coalesce(func.sum(inquiry.c.final_payout), 0)).where(
                    inquiry.c.program_id == row.program_id,
                    inquiry.c.resolution_status == VALID,
                    inquiry.c.resolution_date >= month_start)).scalar_one())
        if not rules.may_auto_approve(row.expected_payout, totals[row.program_id]):
            # over the payout limit: the brand decides; over this month's cap: next month
            over_limit = (rules.max_expected_payout is not None
                          and row.expected_payout >= rules.max_expected_payout)
            conn.execute(update(inquiry).where(inquiry.c.id == row.id).values(
                auto_approval_date=None if over_limit else month_end(as_of)))
            continue
        try:
            with conn.begin_nested():
                resolve_inquiry(conn, row.brand_id, row.id, ResolveIn(
                    resolution_status="VALID", event_type_id=rules.event_type_id), now)
        except (RuleViolation, Invalid, NotFound) as exc:  # e.g. the oid is tracked already
            log.warning("inquiry %s not auto-approved, left to the brand: %s", row.id, exc)
            conn.execute(update(inquiry).where(inquiry.c.id == row.id)
                         .values(auto_approval_date=None))
            continue
        totals[row.program_id] += row.expected_payout
        approved += 1
    return approved

