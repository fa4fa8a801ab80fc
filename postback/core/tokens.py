"""The token vocabulary: one registry for validation, rendering, docs and sample values.

Names follow impact.com's postback tokens exactly (PascalCase, case-sensitive); the ones
marked *ours* are our additions (reference impact-postbacks.md §3.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    TEXT = "text"
    INT = "int"
    MONEY = "money"
    DATE = "date"
    ITEMS = "items"


@dataclass(frozen=True)
class Token:
    name: str
    kind: Kind
    meaning: str
    example: str


def _t(name: str, kind: Kind, meaning: str, example: str) -> Token:
    return Token(name, kind, meaning, example)


T, N, M, D = Kind.TEXT, Kind.INT, Kind.MONEY, Kind.DATE

ACTION_TOKENS: tuple[Token, ...] = (
    _t("ActionId", T, "Action ID: the receiver's dedupe key for the action", "1042"),
    _t("CampaignId", N, "Program ID", "1000"),
    _t("CampaignName", T, "Program name", "Acme Shoes US"),
    _t("ActionTrackerId", N, "Event type (action tracker) ID", "4636"),
    _t("ActionTrackerName", T, "Event type (action tracker) name", "Online Sale"),
    _t("MediaPartnerId", N, "Partner ID", "77"),
    _t("MediaPartnerName", T, "Partner name", "Cashback World"),
    _t("ActionType", T, "Event type's action type", "SALE"),
    _t("ReferringType", T, "Attribution type", "CLICK_COOKIE"),
    _t("Status", T, "State when the event happened: PENDING, APPROVED or REVERSED", "PENDING"),
    _t("StatusDetail", T, "OPEN, PAYMENT_PENDING, PAID, or the reversal reason", "OPEN"),
    _t("AdId", T, "Ad of the winning click", "552318"),
    _t("Payout", M, "Partner commission", "27.75"),
    _t("DeltaPayout", M, "Change of payout since the previous update", "5.00"),
    _t("IntendedPayout", M, "Payout if approved (no over-limit rules yet: equals Payout)", "27.75"),
    _t("OriginalPayout", M, "Payout as first reported, before modifications (ours)", "22.75"),
    _t("Amount", M, "Sale amount", "1000.00"),
    _t("DeltaAmount", M, "Change of amount since the previous update", "-50.00"),
    _t("IntendedAmount", M, "Amount as first reported, before modifications", "1050.00"),
    _t("Currency", T, "ISO 4217 currency of Amount and Payout", "USD"),
    _t("OriginalCurrency", T, "Currency as sent on the order", "USD"),
    _t("OriginalAmount", M, "Amount as sent on the order", "1000.00"),
    _t("EventDate", D, "When the conversion happened", "2026-11-02T18:04:05+00:00"),
    _t("CreationDate", D, "When the action was created here", "2026-11-02T18:04:07+00:00"),
    _t("LockingDate", D, "After it, no modification or reversal", "2026-12-02T18:04:05+00:00"),
    _t("ClearedDate", D, "When the commission cleared; empty until then", ""),
    _t("ReferringDate", D, "Time of the winning click", "2026-11-02T17:55:00+00:00"),
    _t("ReferringDomain", T, "Site domain of the winning click", "deals.example"),
    _t("SubId1", T, "Sub ID 1 from the tracking link", "member-8812"),
    _t("SubId2", T, "Sub ID 2 from the tracking link", "spring-promo"),
    _t("SubId3", T, "Sub ID 3 from the tracking link", "email"),
    _t("SharedId", T, "Shared ID, visible to the brand too", "RT-19247423"),
    _t("PromoCode", T, "Promo code used on the order", "SPRING10"),
    _t("Oid", T, "The brand's order ID (unique per event type)", "ORD-2026-55102"),
    _t("EventCode", T, "App event code", ""),
    _t("CustomerId", T, "The brand's customer reference", "C-99812"),
    _t("CustomerStatus", T, "NEW or EXISTING", "NEW"),
    _t("CustomerArea", T, "Customer area (DMA code)", "807"),
    _t("CustomerCity", T, "Customer city", "San Francisco"),
    _t("CustomerRegion", T, "Customer region", "CA"),
    _t("CustomerCountry", T, "Customer country (ISO 3166-1 alpha-2)", "US"),
    _t(
        "Items",
        Kind.ITEMS,
        "Line items: a JSON array in JSON and URL contexts, <Item> elements in XML",
        '[{"sku":"SH-1","name":"Runner","category":"Shoes","quantity":1,'
        '"amount":"1000.00","payout":"27.75"}]',
    ),
    _t("EventId", T, "Unique per notification: the receiver's idempotency key (ours)",
       "0193a5b2-7c1e-7d4a-9f10-3b2c8e1d4a55"),
    _t("Trigger", T, "Why this postback was sent: TRACKED, MODIFIED or REVERSED (ours)",
       "TRACKED"),
    _t("Sequence", N, "Per-action counter: drop an update older than one you have (ours)", "1"),
)

ACTION_TOKEN_NAMES: frozenset[str] = frozenset(t.name for t in ACTION_TOKENS)
