"""When feeds run: every schedule kind, across DST changes, month ends and leap years."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from postback.core.feed_schedule import (
    ScheduleError,
    latest_due,
    next_run,
    parse_schedule,
    zone,
)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def runs(schedule: object, after: datetime, n: int) -> list[datetime]:
    out = []
    for _ in range(n):
        after = next_run(schedule, after)  # type: ignore[arg-type]
        out.append(after)
    return out


def test_daily_across_spring_forward_runs_at_the_first_instant_after_the_skipped_time() -> None:
    # New York skips 02:00-03:00 on 2026-03-08: 02:30 runs at 03:00 EDT (07:00 UTC)
    s = parse_schedule("daily", "02:30", None, "America/New_York")
    assert runs(s, utc(2026, 3, 7, 0), 3) == [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 0),
                                              utc(2026, 3, 9, 6, 30)]


def test_daily_across_fall_back_runs_an_ambiguous_time_once() -> None:
    # 01:30 happens twice on 2026-11-01 (EDT, then EST): once, at the first
    s = parse_schedule("daily", "01:30", None, "America/New_York")
    assert runs(s, utc(2026, 10, 31, 12), 3) == [utc(2026, 11, 1, 5, 30),
                                                 utc(2026, 11, 2, 6, 30),
                                                 utc(2026, 11, 3, 6, 30)]


def test_hourly_across_both_changes() -> None:
    s = parse_schedule("hourly", ":15", None, "America/New_York")
    # fall back: 01:15 EDT runs, 01:15 EST (the same wall time again) does not
    assert runs(s, utc(2026, 11, 1, 4), 4) == [utc(2026, 11, 1, 4, 15), utc(2026, 11, 1, 5, 15),
                                               utc(2026, 11, 1, 7, 15), utc(2026, 11, 1, 8, 15)]
    # spring forward: 02:15 does not exist, it runs at 03:00 EDT, then 03:15 EDT
    assert runs(s, utc(2026, 3, 8, 6), 3) == [utc(2026, 3, 8, 6, 15), utc(2026, 3, 8, 7, 0),
                                              utc(2026, 3, 8, 7, 15)]


def test_half_hour_zone_and_a_zone_that_skips_a_whole_day() -> None:
    s = parse_schedule("daily", "06:00", None, "Asia/Kolkata")
    assert next_run(s, utc(2026, 1, 1)) == utc(2026, 1, 1, 0, 30)
    # Samoa skipped 2011-12-30 entirely: a daily slot that day runs at the first instant
    # after it (the zone's 2011-12-31 00:00)
    s = parse_schedule("daily", "12:00", None, "Pacific/Apia")
    got = runs(s, utc(2011, 12, 28, 23, 30), 3)
    local = [g.astimezone(zone("Pacific/Apia")).strftime("%Y-%m-%d %H:%M") for g in got]
    assert local == ["2011-12-29 12:00", "2011-12-31 00:00", "2011-12-31 12:00"]


def test_weekly_on_a_weekday_in_its_zone() -> None:
    s = parse_schedule("weekly", "09:00", "Monday", "Europe/Paris")
    assert s.day == "monday"
    # 2026-03-29 is the Sunday Paris moves to summer time: the offset changes between runs
    assert runs(s, utc(2026, 3, 20), 3) == [utc(2026, 3, 23, 8), utc(2026, 3, 30, 7),
                                            utc(2026, 4, 6, 7)]


def test_monthly_on_a_day_and_on_the_last_day() -> None:
    s = parse_schedule("monthly", "23:30", 28, "UTC")
    assert runs(s, utc(2026, 1, 28, 23, 30), 3) == [utc(2026, 2, 28, 23, 30),
                                                    utc(2026, 3, 28, 23, 30),
                                                    utc(2026, 4, 28, 23, 30)]
    last = parse_schedule("monthly", "00:00", "last", "Europe/Paris")
    paris = [r.astimezone(zone("Europe/Paris")).date().isoformat()
             for r in runs(last, utc(2027, 12, 15), 5)]
    assert paris == ["2027-12-31", "2028-01-31", "2028-02-29", "2028-03-31", "2028-04-30"]


def test_the_next_run_is_strictly_after() -> None:
    s = parse_schedule("daily", "06:00", None, "UTC")
    assert next_run(s, utc(2026, 5, 1, 6)) == utc(2026, 5, 2, 6)
    assert next_run(s, utc(2026, 5, 1, 5, 59, 59)) == utc(2026, 5, 1, 6)


def test_a_stopped_scheduler_runs_once_for_the_latest_missed_slot() -> None:
    s = parse_schedule("hourly", ":00", None, "UTC")
    assert latest_due(s, utc(2026, 1, 1), utc(2026, 6, 1, 12, 30)) == utc(2026, 6, 1, 12)
    assert latest_due(s, utc(2026, 6, 1, 12), utc(2026, 6, 1, 12, 30)) == utc(2026, 6, 1, 12)


@pytest.mark.parametrize(("args", "field", "words"), [
    (("yearly",), "every", "hourly, daily, weekly, monthly"),
    (("daily", "6:30"), "at", "HH:MM"),
    (("daily", "24:00"), "at", "HH:MM"),
    (("hourly", "10:15"), "at", ":MM"),
    (("weekly", "09:00", None), "day", "monday"),
    (("weekly", "09:00", "mon"), "day", "monday"),
    (("monthly", "09:00", 31), "day", "last"),
    (("monthly", "09:00", True), "day", "1 to 28"),
    (("daily", "09:00", 3), "day", "leave day out"),
    (("daily", "09:00", None, "Europe/Pari"), "time_zone", "Europe/Paris"),
    (("daily", "09:00", None, "../etc/passwd"), "time_zone", "not a known time zone"),
    # files of the zoneinfo directory that are not IANA zones: the machine's own setting,
    # tzdata's placeholder, a template
    (("daily", "09:00", None, "localtime"), "time_zone", "'localtime' is not a known time "
     "zone (use an IANA name such as Europe/Paris"),
    (("daily", "09:00", None, "Factory"), "time_zone", "'Factory' is not a known time zone"),
    (("daily", "09:00", None, "posixrules"), "time_zone", "'posixrules' is not a known time "
     "zone"),
    (("daily", "09:00", None, "posix/Europe/Paris"), "time_zone", "not a known time zone"),
])
def test_refusals_name_the_part_and_the_fix(args: tuple[object, ...], field: str,
                                             words: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(*args)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert words in caught.value.message


@pytest.mark.parametrize("name", ["UTC", "Etc/UTC", "Europe/Paris", "US/Eastern"])
def test_utc_and_iana_zones_and_their_links_are_kept(name: str) -> None:
    assert parse_schedule("daily", "06:00", None, name).time_zone == name
