"""The cron schedule parser: robfig/cron v3 ParseStandard syntax, semantics and errors."""

from __future__ import annotations

import datetime
import zoneinfo

import pytest

from kubi.api.cron import (
    ConstantDelaySchedule,
    CronError,
    SpecSchedule,
    parse_standard,
)
from kubi.api.durations import parse_go_duration

UTC = datetime.UTC


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def upcoming(spec: str, start: str, count: int = 3) -> list[str]:
    schedule = parse_standard(spec)
    t = at(start)
    found = []
    for _ in range(count):
        nxt = schedule.next(t)
        assert nxt is not None
        found.append(nxt.astimezone(UTC).strftime("%Y-%m-%d %H:%M"))
        t = nxt
    return found


def spec_of(text: str) -> SpecSchedule:
    schedule = parse_standard(text)
    assert isinstance(schedule, SpecSchedule)
    return schedule


def test_fields_ranges_steps_lists_and_names() -> None:
    s = spec_of("*/15 9-17/4 1,15 JAN-mar,Dec mon-FRI")
    assert s.minutes == {0, 15, 30, 45}
    assert s.hours == {9, 13, 17}
    assert s.days_of_month == {1, 15}
    assert s.months == {1, 2, 3, 12}
    assert s.days_of_week == {1, 2, 3, 4, 5}
    assert not s.day_of_month_star and not s.day_of_week_star
    # `N/step` runs from N to the field's maximum; `?` is `*`.
    assert spec_of("5/20 ? * * *").minutes == {5, 25, 45}
    assert spec_of("0 0 ? * *").day_of_month_star
    # A step above 1 makes `*` a restriction (for the day-of-month/week rule).
    assert not spec_of("0 0 */2 * *").day_of_month_star
    assert spec_of("0 0 */1 * *").day_of_month_star


def test_next_is_strictly_after_and_steps_through_fields() -> None:
    assert upcoming("*/15 * * * *", "2024-03-09T12:00:00") == [
        "2024-03-09 12:15", "2024-03-09 12:30", "2024-03-09 12:45"]
    assert upcoming("* * * * *", "2024-03-09T12:00:30") == [
        "2024-03-09 12:01", "2024-03-09 12:02", "2024-03-09 12:03"]
    assert upcoming("30 23 31 * *", "2024-01-31T23:30:00") == [
        "2024-03-31 23:30", "2024-05-31 23:30", "2024-07-31 23:30"]
    assert upcoming("0 0 29 2 *", "2024-03-01T00:00:00", 1) == ["2028-02-29 00:00"]
    assert upcoming("59 23 31 12 *", "2024-12-31T23:59:00", 1) == ["2025-12-31 23:59"]


def test_day_of_month_and_week_or_when_both_restricted() -> None:
    # Both restricted: the 1st/15th of the month or any Friday.
    assert upcoming("0 0 1,15 * fri", "2024-03-09T00:00:00", 4) == [
        "2024-03-15 00:00", "2024-03-22 00:00", "2024-03-29 00:00", "2024-04-01 00:00"]
    # Day of month is `*`: both must match, so only Fridays.
    assert upcoming("0 0 * * 5", "2024-03-09T00:00:00", 2) == [
        "2024-03-15 00:00", "2024-03-22 00:00"]


def test_descriptors() -> None:
    start = "2024-03-09T12:34:00"
    assert upcoming("@yearly", start, 1) == ["2025-01-01 00:00"]
    assert upcoming("@annually", start, 1) == ["2025-01-01 00:00"]
    assert upcoming("@monthly", start, 1) == ["2024-04-01 00:00"]
    assert upcoming("@weekly", start, 2) == ["2024-03-10 00:00", "2024-03-17 00:00"]
    assert upcoming("@daily", start, 1) == ["2024-03-10 00:00"]
    assert upcoming("@midnight", start, 1) == ["2024-03-10 00:00"]
    assert upcoming("@hourly", start, 2) == ["2024-03-09 13:00", "2024-03-09 14:00"]
    every = parse_standard("@every 1h30m")
    assert every == ConstantDelaySchedule(5400)
    assert every.next(at("2024-03-09T12:00:00.500000")) == at("2024-03-09T13:30:00")
    # Below a second rounds up to one second.
    assert parse_standard("@every 10ms") == ConstantDelaySchedule(1)


