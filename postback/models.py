"""Request bodies: the API contract's shapes, validated before anything is written.

Money travels as decimal strings and is held as cents; dates must carry an offset.
Unknown fields are refused so a typo never passes silently.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from babel.numbers import list_currencies
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from postback.core.lifecycle import ClearingRule, LockingRule
from postback.core.render import BodyFormat
from postback.core.urls import url_template
from postback.core.values import MoneyError, parse_money, units_problem, utc

MAX_BATCH = 10_000


def _money(value: Any) -> int:
    try:
        return parse_money(value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None


def _non_negative(cents: int) -> int:
    if cents < 0:
        raise ValueError("must not be negative")
    return cents


_ISO = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}", re.ASCII)
#: the years a date may have, in UTC: room for every contract's locking and clearing days
#: on either side, and no arithmetic on it can leave what a datetime holds
FIRST_YEAR, LAST_YEAR = 1900, 9000


def _iso_text(value: Any) -> Any:
    """Dates arrive as ISO-8601 text (or as datetimes from our own code): a number is not
    read as a Unix time, which ``until=0.5`` would otherwise be."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO.match(value):
        raise ValueError("must be a date and time in ISO-8601 with a UTC offset, e.g. "
                         "2026-11-02T18:04:05+00:00 or ...Z")
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("needs a UTC offset, e.g. 2026-11-02T18:04:05+00:00 or ...Z")
    try:
        moment = utc(value)
    except OverflowError:
        moment = None
    if moment is None or not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise ValueError(f"must be between the years {FIRST_YEAR} and {LAST_YEAR} (in UTC)")
    return moment


def _clean_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode text (lone surrogate)") from None
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


