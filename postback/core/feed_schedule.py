"""When a data feed runs: hourly (at a minute), daily (at HH:MM), weekly (a weekday at
HH:MM) or monthly (day 1..28 or the last day, at HH:MM), in an IANA time zone.

A slot is a wall-clock time in the feed's zone, and every wall-clock slot runs once:

* a slot the zone skips (the hour clocks jump forward over) runs at the first instant that
  exists after it, which is the moment of the jump (02:30 on the morning New York moves to
  summer time runs at 03:00 EDT);
* a slot the zone has twice (the hour clocks go back over) runs once, at its first
  occurrence.

Pure: no clock is read here; :func:`next_run` is given the instant to look after.
"""

from __future__ import annotations

import calendar
import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

Every = Literal["hourly", "daily", "weekly", "monthly"]
EVERY: tuple[Every, ...] = ("hourly", "daily", "weekly", "monthly")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_HH_MM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])", re.ASCII)
_MM = re.compile(r":([0-5][0-9])", re.ASCII)


class ScheduleError(ValueError):
    """A schedule that cannot be kept: ``field`` names the part (``at``, ``day``,
    ``time_zone``, ``every``), the message says what would fix it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Schedule:
    every: Every
    hour: int = 0  # not used by hourly
    minute: int = 0
    weekday: int | None = None  # 0 = Monday (weekly)
    month_day: int | Literal["last"] | None = None  # 1..28 or "last" (monthly)
    time_zone: str = "UTC"

    @property
    def at(self) -> str:
        """As the feed shows it: ``":MM"`` for hourly, ``"HH:MM"`` otherwise."""
        if self.every == "hourly":
            return f":{self.minute:02d}"
        return f"{self.hour:02d}:{self.minute:02d}"

    @property
    def day(self) -> str | int | None:
        if self.every == "weekly":
            assert self.weekday is not None
            return WEEKDAYS[self.weekday]
        if self.every == "monthly":
            return self.month_day
        return None

    def to_json(self) -> dict[str, object]:
        return {"every": self.every, "at": self.at, "day": self.day,
                "time_zone": self.time_zone}


#: files of a zoneinfo directory that are not IANA zones: this machine's own setting
#: (``localtime``), tzdata's placeholder (``Factory``), a template (``posixrules``) and
#: data files some systems keep beside the zones
NOT_ZONES = frozenset({"localtime", "Factory", "posixrules", "leapseconds", "leap-seconds",
                       "tzdata.zi", "zone.tab", "zone1970.tab", "iso3166.tab", "SECURITY"})


@cache
def _zones() -> frozenset[str]:
    """The IANA zones (and their backward-compatible links, such as US/Eastern)."""
    return frozenset(name for name in available_timezones()
                     if name not in NOT_ZONES and not name.startswith(("posix/", "right/")))


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or :class:`ScheduleError` naming the closest ones."""
    if name not in _zones() and name != "UTC":
        close = difflib.get_close_matches(name, sorted(_zones()), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else \
            " (use an IANA name such as Europe/Paris, America/New_York or UTC)"
        raise ScheduleError("time_zone", f"{name!r} is not a known time zone{hint}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError("time_zone", f"{name!r} is not a known time zone") from None


def parse_schedule(every: str, at: str | None = None, day: object = None,
                   time_zone: str | None = None) -> Schedule:
    """A schedule from what a partner sends; :class:`ScheduleError` otherwise."""
    if every not in EVERY:
        raise ScheduleError("every", f"must be one of {', '.join(EVERY)}")
    tz = time_zone or "UTC"
    zone(tz)
    if every == "hourly":
        if day is not None:
            raise ScheduleError("day", "an hourly feed runs every day: leave day out")
        text = at if at is not None else ":00"
        found = _MM.fullmatch(text)
        if found is None:
            raise ScheduleError("at", "for an hourly feed, give the minute past each hour "
                                "as :MM, e.g. :15")
        return Schedule("hourly", minute=int(found[1]), time_zone=tz)
    text = at if at is not None else "00:00"
    found = _HH_MM.fullmatch(text)
    if found is None:
        raise ScheduleError("at", "give the time of day as HH:MM in 24-hour time, e.g. 06:30")
    hour, minute = int(found[1]), int(found[2])
    if every == "daily":
        if day is not None:
            raise ScheduleError("day", "a daily feed runs every day: leave day out")
        return Schedule("daily", hour, minute, time_zone=tz)
    if every == "weekly":
        if not isinstance(day, str) or day.lower() not in WEEKDAYS:
            raise ScheduleError("day", "for a weekly feed, give the weekday: one of "
                                + ", ".join(WEEKDAYS))
        return Schedule("weekly", hour, minute, weekday=WEEKDAYS.index(day.lower()),
                        time_zone=tz)
    if day == "last":
        return Schedule("monthly", hour, minute, month_day="last", time_zone=tz)
    if isinstance(day, bool) or not isinstance(day, int) or not 1 <= day <= 28:
        raise ScheduleError("day", "for a monthly feed, give a day of the month from 1 to "
                            "28, or \"last\" for the last day (29, 30 and 31 are not in "
                            "every month)")
    return Schedule("monthly", hour, minute, month_day=day, time_zone=tz)


def from_json(data: dict[str, object]) -> Schedule:
    """A stored schedule (:meth:`Schedule.to_json`)."""
    at, tz = data.get("at"), data.get("time_zone")
    return parse_schedule(str(data["every"]), at if isinstance(at, str) else None,
                          data.get("day"), tz if isinstance(tz, str) else None)


def _walls(schedule: Schedule, start: date) -> Iterator[datetime]:
    """Every slot's wall-clock time (naive) on or after ``start``, in order."""
    day = start
    if schedule.every == "monthly":
        year, month = day.year, day.month
        while True:
            last = calendar.monthrange(year, month)[1]
            wanted = last if schedule.month_day == "last" else schedule.month_day
            assert isinstance(wanted, int)
            yield datetime(year, month, wanted, schedule.hour, schedule.minute)
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    while True:
        if schedule.every == "hourly":
            for hour in range(24):
                yield datetime(day.year, day.month, day.day, hour, schedule.minute)
        elif schedule.every == "daily" or day.weekday() == schedule.weekday:
            yield datetime(day.year, day.month, day.day, schedule.hour, schedule.minute)
        day += timedelta(days=1)


def resolve(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant (aware UTC) a wall-clock slot runs at: its first occurrence if the zone
    has it twice; the first instant after it if the zone skips it."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        # it exists; with fold=0 zoneinfo gives the earlier of two occurrences
        return first
    # skipped: fold=0 reads it with the offset before the jump (an instant after the jump),
    # fold=1 with the offset after it (an instant before); the jump lies between them
    low = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first
    if low > high:
        low, high = high, low
    # the earliest instant whose wall-clock time is at or past the slot (a second apart)
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(tz).replace(tzinfo=None) >= wall:
            high = mid
        else:
            low = mid
    return high


def next_run(schedule: Schedule, after: datetime) -> datetime:
    """The first slot strictly after ``after`` (aware), as an aware UTC instant."""
    tz = zone(schedule.time_zone)
    after = after.astimezone(UTC)
    local = after.astimezone(tz)
    start = (local - timedelta(days=2)).date()
    if schedule.every == "monthly":
        start = start.replace(day=1)
    for wall in _walls(schedule, start):
        moment = resolve(wall, tz)
        if moment > after:
            return moment
    raise AssertionError("unreachable: every schedule has a next slot")  # pragma: no cover


_LOOKBACK = {"hourly": 2, "daily": 2, "weekly": 9, "monthly": 63}


def latest_due(schedule: Schedule, slot: datetime, now: datetime) -> datetime:
    """The last slot at or before ``now``, and not before the due ``slot``: a scheduler that
    was stopped for days runs a feed once, for the latest slot it missed, not once per
    missed slot."""
    tz = zone(schedule.time_zone)
    now = now.astimezone(UTC)
    start = (now.astimezone(tz) - timedelta(days=_LOOKBACK[schedule.every])).date()
    if schedule.every == "monthly":
        start = start.replace(day=1)
    latest = slot
    for wall in _walls(schedule, start):
        moment = resolve(wall, tz)
        if moment > now:
            return latest
        latest = max(latest, moment)
    raise AssertionError("unreachable")  # pragma: no cover
