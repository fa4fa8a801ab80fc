"""How values look on the wire: money in cents, dates as ISO-8601 with offset."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

_MONEY = re.compile(r"-?[0-9]{1,13}(\.[0-9]{1,2})?", re.ASCII)


class MoneyError(ValueError):
    """A money value that is not a decimal string with at most two decimals."""


def parse_money(value: object) -> int:
    """Parse a decimal string (``"10.50"``) into cents.

    Numbers are refused (a float may already have been rounded; an integer is as likely a
    count of cents as of units), and so is anything but ASCII digits: Arabic-Indic digits
    and ``" 1.00 "`` are mistakes to report, not amounts to guess at.
    """
    if isinstance(value, bool | float | int):
        raise MoneyError('send money as a decimal string such as "10.50", not a JSON number')
    if not isinstance(value, str) or not _MONEY.fullmatch(value):
        raise MoneyError('must be a decimal string of ASCII digits with at most 2 decimals '
                         'and no spaces, such as "10.50"')
    try:
        cents = Decimal(value) * 100
    except InvalidOperation as exc:  # pragma: no cover - the regex already excludes this
        raise MoneyError("is not a number") from exc
    return int(cents)


#: ISO 4217 currencies whose minor unit is not the cent (all others have two decimals)
_NO_DECIMALS = frozenset(["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
                          "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"])
_MORE_DECIMALS = {"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
                  "CLF": 4, "UYW": 4}


def decimals(currency: str) -> int:
    """The decimals ISO 4217 gives a currency: 0 for JPY, 3 for KWD, else 2."""
    return 0 if currency in _NO_DECIMALS else _MORE_DECIMALS.get(currency, 2)


def units_problem(currency: str, amounts: dict[str, int | None]) -> tuple[str, str] | None:
    """The first of ``amounts`` (cents, by field name) that is no amount of ``currency``,
    and why; None when all are. Amounts are held in cents, so a currency without decimals
    must come in whole units; one with three or four decimals is held to two."""
    if decimals(currency) != 0:
        return None
    for name, cents in amounts.items():
        if cents is not None and cents % 100:
            return name, (f"{currency} has no decimals, but {name} is "
                          f"\"{format_money(cents)}\"; send whole amounts such as "
                          f"\"{abs(cents) // 100}\"")
    return None


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
