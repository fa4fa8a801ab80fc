"""Event Notifications settings, brand-created postbacks, signing secrets and the test tool
(``services/notification_settings.py``: ``setting_out``, ``list_settings``; and
``services/test_tool.py``: ``send_test``)."""

from __future__ import annotations

from typing import Literal

from pydantic import MISSING, Field

from postback.api.schemas.base import Listed, Method, NotificationType, Out, Timestamp
from postback.core.render import BodyFormat
from postback.core.retry import ErrorClass, Outcome

Trigger = Literal["TRACKED", "MODIFIED", "REVERSED", "LOCKED", "CLEARED", "PAID",
                  "INQUIRY_CREATED", "INQUIRY_RESOLVED", "ADDED", "UPDATED", "REMOVED"]


class SettingOut(Out):
    """A setting as its owner reads it: header values masked, a disable explained, the
    signing secret never (only ``signing_public_key``, which is public)."""

    id: int
    type: NotificationType
    scope: Literal["global", "event_level", "brand"]
    program_id: int | None
    event_type_id: int | None
    brand_id: int | None
    url: str
    method: Method
    body_format: BodyFormat
    body: str
    headers: dict[str, str] = Field(description="each value masked as ********")
    enabled: bool
    minimum_delay_seconds: int
    max_requests_per_second: float | None
    success_response: str | None
    error_response: str | None
    extra_triggers: list[Literal["LOCKED", "PAID"]]
    signed: bool
    signing_scheme: Literal["v1", "v1a"] | None
    signing_public_key: str | None
    signing_rotation_ends_at: Timestamp | None
    disabled_at: Timestamp | None
    disabled_reason: str | None
    created_at: Timestamp
    updated_at: Timestamp


class HeldSettingOut(SettingOut):
    held_deliveries: int = Field(description="deliveries held while the setting is off")


class SavedSettingOut(SettingOut):
    """A saved setting, and what saved but needs attention."""

    signing_secret: str | MISSING = Field(
        MISSING, description="a new signing secret (v1: whsec_, v1a: the whsk_ private key), "
        "shown only in the answer that made it")
    warnings: list[str]


class NotificationTypeOut(Out):
    """A notification type, whether this partner may use it, and its setting (if saved)."""

    type: NotificationType
    title: str
    fires_on: list[Trigger]
    tokens: list[str]
    available: bool
    unavailable_reason: str | None
    setting: HeldSettingOut | None


class RotatedOut(Out):
    """The new signing secret, shown once; the previous one signs beside it until
    ``previous_secret_expires_at``."""

    signing_secret: str
    signing_public_key: str | None
    previous_secret_expires_at: Timestamp


class DiscardedOut(Out):
    discarded: int


class TestRequestOut(Out):
    method: Method
    url: str
    headers: dict[str, str] = Field(description="the saved header values masked")
    body: str | None


class TestResponseOut(Out):
    status: int
    headers: dict[str, str] | None
    body: str | None


class TestResultOut(Out):
    """The test request as sent, the answer, and what it means."""

    __test__ = False  # not a pytest class, whatever its name

    request: TestRequestOut
    response: TestResponseOut | None
    left_out_headers: list[str]
    test_signing_secret: str | None
    test_signing_public_key: str | None
    sent_at: Timestamp
    latency_ms: float
    outcome: Outcome
    error_class: ErrorClass | None
    error: str | None
    diagnosis: str


class NotificationTypeList(Listed[NotificationTypeOut]):
    """Every notification type, each with this partner's setting of it."""


class SettingList(Listed[SettingOut]):
    pass
