"""The transactional outbox: a ledger change and the deliveries it triggers, written in
the caller's transaction, so neither can exist without the other.

Each delivery row is rendered here, at event time, into the exact request a partner will
receive (method, URL, body); the engine only sends and records. Custom header values stay
on the setting so a partner who rotates a header secret changes pending retries too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select

from postback.core.lifecycle import Trigger
from postback.core.payload import ActionContext, action_values
from postback.core.render import CONTENT_TYPES, BodyFormat, Value
from postback.core.routing import Route, routes
from postback.db.schema import delivery, event_type, notification_setting, partner, program
from postback.db.wakeup import notify_due
from postback.services.ids import uuid7
from postback.services.notification_settings import Compiled, compile_setting


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


def _matches(setting: Mapping[str, Any], route: Route, act: Mapping[str, Any]) -> bool:
    """Does this setting take this change? Event-level and brand-created settings take new
    actions (TRACKED) of their event type only, as on impact.com."""
    if route.opt_in and route.trigger not in setting["extra_triggers"]:
        return False
    if setting["scope"] == "global":
        return True
    return (route.trigger == "TRACKED" and setting["event_type_id"] == act["event_type_id"]
            and setting["program_id"] in (None, act["program_id"]))


def delivery_row(setting: Mapping[str, Any], compiled: Compiled, values: Mapping[str, Value],
                 *, event_id: str, trigger: str, now: datetime,
                 action_id: int | None = None) -> dict[str, Any]:
    """The delivery for one notification: the exact request, due after the setting's
    Minimum Delay."""
    is_post = setting["method"] == "POST"
    return {
        "event_id": event_id,
        "partner_id": setting["partner_id"],
        "setting_id": setting["id"],
        "action_id": action_id,
        "notification_type": setting["type"],
        "trigger": trigger,
        "status": "pending",
        "method": setting["method"],
        "url": compiled.url.render(values),
        "headers": ({"Content-Type": CONTENT_TYPES[BodyFormat(setting["body_format"])]}
                    if is_post else {}),
        "body": compiled.body.render(values) if is_post and compiled.body else None,
        "attempt_count": 0,
        "failures": 0,
        "next_attempt_at": now + timedelta(seconds=setting["minimum_delay_seconds"]),
        "created_at": now,
    }


def active_settings(conn: Connection, partner_ids: Iterable[int],
                    types: Iterable[str]) -> dict[int, list[Mapping[str, Any]]]:
    """Enabled, not auto-disabled settings of these types, by partner."""
    found: dict[int, list[Mapping[str, Any]]] = {}
    for row in conn.execute(select(notification_setting).where(
            notification_setting.c.type.in_(set(types)),
            notification_setting.c.enabled.is_(True),
            notification_setting.c.disabled_at.is_(None),
            notification_setting.c.partner_id.in_(set(partner_ids)),
    ).order_by(notification_setting.c.id)).mappings():
        found.setdefault(row["partner_id"], []).append(dict(row))
    return found


def insert_deliveries(conn: Connection, rows: list[dict[str, Any]]) -> int:
    if rows:
        conn.execute(insert(delivery), rows)
        notify_due(conn)
    return len(rows)


def enqueue_action_events(conn: Connection, events: list[ActionEvent], now: datetime) -> int:
    """Write the deliveries for ``events``; returns how many were written."""
    routed = [(e, routes(e.trigger)) for e in events]
    routed = [(e, r) for e, r in routed if r]
    if not routed:
        return 0
    settings = active_settings(conn, {e.action["partner_id"] for e, _ in routed},
                               {route.type for _, rs in routed for route in rs})
    routed = [(e, r) for e, r in routed if e.action["partner_id"] in settings]
    if not routed:
        return 0
    programs = _names(conn, program, {e.action["program_id"] for e, _ in routed}, "name")
    types = _names(conn, event_type, {e.action["event_type_id"] for e, _ in routed},
                   "name", "action_type")
    partners = _names(conn, partner, {e.action["partner_id"] for e, _ in routed}, "name")

    rows: list[dict[str, Any]] = []
    for event, event_routes in routed:
        act = event.action
        for route in event_routes:
            for setting in settings[act["partner_id"]]:
                if setting["type"] != route.type or not _matches(setting, route, act):
                    continue
                compiled = compile_setting(setting["type"], setting["url"], setting["method"],
                                           setting["body_format"], setting["body"])
                event_id = uuid7()
                etype = types[act["event_type_id"]]
                values = action_values(ActionContext(
                    act,
                    program_name=programs[act["program_id"]].name,
                    event_type_name=etype.name,
                    action_type=etype.action_type,
                    partner_name=partners[act["partner_id"]].name,
                    trigger=route.trigger,
                    delta_amount=event.delta_amount,
                    delta_payout=event.delta_payout,
                    event_id=event_id,
                ), compiled.tokens)
                rows.append(delivery_row(setting, compiled, values, event_id=event_id,
                                         trigger=route.trigger, now=now, action_id=act["id"]))
    return insert_deliveries(conn, rows)