def test_time_zone_prefix_and_daylight_saving() -> None:
    new_york = zoneinfo.ZoneInfo("America/New_York")
    schedule = spec_of("TZ=America/New_York 0 9 * * *")
    assert schedule.location == new_york
    assert upcoming("CRON_TZ=America/New_York 0 9 * * *", "2024-03-09T00:00:00", 2) == [
        "2024-03-09 14:00", "2024-03-10 13:00"]  # EST, then EDT
    # 02:30 does not exist on the spring-forward day: that day is skipped.
    assert upcoming("TZ=America/New_York 30 2 * * *", "2024-03-09T12:00:00", 2) == [
        "2024-03-11 06:30", "2024-03-12 06:30"]
    # 01:30 happens twice on the fall-back day; robfig fires at both.
    assert upcoming("TZ=America/New_York 30 1 * * *", "2024-11-03T00:00:00", 3) == [
        "2024-11-03 05:30", "2024-11-03 06:30", "2024-11-04 06:30"]
    # The answer comes back in the zone it was asked in.
    asked = datetime.datetime(2024, 3, 9, 0, 0, tzinfo=new_york)
    answer = schedule.next(asked)
    assert answer is not None and answer.tzinfo is new_york and answer.hour == 9
    # Without a zone, the schedule is read in the zone of the time asked about.
    tokyo = zoneinfo.ZoneInfo("Asia/Tokyo")
    local = parse_standard("0 9 * * *").next(datetime.datetime(2024, 3, 9, 10, tzinfo=tokyo))
    assert local == datetime.datetime(2024, 3, 10, 9, tzinfo=tokyo)


def test_impossible_dates_never_fire() -> None:
    assert parse_standard("0 0 30 2 *").next(at("2024-01-01T00:00:00")) is None
    assert parse_standard("0 0 31 4,6,9,11 *").next(at("2024-01-01T00:00:00")) is None


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_standard("* * * * *").next(datetime.datetime(2024, 1, 1))


@pytest.mark.parametrize(("spec", "message"), [
    ("", "empty spec string"),
    ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
    ("* * * * * *", "expected exactly 5 fields, found 6: [* * * * * *]"),
    ("60 * * * *", "end of range (60) above maximum (59): 60"),
    ("* 24 * * *", "end of range (24) above maximum (23): 24"),
    ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
    ("* * * 13 *", "end of range (13) above maximum (12): 13"),
    ("* * * * 7", "end of range (7) above maximum (6): 7"),
    ("5-1 * * * *", "beginning of range (5) beyond end of range (1): 5-1"),
    ("*/0 * * * *", "step of range should be a positive number: */0"),
    ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
    ("1/2/3 * * * *", "too many slashes: 1/2/3"),
    ("a * * * *", 'failed to parse int from a: strconv.Atoi: parsing "a": invalid syntax'),
    ("* * * * mon-xyz",
     'failed to parse int from xyz: strconv.Atoi: parsing "xyz": invalid syntax'),
    ("*/x * * * *", 'failed to parse int from x: strconv.Atoi: parsing "x": invalid syntax'),
    ("-1 * * * *", 'failed to parse int from : strconv.Atoi: parsing "": invalid syntax'),
    ("@fortnightly", "unrecognized descriptor: @fortnightly"),
    ("@every 5x", 'failed to parse duration @every 5x: time: unknown unit "x" in duration "5x"'),
    ("@every 5", 'failed to parse duration @every 5: time: missing unit in duration "5"'),
    ("TZ=Mars/Olympus * * * * *",
     "provided bad location Mars/Olympus: unknown time zone Mars/Olympus"),
])
def test_invalid_expressions(spec: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        parse_standard(spec)
    assert str(caught.value) == message


def test_go_durations() -> None:
    assert parse_go_duration("1h30m") == 5400 * 10 ** 9
    assert parse_go_duration("1.5s") == 1_500_000_000
    assert parse_go_duration("-2m") == -120 * 10 ** 9
    assert parse_go_duration("0") == 0
    assert parse_go_duration("300ms") == 300 * 10 ** 6
    for bad in ("", "h", ".s", "1hh"):
        with pytest.raises(ValueError):
            parse_go_duration(bad)
