"""A partner's deliveries: list, read with every attempt, resend."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from postback.core.lifecycle import RuleViolation
from postback.core.responses import readable, readable_headers
from postback.core.values import format_date
from postback.db.engine import reader
from postback.db.schema import delivery, delivery_attempt, notification_setting
from postback.db.wakeup import notify_due
from postback.services.errors import NotFound
from postback.services.paging import page


def delivery_out(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "event_id": row.event_id, "type": row.notification_type,
        "trigger": row.trigger, "status": row.status, "held_by": None, "held_reason": None,
        "setting_id": row.setting_id, "action_id": row.action_id,
        "change_id": row.change_id, "replay_id": row.replay_id,
        "request": {"method": row.method, "url": row.url, "headers": row.headers,
                    "body": row.body},
        "attempt_count": row.attempt_count,
        "next_attempt_at": format_date(row.next_attempt_at) if row.status == "pending" else None,
        "last_status_code": row.last_status_code, "last_error": row.last_error,
        "created_at": format_date(row.created_at),
        "completed_at": format_date(row.completed_at) or None,
    }


def attempt_out(row: Any) -> dict[str, Any]:
    return {
        "number": row.number, "started_at": format_date(row.started_at),
        "request": {"method": row.method, "url": row.url, "headers": row.request_headers},
        "response": None if row.status_code is None else {
            "status": row.status_code, "headers": readable_headers(row.response_headers),
            "body": None if row.response_body is None else readable(row.response_body),
            "body_base64": None if row.response_body_raw is None
            else base64.b64encode(row.response_body_raw).decode("ascii")},
        "latency_ms": round(row.latency_ms, 3), "error_class": row.error_class,
        "error": row.error_message, "outcome": row.outcome,
    }


def list_deliveries(conn: Connection, partner_id: int, *, status: str | None = None,
                    trigger: str | None = None, action_id: int | None = None,
                    type: str | None = None,
                    since: datetime | None = None, until: datetime | None = None,
                    cursor: int | None = None, limit: int = 100) -> dict[str, Any]:
    query = select(delivery).where(delivery.c.partner_id == partner_id)
    for column, value in ((delivery.c.status, status), (delivery.c.trigger, trigger),
                          (delivery.c.action_id, action_id),
                          (delivery.c.notification_type, type)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(delivery.c.created_at >= since)
    if until is not None:
        query = query.where(delivery.c.created_at < until)
    out = page(conn, query, delivery, cursor, limit, delivery_out)
    _held_reasons(conn, out["items"])
    return out


def _held_reasons(conn: Connection, items: list[dict[str, Any]]) -> None:
    """Why each held delivery waits: its setting is off (by whom, and why)."""
    held = {item["setting_id"] for item in items if item["status"] == "held"}
    if not held:
        return
    reasons = {row.id: row.disabled_reason for row in conn.execute(select(
        notification_setting.c.id, notification_setting.c.disabled_reason)
        .where(notification_setting.c.id.in_(held)))}
    for item in items:
        if item["status"] == "held":
            auto = reasons.get(item["setting_id"])
            item["held_by"] = "auto" if auto else "partner"
            item["held_reason"] = auto or "the partner turned this postback off"


def last_latencies(conn: Connection, delivery_ids: list[int]) -> dict[int, float]:
    """Each delivery's latest attempt's latency (ms), for a page of deliveries."""
    if not delivery_ids:
        return {}
    rows = conn.execute(select(delivery_attempt.c.delivery_id, delivery_attempt.c.latency_ms)
                        .where(delivery_attempt.c.delivery_id.in_(delivery_ids))
                        .order_by(delivery_attempt.c.number, delivery_attempt.c.id))
    return {row.delivery_id: row.latency_ms for row in rows}


def get_delivery(conn: Connection, partner_id: int, delivery_id: int) -> dict[str, Any]:
    row = conn.execute(select(delivery).where(
        delivery.c.id == delivery_id, delivery.c.partner_id == partner_id)).first()
    if row is None:
        raise NotFound("delivery")
    out = delivery_out(row)
    _held_reasons(conn, [out])
    out["attempts"] = [attempt_out(a) for a in conn.execute(
        select(delivery_attempt).where(delivery_attempt.c.delivery_id == delivery_id)
        .order_by(delivery_attempt.c.number, delivery_attempt.c.id))]
    return out


def resend_delivery(conn: Connection, partner_id: int, delivery_id: int,
                    now: datetime) -> dict[str, Any]:
    """Queue a delivery again, now, with a fresh retry budget and the same event id."""
    row = conn.execute(select(delivery).where(
        delivery.c.id == delivery_id, delivery.c.partner_id == partner_id)
        .with_for_update()).first()
    if row is None:
        raise NotFound("delivery")
    if row.status == "held":
        raise RuleViolation("delivery_held", "this delivery is held because its postback is "
                            "turned off; turn it on to send it, or discard what it holds", 409)
    if row.status == "pending" and row.lease_owner is not None and row.next_attempt_at > now:
        raise RuleViolation("delivery_in_flight", "this delivery is being sent right now; "
                            "read it again in a moment")
    conn.execute(update(delivery).where(delivery.c.id == delivery_id).values(
        status="pending", failures=0, next_attempt_at=now, lease_owner=None,
        open_claims=0, completed_at=None))
    _hold_if_off(conn, [delivery_id])
    notify_due(conn)
    return get_delivery(conn, partner_id, delivery_id)


def recover_failed(engine: Engine, now: datetime, *, since: datetime,
                   until: datetime | None = None, type: str | None = None,
                   partner_id: int | None = None, chunk: int = 1000,
                   progress: Callable[[int, int], None] | None = None) -> int:
    """Queue again every failed delivery created in [since, until), with a fresh retry
    budget and the same event ids. Works in chunks (one transaction each) so a large
    recovery neither holds a long lock nor starts over if interrupted; running it again
    only picks up what is still failed. Returns how many were requeued."""
    query = select(delivery.c.id).where(delivery.c.status == "failed",
                                        delivery.c.created_at >= since)
    if until is not None:
        query = query.where(delivery.c.created_at < until)
    if type is not None:
        query = query.where(delivery.c.notification_type == type)
    if partner_id is not None:
        query = query.where(delivery.c.partner_id == partner_id)
    with reader(engine).connect() as conn:
        ids = list(conn.execute(query.order_by(delivery.c.id)).scalars())
    done = 0
    for start in range(0, len(ids), chunk):
        with engine.begin() as conn:
            done += conn.execute(update(delivery).where(
                delivery.c.id.in_(ids[start:start + chunk]), delivery.c.status == "failed")
                .values(status="pending", failures=0, next_attempt_at=now, lease_owner=None,
                        open_claims=0, completed_at=None)).rowcount
            _hold_if_off(conn, ids[start:start + chunk])
            notify_due(conn)
        if progress is not None:
            progress(min(start + chunk, len(ids)), len(ids))
    return done


def _hold_if_off(conn: Connection, ids: list[int]) -> None:
    """Queued again while its setting is off: held, not sent, until it is turned on."""
    off = select(notification_setting.c.id).where(
        notification_setting.c.enabled.is_(False) | notification_setting.c.disabled_at.is_not(None))
    conn.execute(update(delivery).where(delivery.c.id.in_(ids), delivery.c.status == "pending",
                                        delivery.c.setting_id.in_(off))
                 .values(status="held"))
