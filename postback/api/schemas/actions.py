"""Actions and their history (``services/ledger.py``: ``action_out``, ``update_out``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from postback.api.schemas.base import Money, Out, Paged, Timestamp
from postback.core.lifecycle import Status, Trigger


class ActionItemOut(Out):
    sku: str
    name: str | None
    category: str | None
    quantity: int
    amount: Money | None
    payout: Money | None


class ActionOut(Out):
    """An action: money as decimal strings, every date in UTC."""

    id: int
    program_id: int
    event_type_id: int
    partner_id: int
    oid: str
    status: Status
    status_detail: str = Field(description="OPEN (PENDING), PAYMENT_PENDING or PAID "
                               "(APPROVED), or the reason code of a REVERSED action")
    amount: Money
    payout: Money
    original_amount: Money
    original_payout: Money
    currency: str
    event_date: Timestamp
    creation_date: Timestamp
    locking_date: Timestamp | None
    clearing_date: Timestamp | None
    locked_at: Timestamp | None
    cleared_at: Timestamp | None
    sequence: int
    referring_type: str | None
    referring_date: Timestamp | None
    referring_domain: str | None
    sub_id1: str | None
    sub_id2: str | None
    sub_id3: str | None
    shared_id: str | None
    promo_code: str | None
    ad_id: str | None
    event_code: str | None
    customer_id: str | None
    customer_status: Literal["NEW", "EXISTING"] | None
    customer_area: str | None
    customer_city: str | None
    customer_region: str | None
    customer_country: str | None
    items: list[ActionItemOut]
    updated_at: Timestamp


class ActionUpdateOut(Out):
    """One change of an action, in order (``sequence`` 1 is TRACKED)."""

    sequence: int
    trigger: Trigger
    reason: str | None
    status: Status
    amount: Money
    payout: Money
    delta_amount: Money
    delta_payout: Money
    created_at: Timestamp


class ActionDetailOut(ActionOut):
    """An action with every change it went through."""

    updates: list[ActionUpdateOut]


class ReportedOut(Out):
    id: int
    oid: str
    status: Status


class BatchOut(Out):
    items: list[ReportedOut]
    count: int


class ActionPage(Paged[ActionOut]):
    pass
