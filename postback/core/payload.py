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
    change_id: str = ""


def _text(key: str, row: str = "action") -> Callable[[Any], str]:
    """A getter for a row field (``row``: the context attribute holding the row)."""
    def get(c: Any) -> str:
        value = getattr(c, row).get(key)
        return "" if value is None else str(value)

    return get


def _money(key: str, row: str = "action") -> Callable[[Any], str]:
    return lambda c: format_money(getattr(c, row).get(key))


def _date(key: str, row: str = "action") -> Callable[[Any], str]:
    def get(c: Any) -> str:
        value = getattr(c, row).get(key)
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
    "ChangeId": lambda c: c.change_id,
    "Trigger": lambda c: c.trigger,
    "Sequence": _text("sequence"),
}


def _values(getters: Mapping[str, Callable[[Any], Value]], context: object,
            names: Iterable[str] | None) -> dict[str, Value]:
    """The values of ``names`` (default: every token of the type) for one notification."""
    return {name: getters[name](context) for name in (getters if names is None else names)}


def action_values(context: ActionContext,
                  names: Iterable[str] | None = None) -> dict[str, Value]:
    return _values(GETTERS, context, names)


# -- inquiries --------------------------------------------------------------------------


@dataclass(frozen=True)
class InquiryContext:
    inquiry: Mapping[str, Any]
    program_name: str
    partner_name: str
    trigger: str
    event_id: str
    change_id: str = ""


def _iq_text(key: str) -> Callable[[Any], str]:
    return _text(key, "inquiry")


def _iq_money(key: str) -> Callable[[Any], str]:
    return _money(key, "inquiry")


def _iq_date(key: str) -> Callable[[Any], str]:
    return _date(key, "inquiry")


INQUIRY_GETTERS: dict[str, Callable[[InquiryContext], Value]] = {
    "InquiryId": _iq_text("id"),
    "MediaPartnerInquiryId": _iq_text("media_partner_inquiry_id"),
    "CampaignId": _iq_text("program_id"),
    "CampaignName": lambda c: c.program_name,
    "MediaPartnerId": _iq_text("partner_id"),
    "MediaPartnerName": lambda c: c.partner_name,
    "InquiryType": _iq_text("inquiry_type"),
    "OrderId": _iq_text("oid"),
    "Oid": _iq_text("oid"),
    "TransactionDate": _iq_date("transaction_date"),
    "TransactionAmount": _iq_money("transaction_amount"),
    "ExpectedPayout": _iq_money("expected_payout"),
    "Currency": _iq_text("currency"),
    "CustomerId": _iq_text("customer_id"),
    "InquiryNotes": _iq_text("notes"),
    "InquiryDate": _iq_date("creation_date"),
    "CreationDate": _iq_date("creation_date"),
    "ResolutionDeadlineDate": _iq_date("resolution_deadline_date"),
    "AutoApprovalDate": _iq_date("auto_approval_date"),
    "ResolutionStatus": _iq_text("resolution_status"),
    "RejectReason": _iq_text("reject_reason"),
    "FinalPayout": _iq_money("final_payout"),
    "ResolutionDate": _iq_date("resolution_date"),
    "ActionId": _iq_text("action_id"),
    "EventId": lambda c: c.event_id,
    "ChangeId": lambda c: c.change_id,
    "Trigger": lambda c: c.trigger,
    "Sequence": _iq_text("sequence"),
}


def inquiry_values(context: InquiryContext,
                   names: Iterable[str] | None = None) -> dict[str, Value]:
    return _values(INQUIRY_GETTERS, context, names)


# -- catalog items ----------------------------------------------------------------------

#: catalog item fields (snake_case, as the API takes them) and their token names
CATALOG_FIELDS: dict[str, str] = {
    "name": "Name", "description": "Description", "manufacturer": "Manufacturer",
    "url": "Url", "mobile_url": "MobileUrl", "image_url": "ImageUrl",
    "current_price": "CurrentPrice", "original_price": "OriginalPrice",
    "currency": "Currency", "stock_availability": "StockAvailability", "gtin": "Gtin",
    "asin": "Asin", "mpn": "Mpn", "category": "Category", "sub_category": "SubCategory",
    "parent_sku": "ParentSku", "colors": "Colors", "size": "Size", "condition": "Condition",
    "gender": "Gender", "age_group": "AgeGroup",
}
MONEY_FIELDS = frozenset({"current_price", "original_price"})


@dataclass(frozen=True)
class CatalogContext:
    item_id: str
    data: Mapping[str, Any]
    program_id: int
    program_name: str
    change_type: str
    changed_fields: tuple[str, ...]
    event_id: str
    change_id: str = ""


def changed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> tuple[str, ...]:
    """Token names of the fields whose values differ (every set field for a new item)."""
    before = before or {}
    return tuple(token for key, token in CATALOG_FIELDS.items()
                 if before.get(key) != after.get(key))


def _discount(data: Mapping[str, Any]) -> str:
    current, original = data.get("current_price"), data.get("original_price")
    if not isinstance(current, int) or not isinstance(original, int) or original <= 0:
        return ""
    return f"{(original - current) * 100 / original:.2f}"


def catalog_values(context: CatalogContext,
                   names: Iterable[str] | None = None) -> dict[str, Value]:
    def field(key: str) -> str:
        value = context.data.get(key)
        if value is None:
            return ""
        return format_money(value) if key in MONEY_FIELDS else str(value)

    values: dict[str, Value] = {token: field(key) for key, token in CATALOG_FIELDS.items()}
    values.update({
        "CatalogItemId": context.item_id, "CampaignId": str(context.program_id),
        "CampaignName": context.program_name, "DiscountPercentage": _discount(context.data),
        "ChangeType": context.change_type, "ChangedFields": ",".join(context.changed_fields),
        "EventId": context.event_id, "ChangeId": context.change_id,
        "Trigger": context.change_type,
    })
    return values if names is None else {n: values[n] for n in names}
