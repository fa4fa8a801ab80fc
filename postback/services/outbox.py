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
from postback.core.payload import (
    ActionContext,
    CatalogContext,
    InquiryContext,
    action_values,
    catalog_values,
    inquiry_values,
)
from postback.core.render import CONTENT_TYPES, BodyFormat, Value
from postback.core.routing import INQUIRY, PRODUCT, Route, routes
from postback.db.schema import (
    contract,
    delivery,
    event_type,
    notification_setting,
    partner,
    program,
)
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
                 *, event_id: str, trigger: str, now: datetime, action_id: int | None = None,
                 inquiry_id: int | None = None, item_id: str | None = None) -> dict[str, Any]:
    """The delivery for one notification: the exact request, due after the setting's
    Minimum Delay."""
    is_post = setting["method"] == "POST"
    return {
        "event_id": event_id,
        "partner_id": setting["partner_id"],
        "setting_id": setting["id"],
        "action_id": action_id,
        "inquiry_id": inquiry_id,
        "item_id": item_id,
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
    """Enabled, not auto-disabled settings of these types, by partner.

    On PostgreSQL each is locked FOR KEY SHARE, the lock its deliveries' foreign key takes
    anyway, only now, as it is read: a partner deleting one at the same time either waits
    for this transaction or has deleted it before this read (which then skips it, its
    postbacks are cancelled), never in between, where the deliveries' insert would fail.
    SQLite's writers never overlap."""
    found: dict[int, list[Mapping[str, Any]]] = {}
    for row in conn.execute(select(notification_setting).where(
            notification_setting.c.type.in_(set(types)),
            notification_setting.c.enabled.is_(True),
            notification_setting.c.disabled_at.is_(None),
            notification_setting.c.partner_id.in_(set(partner_ids)),
    ).order_by(notification_setting.c.id).with_for_update(read=True, key_share=True)
    ).mappings():
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
                compiled = _compiled(setting)
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


def _compiled(setting: Mapping[str, Any]) -> Compiled:
    return compile_setting(setting["type"], setting["url"], setting["method"],
                           setting["body_format"], setting["body"])


def enqueue_inquiry_events(conn: Connection, events: list[tuple[Mapping[str, Any], str]],
                           now: datetime) -> int:
    """Deliveries for inquiry changes: ``(inquiry row, trigger)`` pairs."""
    settings = active_settings(conn, {i["partner_id"] for i, _ in events}, {INQUIRY})
    events = [(i, t) for i, t in events if i["partner_id"] in settings]
    if not events:
        return 0
    programs = _names(conn, program, {i["program_id"] for i, _ in events}, "name")
    partners = _names(conn, partner, {i["partner_id"] for i, _ in events}, "name")
    rows = []
    for inq, trigger in events:
        for setting in settings[inq["partner_id"]]:
            compiled = _compiled(setting)
            event_id = uuid7()
            values = inquiry_values(InquiryContext(
                inq, programs[inq["program_id"]].name, partners[inq["partner_id"]].name,
                trigger, event_id), compiled.tokens)
            rows.append(delivery_row(setting, compiled, values, event_id=event_id,
                                     trigger=trigger, now=now, inquiry_id=inq["id"]))
    return insert_deliveries(conn, rows)


@dataclass(frozen=True)
class CatalogChange:
    item_id: str
    data: Mapping[str, Any]  # after the change (before it, for a removal)
    change_type: str  # ADDED | UPDATED | REMOVED
    changed_fields: tuple[str, ...]


def enqueue_catalog_events(conn: Connection, program_id: int, changes: list[CatalogChange],
                           now: datetime) -> int:
    """Deliveries for catalog changes, to every partner contracted on the program."""
    if not changes:
        return 0
    partner_ids = set(conn.execute(select(contract.c.partner_id).where(
        contract.c.program_id == program_id)).scalars())
    settings = active_settings(conn, partner_ids, {PRODUCT})
    if not settings:
        return 0
    program_name = conn.execute(select(program.c.name)
                                .where(program.c.id == program_id)).scalar_one()
    rows = []
    for partner_settings in settings.values():
        for setting in partner_settings:
            compiled = _compiled(setting)
            for change in changes:
                event_id = uuid7()
                values = catalog_values(CatalogContext(
                    change.item_id, change.data, program_id, program_name, change.change_type,
                    change.changed_fields, event_id), compiled.tokens)
                rows.append(delivery_row(setting, compiled, values, event_id=event_id,
                                         trigger=change.change_type, now=now,
                                         item_id=change.item_id))
    return insert_deliveries(conn, rows)
