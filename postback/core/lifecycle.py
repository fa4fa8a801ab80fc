"""Action lifecycle rules: contract dates and which changes an action still allows.

States (impact.com): PENDING (modifiable and reversible until locked), APPROVED (locked,
by date or by hand; will pay), REVERSED (will not pay). Clearing releases an approved
action's commission (StatusDetail PAID).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from postback.core.values import format_date, utc


class Status(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REVERSED = "REVERSED"


class Trigger(StrEnum):
    TRACKED = "TRACKED"
    MODIFIED = "MODIFIED"
    REVERSED = "REVERSED"
    APPROVED = "APPROVED"
    LOCKED = "LOCKED"
    CLEARED = "CLEARED"


class LockingRule(StrEnum):
    DAYS_AFTER_EVENT = "days_after_event"
    DAYS_AFTER_MONTH_END = "days_after_month_end"
    OPEN_ENDED = "open_ended"


class ClearingRule(StrEnum):
    DAYS_AFTER_LOCKING = "days_after_locking"
    DAYS_AFTER_LOCKING_MONTH_END = "days_after_locking_month_end"


#: Brand disposition and adjustment reason codes (reference §4.1).
REASON_CODES = frozenset({
    "ORDER_UPDATE", "ITEM_RETURNED", "CONS_FRAUD", "CONS_ERROR", "ORDER_ERROR",
    "PUB_ACT_DISPUTE", "ADV_ACT_DISPUTE", "NOT_COMPLIANCE_TERMS", "ITEM_OUT_OF_STOCK",
    "TEST_ACTION", "REJECTED", "OVERLIMIT_WEEKDAYCAP", "OVERLIMIT_WEEKENDCAP",
    "OVERLIMIT_BUDGET", "OVERLIMIT_ACTIONCAP", "OVERLIMIT_CONCURRENTCALLS",
    "OVERLIMIT_UNKNOWN_CALLERID", "RECALC_COMM", "MP_RETURN", "CREDITED_DIFFERENT_MP",
    "RESET", "OTHER",
})


class RuleViolation(Exception):
    """A change the ledger's rules forbid. ``rule`` is a stable machine-readable name."""

    def __init__(self, rule: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.status = status


def month_begin(dt: datetime) -> datetime:
    """Midnight UTC starting the month ``dt`` falls in."""
    return utc(dt).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def month_end(dt: datetime) -> datetime:
    """The instant a month ends: midnight UTC starting the next month."""
    dt = utc(dt)
    year, month = (dt.year + 1, 1) if dt.month == 12 else (dt.year, dt.month + 1)
    return dt.replace(year=year, month=month, day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Terms:
    """A contract's locking and clearing rules."""

    locking_rule: LockingRule
    locking_days: int
    clearing_rule: ClearingRule
    clearing_days: int

    def locking_date(self, event_date: datetime) -> datetime | None:
        if self.locking_rule is LockingRule.OPEN_ENDED:
            return None
        if self.locking_rule is LockingRule.DAYS_AFTER_EVENT:
            return utc(event_date) + timedelta(days=self.locking_days)
        return month_end(event_date) + timedelta(days=self.locking_days)

    def clearing_date(self, locked: datetime | None) -> datetime | None:
        if locked is None:
            return None
        if self.clearing_rule is ClearingRule.DAYS_AFTER_LOCKING:
            return utc(locked) + timedelta(days=self.clearing_days)
        return month_end(locked) + timedelta(days=self.clearing_days)


def check_reason(reason: str) -> None:
    if reason not in REASON_CODES:
        raise RuleViolation(
            "unknown_reason_code",
            f"reason {reason!r} is not a reason code; use one of {', '.join(sorted(REASON_CODES))}",
            422,
        )


def check_changeable(status: Status, locking_date: datetime | None, now: datetime,
                     verb: str) -> None:
    """Raise unless a PENDING action before its locking date may be ``verb``-ed."""
    if status is Status.REVERSED:
        rule = "already_reversed" if verb == "reverse" else "action_reversed"
        raise RuleViolation(rule, f"cannot {verb} this action: it is already REVERSED")
    if status is Status.APPROVED:
        raise RuleViolation(
            "action_locked", f"cannot {verb} this action: it is APPROVED (locked) and final"
        )
    if locking_date is not None and utc(now) >= utc(locking_date):
        raise RuleViolation(
            "action_locked",
            f"cannot {verb} this action: it locked at {format_date(locking_date)}",
        )


def status_detail(status: Status, cleared: bool, reversal_reason: str | None) -> str:
    """Our published ``{StatusDetail}`` enum."""
    if status is Status.PENDING:
        return "OPEN"
    if status is Status.APPROVED:
        return "PAID" if cleared else "PAYMENT_PENDING"
    return reversal_reason or "REJECTED"
