"""Action inquiries (missing-commission claims): types, outcomes and dates (reference §4.2)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from postback.core.lifecycle import month_end
from postback.core.values import utc


class InquiryType(StrEnum):
    UNTRACKED = "UNTRACKED"
    INCORRECT = "INCORRECT"
    DECLINED = "DECLINED"


class InquiryState(StrEnum):
    OPEN = "OPEN"
    RESOLVED = "RESOLVED"  # by the brand (or its auto-approval rules)
    CLOSED = "CLOSED"  # withdrawn by the partner


#: ``{ResolutionStatus}``: impact.com's values, plus CLOSED for an inquiry the partner
#: closed before the brand resolved it.
UNRESOLVED, VALID, DECLINED, CLOSED = "UNRESOLVED", "VALID", "DECLINED", "CLOSED"

#: The exact reject reasons a DECLINED resolution must use.
REJECT_REASONS: tuple[str, ...] = (
    "This transaction has been tracked successfully",
    "Another marketing channel was credited with the sale",
    "Another marketing channel was credited with the sale, due to a voucher/discount code used",
    "Did not meet terms and conditions set by merchant",
    "Transaction not completed - Order cancelled, changed, or returned",
    "Transaction cannot be traced",
    "Transaction not fully completed online",
    "Enquiry does not provide complete information required for evaluation",
    "Other",
)

#: Partner types that may use inquiries and inquiry postbacks (impact.com: cashback and
#: loyalty partners only).
INQUIRY_PARTNER_TYPES = frozenset({"cashback", "loyalty"})


class AutoMode(StrEnum):
    OFF = "off"
    IMMEDIATELY = "immediately"
    AFTER_DAYS = "after_days"
    DAYS_AFTER_MONTH_END = "days_after_month_end"


@dataclass(frozen=True)
class InquiryPolicy:
    """A program's inquiry settings: the resolution deadline and auto-approval rules."""

    deadline_days: int | None = None
    auto_mode: AutoMode = AutoMode.OFF
    auto_days: int = 0
    max_expected_payout: int | None = None  # cents: only inquiries asking less than this
    monthly_cap: int | None = None  # cents: only while the month's approved total is under
    event_type_id: int | None = None  # the event type auto-approved actions get

    def deadline(self, created: datetime) -> datetime | None:
        return None if self.deadline_days is None else utc(created) + timedelta(
            days=self.deadline_days)

    def auto_approval_date(self, created: datetime) -> datetime | None:
        if self.auto_mode is AutoMode.OFF or self.event_type_id is None:
            return None
        if self.auto_mode is AutoMode.IMMEDIATELY:
            return utc(created)
        if self.auto_mode is AutoMode.AFTER_DAYS:
            return utc(created) + timedelta(days=self.auto_days)
        return month_end(created) + timedelta(days=self.auto_days)

    def may_auto_approve(self, expected_payout: int, approved_this_month: int) -> bool:
        if self.max_expected_payout is not None and expected_payout >= self.max_expected_payout:
            return False
        return self.monthly_cap is None or approved_this_month + expected_payout <= (
            self.monthly_cap)