#: ids are INTEGER primary keys, 32 bits on PostgreSQL: a larger id is refused (422) where
#: the database would fail on it (a 500) rather than find nothing
MAX_ID = 2**31 - 1
def _whole_number(value: Any) -> Any:
    """``false`` is no count of days (pydantic alone would read it as 0)."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true or false")
    return value


def _true_or_false(value: Any) -> Any:
    """Only ``true`` or ``false`` (pydantic alone would take 0, "no" or "off")."""
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


Flag = Annotated[bool, BeforeValidator(_true_or_false)]
Count = Annotated[int, BeforeValidator(_whole_number)]
Id = Annotated[Count, Field(ge=1, le=MAX_ID)]
#: money as it travels (a decimal string, documented so), held as cents
Cents = Annotated[int, BeforeValidator(_money), AfterValidator(_non_negative),
                  WithJsonSchema({"type": "string", "pattern": r"^[0-9]{1,13}(\.[0-9]{1,2})?$",
                                  "examples": ["27.75"]})]
AwareDatetime = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_aware)]
Text = Annotated[str, AfterValidator(_clean_text)]
_CURRENCIES = frozenset(list_currencies())


def _known_currency(code: str) -> str:
    if code not in _CURRENCIES:
        raise ValueError(f"{code} is not an ISO 4217 currency code; use one such as USD, EUR "
                         "or JPY")
    return code


Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. USD"),
                     AfterValidator(_known_currency)]


def _fit(currency: str | None, amounts: dict[str, int | None]) -> None:
    """The amounts (cents, by field name) fit the currency's decimals (``"100.50"`` is no
    amount of JPY); checked by the field declared after them."""
    problem = None if currency is None else units_problem(currency, amounts)
    if problem is not None:
        raise ValueError(problem[1])


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=65536)


class PartnerType(StrEnum):
    CASHBACK = "cashback"
    LOYALTY = "loyalty"
    CONTENT = "content"
    COUPON = "coupon"
    OTHER = "other"


class BrandIn(Strict):
    name: Annotated[Text, Field(min_length=1, max_length=200)]


class PartnerIn(Strict):
    name: Annotated[Text, Field(min_length=1, max_length=200)]
    partner_type: PartnerType


class ApiKeyIn(Strict):
    account_type: Literal["brand", "partner"]
    account_id: Id


class ProgramIn(Strict):
    name: Annotated[Text, Field(min_length=1, max_length=200)]
    currency: Currency


class EventTypeIn(Strict):
    name: Annotated[Text, Field(min_length=1, max_length=200)]
    action_type: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,39}$",
                                      description="e.g. SALE, LEAD")]


class LockingIn(Strict):
    rule: LockingRule
    days: Annotated[Count, Field(ge=0, le=3650)] = 0


class ClearingIn(Strict):
    rule: ClearingRule
    days: Annotated[Count, Field(ge=0, le=3650)] = 0


class ContractIn(Strict):
    event_type_ids: Annotated[list[Id], Field(min_length=1, max_length=1000)]
    locking: LockingIn
    clearing: ClearingIn


class ItemIn(Strict):
    sku: Annotated[Text, Field(max_length=255)]
    name: Annotated[Text | None, Field(max_length=500)] = None
    category: Annotated[Text | None, Field(max_length=255)] = None
    quantity: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] = 1
    amount: Cents | None = None
    payout: Cents | None = None


class ActionIn(Strict):
    program_id: Id
    event_type_id: Id
    partner_id: Id
    oid: Annotated[Text, Field(min_length=1, max_length=255)]
    amount: Cents
    payout: Cents
    currency: Currency | None = None
    event_date: AwareDatetime
    referring_type: Annotated[str | None, Field(pattern=r"^[A-Z_]{1,40}$")] = None
    referring_date: AwareDatetime | None = None
    referring_domain: Annotated[Text | None, Field(max_length=255)] = None
    sub_id1: Annotated[Text | None, Field(max_length=2048)] = None
    sub_id2: Annotated[Text | None, Field(max_length=2048)] = None
    sub_id3: Annotated[Text | None, Field(max_length=2048)] = None
    shared_id: Annotated[Text | None, Field(max_length=2048)] = None
    promo_code: Annotated[Text | None, Field(max_length=255)] = None
    ad_id: Annotated[Text | None, Field(max_length=64)] = None
    event_code: Annotated[Text | None, Field(max_length=255)] = None
    customer_id: Annotated[Text | None, Field(max_length=255)] = None
    customer_status: Literal["NEW", "EXISTING"] | None = None
    customer_area: Annotated[Text | None, Field(max_length=64)] = None
    customer_city: Annotated[Text | None, Field(max_length=255)] = None
    customer_region: Annotated[Text | None, Field(max_length=255)] = None
    customer_country: Annotated[str | None, Field(pattern=r"^[A-Z]{2}$")] = None
    items: Annotated[list[ItemIn], Field(max_length=1000)] = []

    @field_validator("currency")
    @classmethod
    def _amounts_fit(cls, currency: str | None, info: ValidationInfo) -> str | None:
        _fit(currency, {"amount": info.data.get("amount"), "payout": info.data.get("payout")})
        return currency

    @field_validator("items")
    @classmethod
    def _items_fit(cls, items: list[ItemIn], info: ValidationInfo) -> list[ItemIn]:
        _fit(info.data.get("currency"), {
            f"items[{i}].{name}": getattr(item, name)
            for i, item in enumerate(items) for name in ("amount", "payout")})
        return items


class ActionBatchIn(Strict):
    actions: Annotated[list[ActionIn], Field(min_length=1, max_length=MAX_BATCH)]


class ActionPatchIn(Strict):
    amount: Cents | None = None
    payout: Cents | None = None
    reason: str


class ReasonIn(Strict):
    reason: str = "REJECTED"


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
_RESERVED_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "content-type",
                     "user-agent", "webhook-id", "webhook-timestamp", "webhook-signature",
                     "webhook-test"}


def _headers(value: dict[str, str]) -> dict[str, str]:
    for name, val in value.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP token")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by the sender; remove it")
        if any(c in val for c in "\r\n\x00"):
            raise ValueError(f"header {name!r} value must not contain CR, LF or NUL")
        if len(val) > 4096:
            raise ValueError(f"header {name!r} value is over 4096 characters")
    return value


#: checked as the sender will read it, and saved as it will be sent
UrlTemplate = Annotated[Text, Field(min_length=1, max_length=65536),
                        AfterValidator(url_template)]


class NotificationSettingIn(Strict):
    url: UrlTemplate
    method: Literal["GET", "POST"] = "GET"
    body_format: BodyFormat = BodyFormat.JSON
    body: Annotated[Text, Field(max_length=65536)] = ""
    headers: Annotated[dict[str, str], AfterValidator(_headers), Field(max_length=50)] = {}
    enabled: Flag = True
    minimum_delay_seconds: Annotated[Count, Field(ge=0, le=86400)] = 0
    max_requests_per_second: Annotated[float | None, Field(gt=0, le=100_000)] = None
    success_response: Annotated[Text | None, Field(min_length=1, max_length=1000)] = None
    error_response: Annotated[Text | None, Field(min_length=1, max_length=1000)] = None
    extra_triggers: Annotated[list[Literal["LOCKED", "PAID"]], Field(max_length=2)] = []
    signed: Flag = False
    signing_scheme: Literal["v1", "v1a"] = "v1"


class RotateIn(Strict):
    grace_seconds: Annotated[Count, Field(ge=0, le=7 * 86400)] = 86400


class RecoverIn(Strict):
    since: AwareDatetime
    until: AwareDatetime | None = None
    type: Literal["action-lifecycle", "action-clearing", "action-inquiry",
                  "product-data-change"] | None = None


class ReplayIn(Strict):
    """Send every notification of the window again (``services/replay.py``)."""

    since: AwareDatetime
    until: AwareDatetime | None = None
    type: Literal["action-lifecycle", "action-clearing", "action-inquiry",
                  "product-data-change"] | None = None
    #: a one-off URL instead of each setting's own, checked as a setting's URL is
    url: Annotated[Text, Field(min_length=1, max_length=4096),
                   AfterValidator(url_template)] | None = None


class SettingTestIn(Strict):
    """Overrides for a test send; anything left out comes from the saved setting."""

    url: UrlTemplate | None = None
    method: Literal["GET", "POST"] | None = None
    body_format: BodyFormat | None = None
    body: Annotated[Text | None, Field(max_length=65536)] = None
    sample_id: Id | None = None


class EventLevelSettingIn(NotificationSettingIn):
    """An Action Life Cycle setting for one (program, event type): new actions only."""

    program_id: Id
    event_type_id: Id


class BrandPostbackIn(NotificationSettingIn):
    """A postback a brand creates for one partner, for one event type in its contract."""

    event_type_id: Id


class InquiryIn(Strict):
    program_id: Id
    inquiry_type: Literal["UNTRACKED", "INCORRECT", "DECLINED"]
    oid: Annotated[Text, Field(min_length=1, max_length=255)]
    transaction_date: AwareDatetime
    transaction_amount: Cents
    expected_payout: Cents
    customer_id: Annotated[Text | None, Field(max_length=255)] = None
    media_partner_inquiry_id: Annotated[Text | None, Field(max_length=255)] = None
    notes: Annotated[Text | None, Field(max_length=4000)] = None


class ResolveIn(Strict):
    resolution_status: Literal["VALID", "DECLINED"]
    event_type_id: Id | None = None
    amount: Cents | None = None
    payout: Cents | None = None
    transaction_date: AwareDatetime | None = None
    reject_reason: str | None = None


class AutoApprovalIn(Strict):
    mode: Literal["off", "immediately", "after_days", "days_after_month_end"] = "off"
    days: Annotated[Count, Field(ge=0, le=365)] = 0
    max_expected_payout: Cents | None = None
    monthly_cap: Cents | None = None
    event_type_id: Id | None = None


class InquirySettingsIn(Strict):
    resolution_deadline_days: Annotated[Count | None, Field(ge=0, le=365)] = None
    auto_approval: AutoApprovalIn = AutoApprovalIn()


_Short = Annotated[Text | None, Field(max_length=255)]
_Url = Annotated[Text | None, Field(max_length=2048)]


class CatalogItemIn(Strict):
    """A catalog item's fields (reference §3.4); absent and null mean the same."""

    name: Annotated[Text, Field(min_length=1, max_length=500)]
    description: Annotated[Text | None, Field(max_length=10_000)] = None
    manufacturer: _Short = None
    url: _Url = None
    mobile_url: _Url = None
    image_url: _Url = None
    current_price: Cents | None = None
    original_price: Cents | None = None
    currency: Currency | None = None
    stock_availability: Annotated[Text | None, Field(max_length=40)] = None
    gtin: _Short = None
    asin: _Short = None
    mpn: _Short = None
    category: _Short = None
    sub_category: _Short = None
    parent_sku: _Short = None
    colors: _Short = None
    size: _Short = None
    condition: _Short = None
    gender: _Short = None
    age_group: _Short = None

    @field_validator("currency")
    @classmethod
    def _prices_fit(cls, currency: str | None, info: ValidationInfo) -> str | None:
        _fit(currency, {"current_price": info.data.get("current_price"),
                        "original_price": info.data.get("original_price")})
        return currency


