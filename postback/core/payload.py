"""Token values for one action notification: a pure mapping from ledger rows to tokens."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from postback.core.render import Value
from postback.core.values import format_date, format_money


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _date(value: Any) -> str:
    return format_date(value) if isinstance(value, datetime) else ""


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


def action_values(
    action: Mapping[str, Any],
    *,
    program_name: str,
    event_type_name: str,
    action_type: str,
    partner_name: str,
    trigger: str,
    sequence: int,
    delta_amount: int,
    delta_payout: int,
    event_id: str,
) -> dict[str, Value]:
    """Every action token's value for one notification (see ``tokens.ACTION_TOKENS``)."""
    return {
        "ActionId": str(action["id"]),
        "CampaignId": str(action["program_id"]),
        "CampaignName": program_name,
        "ActionTrackerId": str(action["event_type_id"]),
        "ActionTrackerName": event_type_name,
        "MediaPartnerId": str(action["partner_id"]),
        "MediaPartnerName": partner_name,
        "ActionType": action_type,
        "ReferringType": _text(action.get("referring_type")),
        "Status": action["status"],
        "StatusDetail": action["status_detail"],
        "AdId": _text(action.get("ad_id")),
        "Payout": format_money(action["payout"]),
        "DeltaPayout": format_money(delta_payout),
        "IntendedPayout": format_money(action["payout"]),
        "OriginalPayout": format_money(action["original_payout"]),
        "Amount": format_money(action["amount"]),
        "DeltaAmount": format_money(delta_amount),
        "IntendedAmount": format_money(action["original_amount"]),
        "Currency": action["currency"],
        "OriginalCurrency": action["currency"],
        "OriginalAmount": format_money(action["original_amount"]),
        "EventDate": _date(action["event_date"]),
        "CreationDate": _date(action["creation_date"]),
        "LockingDate": _date(action.get("locking_date")),
        "ClearedDate": _date(action.get("cleared_at")),
        "ReferringDate": _date(action.get("referring_date")),
        "ReferringDomain": _text(action.get("referring_domain")),
        "SubId1": _text(action.get("sub_id1")),
        "SubId2": _text(action.get("sub_id2")),
        "SubId3": _text(action.get("sub_id3")),
        "SharedId": _text(action.get("shared_id")),
        "PromoCode": _text(action.get("promo_code")),
        "Oid": action["oid"],
        "EventCode": _text(action.get("event_code")),
        "CustomerId": _text(action.get("customer_id")),
        "CustomerStatus": _text(action.get("customer_status")),
        "CustomerArea": _text(action.get("customer_area")),
        "CustomerCity": _text(action.get("customer_city")),
        "CustomerRegion": _text(action.get("customer_region")),
        "CustomerCountry": _text(action.get("customer_country")),
        "Items": items_value(action.get("items") or []),
        "EventId": event_id,
        "Trigger": trigger,
        "Sequence": str(sequence),
    }
