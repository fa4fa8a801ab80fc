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
    _t("ClearedDate", D, "When the commission cleared; empty until then",
       "2026-12-22T18:04:05+00:00"),
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
    _t("ChangeId", T, "Unique per change: the same in every postback of one change and in "
       "the updates feed (ours)", "0193a5b2-7c1d-7b20-8c41-5e6f7a8b9c0d"),
    _t("Trigger", T, "Why this postback was sent: TRACKED, MODIFIED or REVERSED (ours)",
       "TRACKED"),
    _t("Sequence", N, "Per-action counter: drop an update older than one you have (ours)", "1"),
)

ACTION_TOKEN_NAMES: frozenset[str] = frozenset(t.name for t in ACTION_TOKENS)

INQUIRY_TOKENS: tuple[Token, ...] = (
    _t("InquiryId", N, "Inquiry ID", "311"),
    _t("MediaPartnerInquiryId", T, "Your own claim ID, as you sent it", "CLAIM-88121"),
    _t("CampaignId", N, "Program ID", "1000"),
    _t("CampaignName", T, "Program name", "Acme Shoes US"),
    _t("MediaPartnerId", N, "Partner ID", "77"),
    _t("MediaPartnerName", T, "Partner name", "Cashback World"),
    _t("InquiryType", T, "UNTRACKED, INCORRECT or DECLINED", "UNTRACKED"),
    _t("OrderId", T, "The order the inquiry is about", "ORD-2026-55102"),
    _t("Oid", T, "The same as OrderId", "ORD-2026-55102"),
    _t("TransactionDate", D, "When the order was placed", "2026-11-02T18:04:05+00:00"),
    _t("TransactionAmount", M, "Order amount", "1000.00"),
    _t("ExpectedPayout", M, "The payout the partner asks for", "27.75"),
    _t("Currency", T, "ISO 4217 currency of the amounts", "USD"),
    _t("CustomerId", T, "The customer reference", "C-99812"),
    _t("InquiryNotes", T, "The partner's notes", "Member sent the order confirmation"),
    _t("InquiryDate", D, "When the inquiry was created", "2026-11-20T09:15:00+00:00"),
    _t("CreationDate", D, "When the inquiry was created", "2026-11-20T09:15:00+00:00"),
    _t("ResolutionDeadlineDate", D, "When the brand should have resolved it",
       "2026-12-20T09:15:00+00:00"),
    _t("AutoApprovalDate", D, "When auto-approval rules will look at it; empty if none",
       "2026-12-31T00:00:00+00:00"),
    _t("ResolutionStatus", T, "UNRESOLVED, VALID, DECLINED, or CLOSED (closed by you)",
       "VALID"),
    _t("RejectReason", T, "Why it was declined (one of the published reasons)", ""),
    _t("FinalPayout", M, "The payout granted; empty until resolved VALID", "27.75"),
    _t("ResolutionDate", D, "When it was resolved or closed", "2026-11-25T10:00:00+00:00"),
    _t("ActionId", T, "The action a VALID resolution created", "1043"),
    _t("EventId", T, "Unique per notification: the receiver's idempotency key (ours)",
       "0193a5b2-7c1e-7d4a-9f10-3b2c8e1d4a56"),
    _t("ChangeId", T, "Unique per change: the same in every postback of one change and in "
       "the updates feed (ours)", "0193a5b2-7c1d-7b20-8c41-5e6f7a8b9c0d"),
    _t("Trigger", T, "INQUIRY_CREATED or INQUIRY_RESOLVED (ours)", "INQUIRY_RESOLVED"),
    _t("Sequence", N, "Per-inquiry counter (ours)", "2"),
)

CATALOG_TOKENS: tuple[Token, ...] = (
    _t("CatalogItemId", T, "The brand's item ID", "SH-1001-42"),
    _t("CampaignId", N, "Program ID", "1000"),
    _t("CampaignName", T, "Program name", "Acme Shoes US"),
    _t("Name", T, "Item name", "Trail Runner 2"),
    _t("Description", T, "Item description", "Lightweight trail shoe"),
    _t("Manufacturer", T, "Manufacturer", "Acme"),
    _t("Url", T, "Product (tracking) URL", "https://shop.example/p/sh-1001"),
    _t("MobileUrl", T, "Mobile product URL", ""),
    _t("ImageUrl", T, "Image URL", "https://shop.example/i/sh-1001.jpg"),
    _t("CurrentPrice", M, "Current price", "89.00"),
    _t("OriginalPrice", M, "Price before discount", "119.00"),
    _t("DiscountPercentage", M, "Discount from the original price, in percent", "25.21"),
    _t("Currency", T, "ISO 4217 currency of the prices", "USD"),
    _t("StockAvailability", T, "InStock or OutOfStock (or as the brand sends it)", "InStock"),
    _t("Gtin", T, "GTIN", "00012345678905"),
    _t("Asin", T, "ASIN", ""),
    _t("Mpn", T, "Manufacturer part number", "TR2-42"),
    _t("Category", T, "Category", "Shoes"),
    _t("SubCategory", T, "Sub-category", "Trail"),
    _t("ParentSku", T, "Parent SKU of a variant", "SH-1001"),
    _t("Colors", T, "Colours", "Blue"),
    _t("Size", T, "Size", "42"),
    _t("Condition", T, "Condition", "New"),
    _t("Gender", T, "Gender", "Unisex"),
    _t("AgeGroup", T, "Age group", "Adult"),
    _t("ChangeType", T, "ADDED, UPDATED or REMOVED (ours)", "UPDATED"),
    _t("ChangedFields", T, "Comma-separated tokens whose values changed (ours)",
       "CurrentPrice,StockAvailability"),
    _t("EventId", T, "Unique per notification: the receiver's idempotency key (ours)",
       "0193a5b2-7c1e-7d4a-9f10-3b2c8e1d4a57"),
    _t("ChangeId", T, "Unique per change: the same in every postback of one change and in "
       "the updates feed (ours)", "0193a5b2-7c1d-7b20-8c41-5e6f7a8b9c0d"),
    _t("Trigger", T, "The same as ChangeType (ours)", "UPDATED"),
)
