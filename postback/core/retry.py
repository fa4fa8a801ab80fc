"""Retry policy: how an attempt's result is classified and when the next one is due.

Success is a 2xx. Retried: timeouts, connection errors, temporary DNS failures, TLS errors,
internal failures, 408, 429 and 5xx. Permanent: an invalid URL, a request that cannot be
sent as written, a host that does not exist (NXDOMAIN), a refused address, 3xx (redirects
are never followed) and any other 4xx.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

DEFAULT_SCHEDULE: tuple[float, ...] = (
    10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 21600, 28800, 43200, 43200, 86400,
)
MAX_DELAY = 86400.0


class Outcome(StrEnum):
    SUCCESS = "success"
    RETRY = "retry"
    PERMANENT = "permanent_failure"


class ErrorClass(StrEnum):
    """Why an attempt got no usable HTTP answer (or which kind of answer it got)."""

    TIMEOUT = "timeout"
    CONNECTION = "connection_error"
    DNS = "dns_failure"  # the name does not exist (NXDOMAIN, no address): permanent
    DNS_TEMPORARY = "dns_temporary"  # the resolver failed or timed out (SERVFAIL...): retried
    INVALID_URL = "invalid_url"
    INVALID_REQUEST = "invalid_request"  # a header that cannot go on the wire: permanent
    TLS = "tls_error"
    REDIRECT = "redirect"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    UNEXPECTED_RESPONSE = "unexpected_response"
    BLOCKED = "blocked_address"
    EXHAUSTED = "retries_exhausted"
    #: a failure on our side (a bug, a stored value that does not read): retried on the
    #: schedule like any failure, so it is bounded
    INTERNAL = "internal"


_PERMANENT = frozenset({ErrorClass.INVALID_URL, ErrorClass.INVALID_REQUEST, ErrorClass.DNS,
                        ErrorClass.BLOCKED})


def classify(status: int | None, error: ErrorClass | None, body: str | None = None,
             success_response: str | None = None,
             error_response: str | None = None) -> tuple[Outcome, ErrorClass | None]:
    """The outcome of one attempt, from its HTTP status or its transport error.

    Without a status: an invalid URL, an invalid request, NXDOMAIN (``DNS``) and a refused
    address are permanent (sending again would fail the same way); anything else
    (timeouts, connection and TLS errors, ``DNS_TEMPORARY``, ``INTERNAL``) is retried.
    With a setting's Success Response, a 2xx whose body lacks that text is a failure to
    retry; with its Error Response, a 2xx whose body contains that text is one too.
    """
    if status is None:
        if error in _PERMANENT:
            return Outcome.PERMANENT, error
        return Outcome.RETRY, error or ErrorClass.CONNECTION
    if 200 <= status < 300:
        text = body or ""
        if (success_response and success_response not in text) or (
                error_response and error_response in text):
            return Outcome.RETRY, ErrorClass.UNEXPECTED_RESPONSE
        return Outcome.SUCCESS, None
    if 300 <= status < 400:
        return Outcome.PERMANENT, ErrorClass.REDIRECT
    if status in (408, 429):
        return Outcome.RETRY, ErrorClass.HTTP_4XX
    if 400 <= status < 500:
        return Outcome.PERMANENT, ErrorClass.HTTP_4XX
    return Outcome.RETRY, ErrorClass.HTTP_5XX


# RFC 9110 section 5.6.7: the three forms of an HTTP-date (all in GMT)
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_DAY_LONG = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = r"(?P<month>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"(?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d)"
_HTTP_DATES = tuple(re.compile(p, re.ASCII | re.IGNORECASE) for p in (
    rf"{_DAY}, (?P<day>\d\d) {_MONTH} (?P<year>\d{{4}}) {_TIME} GMT",  # IMF-fixdate
    rf"{_DAY_LONG}, (?P<day>\d\d)-{_MONTH}-(?P<year>\d\d) {_TIME} GMT",  # RFC 850
    rf"{_DAY} {_MONTH} (?P<day>[ \d]\d) {_TIME} (?P<year>\d{{4}})",  # asctime
))
_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}


def parse_http_date(value: str, now: datetime) -> datetime | None:
    """An HTTP-date in any of its three forms (IMF-fixdate, RFC 850, asctime) as an aware
    UTC datetime; None for anything else. An RFC 850 two-digit year more than 50 years
    ahead of ``now`` is in the past century (RFC 9110)."""
    for pattern in _HTTP_DATES:
        match = pattern.fullmatch(value)
        if match is not None:
            break
    else:
        return None
    year = int(match["year"])
    if len(match["year"]) == 2:
        year += now.year // 100 * 100
        if year > now.year + 50:
            year -= 100
    try:
        return datetime(year, _MONTHS[match["month"].lower()], int(match["day"]),
                        int(match["hour"]), int(match["minute"]),
                        min(int(match["second"]), 59), tzinfo=UTC)  # 60: a leap second
    except ValueError:  # 31 Feb, hour 25...
        return None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds (ASCII digits only) or
    an HTTP-date, capped at ``MAX_DELAY``; None for anything else. Never raises."""
    if not value:
        return None
    value = value.strip(" \t")
    if value.isascii() and value.isdigit():
        digits = value.lstrip("0")
        # more digits than MAX_DELAY has is over it (and int() of thousands of digits raises)
        return MAX_DELAY if len(digits) > 5 else min(float(int(digits or "0")), MAX_DELAY)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    when = parse_http_date(value, now)
    if when is None:
        return None
    return min(max(0.0, (when - now).total_seconds()), MAX_DELAY)


@dataclass(frozen=True)
class RetryPolicy:
    """The retry schedule (seconds between attempts) and the rules that stretch it.

    ``schedule[n]`` is the delay before retry ``n + 1``; its length is the number of
    retries. A 429 or a timeout waits at least ``throttle_floor``; ``Retry-After`` is
    honoured (never shorter than the schedule, never over 24 h).
    """

    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.2
    throttle_floor: float = 60.0

    def next_delay(
        self,
        failures: int,
        status: int | None,
        error: ErrorClass | None,
        retry_after: float | None,
        rand: float,
    ) -> float | None:
        """Seconds until the next attempt after the ``failures``-th failure, or None when
        retries are exhausted. ``rand`` in [0, 1) drives the jitter."""
        if failures > len(self.schedule):
            return None
        delay = self.schedule[failures - 1] * (1 + self.jitter * (2 * rand - 1))
        if status == 429 or error is ErrorClass.TIMEOUT:
            delay = max(delay, self.throttle_floor)
        retry_later = status is not None and (status in (408, 429) or status >= 500)
        if retry_after is not None and retry_later:
            delay = max(delay, min(retry_after, MAX_DELAY))
        return min(delay, MAX_DELAY)


def parse_schedule(text: str) -> tuple[float, ...]:
    """``POSTBACK_RETRY_SCHEDULE``: comma-separated seconds, e.g. ``10,30,60``."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(
            f"POSTBACK_RETRY_SCHEDULE must be comma-separated seconds, got {text!r}"
        ) from exc
    if any(v < 0 for v in values):
        raise ValueError("POSTBACK_RETRY_SCHEDULE values must not be negative")
    return values
