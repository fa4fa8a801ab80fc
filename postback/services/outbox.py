"""The transactional outbox: a ledger change and the deliveries it triggers, written in
the caller's transaction, so neither can exist without the other.

Each delivery row is rendered here, at event time, into the exact request a partner will
receive (method, URL, body); the engine only sends and records. Custom header values stay
on the setting so a partner who rotates a header secret changes pending retries too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from postback.core.lifecycle import LIFECYCLE_TRIGGERS, Trigger
from postback.core.payload import ActionContext, action_values
from postback.core.render import CONTENT_TYPES, BodyFormat
from postback.db.schema import delivery, event_type, notification_setting, partner, program
from postback.db.wakeup import notify_due
from postback.services.ids import uuid7
from postback.services.notification_settings import compile_setting

LIFECYCLE = "action-lifecycle"


@dataclass(frozen=True)
class ActionEvent:
    """One change of one action: the action's row after the change and what changed."""

    action: Mapping[str, Any]
    trigger: Trigger
    delta_amount: int = 0
    delta_payout: int = 0


def _names(conn: Connection, table: Any, ids: Iterable[int], *cols: str) -> dict[int, Any]:
    columns = [table.c.id, *(table.c[c] for c in cols)]
    return {row.id: row for row in conn.execute(select(*columns).where(table.c.id.in_(set(ids))))}


def enqueue_action_events(conn: Connection, events: list[ActionEvent], now: datetime) -> int:
    """Write the deliveries for ``events``; returns how many were written."""
    events = [e for e in events if e.trigger in LIFECYCLE_TRIGGERS]
    if not events:
        return 0
    partner_ids = {e.action["partner_id"] for e in events}
    settings = {
        row["partner_id"]: row
        for row in conn.execute(select(notification_setting).where(
            notification_setting.c.type == LIFECYCLE,
            notification_setting.c.enabled.is_(True),
            notification_setting.c.partner_id.in_(partner_ids),
        )).mappings()
    }
    events = [e for e in events if e.action["partner_id"] in settings]
    if not events:
        return 0
    programs = _names(conn, program, {e.action["program_id"] for e in events}, "name")
    types = _names(conn, event_type, {e.action["event_type_id"] for e in events},
                   "name", "action_type")
    partners = _names(conn, partner, {e.action["partner_id"] for e in events}, "name")

    rows: list[dict[str, Any]] = []
    for event in events:
        act = event.action
        setting = settings[act["partner_id"]]
        compiled = compile_setting(LIFECYCLE, setting["url"], setting["method"],
                                   setting["body_format"], setting["body"])
        event_id = uuid7()
        etype = types[act["event_type_id"]]
        values = action_values(ActionContext(
            act,
            program_name=programs[act["program_id"]].name,
            event_type_name=etype.name,
            action_type=etype.action_type,
            partner_name=partners[act["partner_id"]].name,
            trigger=event.trigger.value,
            delta_amount=event.delta_amount,
            delta_payout=event.delta_payout,
            event_id=event_id,
        ), compiled.tokens)
        is_post = setting["method"] == "POST"
        rows.append({
            "event_id": event_id,
            "partner_id": act["partner_id"],
            "setting_id": setting["id"],
            "action_id": act["id"],
            "notification_type": LIFECYCLE,
            "trigger": event.trigger.value,
            "status": "pending",
            "method": setting["method"],
            "url": compiled.url.render(values),
            "headers": (
                {"Content-Type": CONTENT_TYPES[BodyFormat(setting["body_format"])]}
                if is_post else {}
            ),
            "body": compiled.body.render(values) if is_post and compiled.body else None,
            "attempt_count": 0,
            "failures": 0,
            "next_attempt_at": now,
            "created_at": now,
        })
    conn.execute(insert(delivery), rows)
    notify_due(conn)
    return len(rows)
