"""Pure rules: retry classification and schedule, contract dates, change permissions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from postback.core.lifecycle import (
    ClearingRule,
    LockingRule,
    RuleViolation,
    Status,
    Terms,
    check_changeable,
)
from postback.core.retry import (
    DEFAULT_SCHEDULE,
    ErrorClass,
    Outcome,
    RetryPolicy,
    classify,
    parse_retry_after,
    parse_schedule,
)
from postback.core.values import MoneyError, format_money, parse_money

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("status", "error", "outcome"), [
    (200, None, Outcome.SUCCESS), (202, None, Outcome.SUCCESS), (204, None, Outcome.SUCCESS),
    (301, None, Outcome.PERMANENT), (302, None, Outcome.PERMANENT),
    (400, None, Outcome.PERMANENT), (404, None, Outcome.PERMANENT), (410, None, Outcome.PERMANENT),
    (408, None, Outcome.RETRY), (429, None, Outcome.RETRY),
    (500, None, Outcome.RETRY), (503, None, Outcome.RETRY),
    (None, ErrorClass.TIMEOUT, Outcome.RETRY), (None, ErrorClass.CONNECTION, Outcome.RETRY),
    (None, ErrorClass.TLS, Outcome.RETRY),
    (None, ErrorClass.DNS, Outcome.PERMANENT), (None, ErrorClass.INVALID_URL, Outcome.PERMANENT),
])
def test_classification(status: int | None, error: ErrorClass | None, outcome: Outcome) -> None:
    assert classify(status, error)[0] is outcome


def test_default_schedule_is_15_retries_over_about_three_days() -> None:
    assert len(DEFAULT_SCHEDULE) == 15
    # the reference calls it "≈3.5 days"; the delays it lists add up to 2.9 days
    assert 2.9 < sum(DEFAULT_SCHEDULE) / 86400 < 2.91


def test_jitter_stays_within_20_percent_and_retries_run_out() -> None:
    policy = RetryPolicy()
    assert policy.next_delay(1, 500, None, None, 0.0) == pytest.approx(8.0)
    assert policy.next_delay(1, 500, None, None, 0.9999999) == pytest.approx(12.0)
    assert policy.next_delay(15, 500, None, None, 0.5) == pytest.approx(86400)
    assert policy.next_delay(16, 500, None, None, 0.5) is None


def test_throttling_and_timeouts_wait_at_least_a_minute() -> None:
    policy = RetryPolicy()
    assert policy.next_delay(1, 429, None, None, 0.5) == 60
    assert policy.next_delay(1, None, ErrorClass.TIMEOUT, None, 0.5) == 60
    assert policy.next_delay(1, None, ErrorClass.CONNECTION, None, 0.5) == 10


def test_retry_after_is_honoured_never_shortens_and_is_capped() -> None:
    policy = RetryPolicy()
    assert policy.next_delay(1, 503, None, 120.0, 0.5) == 120
    assert policy.next_delay(5, 503, None, 1.0, 0.5) == 300
    assert policy.next_delay(1, 503, None, 10 * 86400.0, 0.5) == 86400


def test_retry_after_parsing() -> None:
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after("Sat, 28 Nov 2026 12:01:00 GMT", NOW) == 60
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_schedule_setting() -> None:
    assert parse_schedule("10, 30,60") == (10, 30, 60)
    with pytest.raises(ValueError, match="POSTBACK_RETRY_SCHEDULE"):
        parse_schedule("10,soon")


def test_locking_and_clearing_dates() -> None:
    event = datetime(2026, 11, 2, 18, 4, 5, tzinfo=UTC)
    by_event = Terms(LockingRule.DAYS_AFTER_EVENT, 30, ClearingRule.DAYS_AFTER_LOCKING, 20)
    assert by_event.locking_date(event) == datetime(2026, 12, 2, 18, 4, 5, tzinfo=UTC)
    assert by_event.clearing_date(by_event.locking_date(event)) == datetime(
        2026, 12, 22, 18, 4, 5, tzinfo=UTC)
    month = Terms(LockingRule.DAYS_AFTER_MONTH_END, 27,
                  ClearingRule.DAYS_AFTER_LOCKING_MONTH_END, 20)
    locked = month.locking_date(event)
    assert locked == datetime(2026, 12, 28, tzinfo=UTC)
    assert month.clearing_date(locked) == datetime(2027, 1, 21, tzinfo=UTC)
    open_ended = Terms(LockingRule.OPEN_ENDED, 0, ClearingRule.DAYS_AFTER_LOCKING, 5)
    assert open_ended.locking_date(event) is None
    assert open_ended.clearing_date(None) is None


def test_changes_allowed_only_while_pending_and_before_locking() -> None:
    check_changeable(Status.PENDING, None, NOW, "modify")
    with pytest.raises(RuleViolation) as err:
        check_changeable(Status.PENDING, NOW, NOW, "modify")
    assert err.value.rule == "action_locked"
    with pytest.raises(RuleViolation) as err:
        check_changeable(Status.REVERSED, None, NOW, "reverse")
    assert err.value.rule == "already_reversed"
    with pytest.raises(RuleViolation) as err:
        check_changeable(Status.APPROVED, None, NOW, "modify")
    assert err.value.rule == "action_locked"


def test_money_is_exact() -> None:
    assert parse_money("10.5") == 1050
    assert parse_money("0.01") == 1
    assert parse_money("12") == 1200
    assert format_money(1050) == "10.50"
    assert format_money(-5) == "-0.05"
    # numbers, non-ASCII digits, spaces: mistakes to report, not amounts to guess at
    arabic_indic = "\u0661\u0662.\u0660\u0660"
    for bad in (10.5, 12, "10.555", "1e3", "", True, None, arabic_indic, " 1.00 ", "1.00\n"):
        with pytest.raises(MoneyError):
            parse_money(bad)


def test_every_action_token_has_a_value() -> None:
    from postback.core.payload import GETTERS
    from postback.core.tokens import ACTION_TOKEN_NAMES

    assert set(GETTERS) == ACTION_TOKEN_NAMES


def test_every_inquiry_and_catalog_token_has_a_value() -> None:
    from postback.core.payload import INQUIRY_GETTERS, CatalogContext, catalog_values
    from postback.core.tokens import CATALOG_TOKENS, INQUIRY_TOKENS

    assert set(INQUIRY_GETTERS) == {t.name for t in INQUIRY_TOKENS}
    values = catalog_values(CatalogContext("X", {"current_price": 8900,
                                                 "original_price": 11900}, 1, "P",
                                           "UPDATED", ("CurrentPrice",), "e"))
    assert set(values) == {t.name for t in CATALOG_TOKENS}
    assert values["DiscountPercentage"] == "25.21" and values["CurrentPrice"] == "89.00"