class CatalogBulkItemIn(CatalogItemIn):
    item_id: Annotated[Text, Field(min_length=1, max_length=255)]


class CatalogBulkIn(Strict):
    items: Annotated[list[CatalogBulkItemIn], Field(max_length=MAX_BATCH)]
    remove_missing: Flag = False


# -- scheduled data feeds (services/feeds.py checks what the schema cannot) ----------------

class FeedScheduleIn(Strict):
    """When a feed runs, in ``time_zone`` (IANA, default UTC): ``at`` is ``":MM"`` for
    hourly, ``"HH:MM"`` otherwise; ``day`` a weekday name (weekly) or 1..28 or ``"last"``
    (monthly)."""

    every: Literal["hourly", "daily", "weekly", "monthly"]
    at: Annotated[Text, Field(max_length=16)] | None = None
    day: Annotated[Count, Field(ge=-2**31, le=2**31 - 1)] | Annotated[
        Text, Field(max_length=16)] | None = None
    time_zone: Annotated[Text, Field(min_length=1, max_length=64)] = "UTC"


class FeedWindowIn(Strict):
    """A rolling window: each action changed in the last ``days`` days, once, as it is now."""

    days: Annotated[Count, Field(ge=1, le=90)]


class HostedDestinationIn(Strict):
    """Kept here for ``POSTBACK_FEED_RETENTION_DAYS``: downloaded with the partner's key or
    the run's signed link."""

    kind: Literal["hosted"]


