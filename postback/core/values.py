"""How values look on the wire: money in cents, dates as ISO-8601 with offset."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

_MONEY = re.compile(r"^-?\d{1,13}(\.\d{1,2})?$")


class MoneyError(ValueError):
    """A money value that is not a decimal string with at most two decimals."""


def parse_money(value: object) -> int:
    """Parse a decimal string (``"10.50"``) or an integer into cents.

    Floats are refused: money travels as decimal strings so that no value is ever rounded
    behind the sender's back.
    """
    if isinstance(value, bool | float):
        raise MoneyError('send money as a decimal string such as "10.50", not a JSON number')
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str) or not _MONEY.match(value.strip()):
        raise MoneyError('must be a decimal string with at most 2 decimals, such as "10.50"')
    try:
        cents = Decimal(value.strip()) * 100
    except InvalidOperation as exc:  # pragma: no cover - the regex already excludes this
        raise MoneyError("is not a number") from exc
    return int(cents)


def format_money(cents: int | None) -> str:
    """Cents as a decimal string with exactly two decimals; empty when missing."""
    if cents is None:
        return ""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole}.{frac:02d}"


def utc(dt: datetime) -> datetime:
    """An aware datetime in UTC; naive input is taken to be UTC already."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def format_date(dt: datetime | None) -> str:
    """ISO-8601 with offset and whole seconds (``2024-09-10T17:42:38+00:00``)."""
    if dt is None:
        return ""
    return utc(dt).replace(microsecond=0).isoformat()
