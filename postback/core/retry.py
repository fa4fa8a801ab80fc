"""Retry policy: how an attempt's result is classified and when the next one is due.

Success is a 2xx. Retried: timeouts, connection errors, 408, 429 and 5xx. Permanent: an
invalid URL, an unresolvable host, 3xx (redirects are never followed) and any other 4xx.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
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
    DNS = "dns_failure"
    INVALID_URL = "invalid_url"
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


def classify(status: int | None, error: ErrorClass | None, body: str | None = None,
             success_response: str | None = None,
             error_response: str | None = None) -> tuple[Outcome, ErrorClass | None]:
    """The outcome of one attempt, from its HTTP status or its transport error.

    With a setting's Success Response, a 2xx whose body lacks that text is a failure to
    retry; with its Error Response, a 2xx whose body contains that text is one too.
    """
    if status is None:
        if error in (ErrorClass.INVALID_URL, ErrorClass.DNS, ErrorClass.BLOCKED):
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


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


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