class SftpDestinationIn(Strict):
    """The partner's SFTP server. ``password`` or ``private_key`` (OpenSSH or PEM, without a
    passphrase); left out on an update, the stored one is kept if host, port and username
    are unchanged. ``host_key`` (``"ssh-ed25519 AAAA..."``) pins the server's key: left out,
    the key is pinned at the first connection; ``null`` on an update clears the pin."""

    kind: Literal["sftp"]
    host: Annotated[Text, Field(min_length=1, max_length=253)]
    port: Annotated[Count, Field(ge=1, le=65535)] = 22
    username: Annotated[Text, Field(min_length=1, max_length=255)]
    password: Annotated[Text, Field(min_length=1, max_length=1024)] | None = None
    private_key: Annotated[Text, Field(min_length=1, max_length=16384)] | None = None
    directory: Annotated[Text, Field(min_length=1, max_length=1024)] = "."
    host_key: Annotated[Text, Field(min_length=1, max_length=8192)] | None = None


class EmailDestinationIn(Strict):
    """Sent by email through the operator's relay: attached, or as its signed link."""

    kind: Literal["email"]
    to: Annotated[list[Annotated[Text, Field(max_length=254)]], Field(min_length=1,
                                                                     max_length=50)]
    attach: Flag = True


def _feed_window(value: Any) -> Any:
    """``"since_last_run"`` (the default) or ``{"days": N}``."""
    if value == "since_last_run":
        return None
    if value is not None and not isinstance(value, dict):
        raise ValueError('use "since_last_run", or {"days": N} for the actions changed in '
                         "the last N days (1 to 90)")
    return value


FeedWindow = Annotated[FeedWindowIn | None, BeforeValidator(_feed_window), WithJsonSchema({
    "anyOf": [{"const": "since_last_run", "type": "string"},
              {"type": "object", "required": ["days"], "additionalProperties": False,
               "properties": {"days": {"type": "integer", "minimum": 1, "maximum": 90}}},
              {"type": "null"}]})]
FeedDestinationIn = Annotated[HostedDestinationIn | SftpDestinationIn | EmailDestinationIn,
                              Field(discriminator="kind")]


class FeedIn(Strict):
    """A scheduled data feed (``POST /v1/feeds``, ``PUT /v1/feeds/{id}``)."""

    name: Annotated[Text, Field(max_length=200)] = ""
    content: Literal["actions", "catalog"]
    #: catalog: the program (you must be contracted on it); actions: only that program's
    program_id: Id | None = None
    schedule: FeedScheduleIn
    #: actions only (default since_last_run); a catalog feed is always the whole catalog
    window: FeedWindow = None
    format: Literal["csv", "tab", "pipe", "xml", "jsonl"]
    gzip: Flag = False
    #: csv, tab and pipe: the first row names the columns
    header: Flag = True
    columns: Annotated[list[Annotated[Text, Field(max_length=64)]], Field(max_length=200)]
    destination: FeedDestinationIn
    enabled: Flag = True
