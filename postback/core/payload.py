"""Token values for one action notification: a pure mapping from ledger rows to tokens.

Each token has a getter; a notification computes only the tokens its template uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from postback.core.render import Value
from postback.core.values import format_date, format_money


@dataclass(frozen=True)
class ActionContext:
    """One change of one action, with the names a receiver sees."""

    action: Mapping[str, Any]
    program_name: str
    event_type_name: str
    action_type: str
    partner_name: str
    trigger: str
    delta_amount: int
    delta_payout: int
    event_id: str


def _text(key: str) -> Callable[[ActionContext], str]:
    return lambda c: "" if c.action.get(key) is None else str(c.action[key])


def _money(key: str) -> Callable[[ActionContext], str]:
    return lambda c: format_money(c.action[key])


def _date(key: str) -> Callable[[ActionContext], str]:
    def get(c: ActionContext) -> str:
        value = c.action.get(key)
        return format_date(value) if isinstance(value, datetime) else ""

    return get


def items_value(items: list[Mapping[str, Any]]) -> list[dict[str, object]]:
    """Line items as receivers see them: money as decimal strings."""
    return [
        {
            "sku": item.get("sku"),
            "name": item.get("name"),
            "category": item.get("category"),
            "quantity": item.get("quantity", 1),
            "amount": format_money(item.get("amount")) or None,
            "payout": format_money(item.get("payout")) or None,
        }
        for item in items
    ]


GETTERS: dict[str, Callable[[ActionContext], Value]] = {
    "ActionId": _text("id"),
    "CampaignId": _text("program_id"),
    "CampaignName": lambda c: c.program_name,
    "ActionTrackerId": _text("event_type_id"),
    "ActionTrackerName": lambda c: c.event_type_name,
    "MediaPartnerId": _text("partner_id"),
    "MediaPartnerName": lambda c: c.partner_name,
    "ActionType": lambda c: c.action_type,
    "ReferringType": _text("referring_type"),
    "Status": _text("status"),
    "StatusDetail": _text("status_detail"),
    "AdId": _text("ad_id"),
    "Payout": _money("payout"),
    "DeltaPayout": lambda c: format_money(c.delta_payout),
    "IntendedPayout": _money("payout"),
    "OriginalPayout": _money("original_payout"),
    "Amount": _money("amount"),
    "DeltaAmount": lambda c: format_money(c.delta_amount),
    "IntendedAmount": _money("original_amount"),
    "Currency": _text("currency"),
    "OriginalCurrency": _text("currency"),
    "OriginalAmount": _money("original_amount"),
    "EventDate": _date("event_date"),
    "CreationDate": _date("creation_date"),
    "LockingDate": _date("locking_date"),
    "ClearedDate": _date("cleared_at"),
    "ReferringDate": _date("referring_date"),
    "ReferringDomain": _text("referring_domain"),
    "SubId1": _text("sub_id1"),
    "SubId2": _text("sub_id2"),
    "SubId3": _text("sub_id3"),
    "SharedId": _text("shared_id"),
    "PromoCode": _text("promo_code"),
    "Oid": _text("oid"),
    "EventCode": _text("event_code"),
    "CustomerId": _text("customer_id"),
    "CustomerStatus": _text("customer_status"),
    "CustomerArea": _text("customer_area"),
    "CustomerCity": _text("customer_city"),
    "CustomerRegion": _text("customer_region"),
    "CustomerCountry": _text("customer_country"),
    "Items": lambda c: items_value(c.action.get("items") or []),
    "EventId": lambda c: c.event_id,
    "Trigger": lambda c: c.trigger,
    "Sequence": _text("sequence"),
}


def action_values(context: ActionContext,
                  names: Iterable[str] | None = None) -> dict[str, Value]:
    """The values of ``names`` (default: every action token) for one notification."""
    return {name: GETTERS[name](context) for name in (GETTERS if names is None else names)}
