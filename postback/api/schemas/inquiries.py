"""Inquiries and a program's inquiry settings (``services/inquiries.py``: ``inquiry_out``,
``policy_out``)."""

from __future__ import annotations

from typing import Literal

from postback.api.schemas.base import Money, Out, Paged, Timestamp
from postback.core.inquiries import AutoMode, InquiryState


class InquiryOut(Out):
    id: int
    program_id: int
    brand_id: int
    partner_id: int
    inquiry_type: Literal["UNTRACKED", "INCORRECT", "DECLINED"]
    oid: str
    transaction_date: Timestamp
    transaction_amount: Money
    expected_payout: Money
    currency: str
    customer_id: str | None
    media_partner_inquiry_id: str | None
    notes: str | None
    state: InquiryState
    resolution_status: Literal["UNRESOLVED", "VALID", "DECLINED", "CLOSED"]
    reject_reason: str | None
    final_payout: Money | None
    resolution_date: Timestamp | None
    resolution_deadline_date: Timestamp | None
    auto_approval_date: Timestamp | None
    action_id: int | None
    sequence: int
    creation_date: Timestamp


class AutoApprovalOut(Out):
    mode: AutoMode
    days: int
    max_expected_payout: Money | None
    monthly_cap: Money | None
    event_type_id: int | None


class InquirySettingsOut(Out):
    resolution_deadline_days: int | None
    auto_approval: AutoApprovalOut


class InquiryPage(Paged[InquiryOut]):
    pass
