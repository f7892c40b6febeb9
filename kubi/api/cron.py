"""Cron schedules as the CronJob controller reads them (robfig/cron v3 `ParseStandard`).

Five fields (minute, hour, day of month, month, day of week) with `*`/`?`, ranges,
steps, lists and names (`jan`-`dec`, `sun`-`sat`); the descriptors `@yearly`,
`@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly` and
`@every <duration>`; an optional `TZ=<zone>` or `CRON_TZ=<zone>` prefix. Errors carry
robfig's wording, which upstream shows to users in events and validation messages.

Day matching follows robfig (and Vixie cron): when both day fields are restricted a
day matching either one fires; when either is `*`, both must match.
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from dataclasses import dataclass

from kubi.api.durations import parse_go_duration

UTC = datetime.UTC
# robfig gives up when nothing fires within five years of the starting point.
SEARCH_YEARS = 5
# Wall-clock slack around daylight-saving transitions when searching a day.
_DST_SLACK = datetime.timedelta(hours=2)

_MONTH_NAMES = {name: number + 1 for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_DAY_NAMES = {name: number for number, name in enumerate(
    ("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}


@dataclass(frozen=True)
class _Bounds:
    low: int
    high: int
    names: dict[str, int] | None = None


_MINUTE = _Bounds(0, 59)
_HOUR = _Bounds(0, 23)
_DAY_OF_MONTH = _Bounds(1, 31)
_MONTH = _Bounds(1, 12, _MONTH_NAMES)
_DAY_OF_WEEK = _Bounds(0, 6, _DAY_NAMES)

_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_GO_INT64_MAX = 2 ** 63 - 1


class CronError(ValueError):
    """A schedule robfig/cron would not parse; str() is robfig's message."""


class Schedule:
    """When a schedule fires."""

    def next(self, after: datetime.datetime) -> datetime.datetime | None:
        """The first firing strictly after `after` (an aware datetime), in `after`'s
        zone; None when there is none within five years."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Field:
    values: frozenset[int]
    star: bool  # written as `*`/`?` without a step above 1


@dataclass(frozen=True)
class SpecSchedule(Schedule):
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    day_of_month_star: bool
    day_of_week_star: bool
    location: datetime.tzinfo | None = None  # None: the zone of the time asked about

    def day_matches(self, day: datetime.date) -> bool:
        by_month_day = day.day in self.days_of_month
        by_week_day = (day.isoweekday() % 7) in self.days_of_week
        if self.day_of_month_star or self.day_of_week_star:
            return by_month_day and by_week_day
        return by_month_day or by_week_day

    def next(self, after: datetime.datetime) -> datetime.datetime | None:
        if after.tzinfo is None:
            raise ValueError("next() needs an aware datetime")
        zone = self.location or after.tzinfo
        local = after.astimezone(zone)
        # Candidates are whole minutes; DST folds can put an earlier wall time after a
        # later one, so start the search a little before `after` on the wall clock.
        start_wall = local.replace(tzinfo=None, second=0, microsecond=0) - _DST_SLACK
        day = start_wall.date()
        limit = datetime.date(min(local.year + SEARCH_YEARS, 9999), 12, 31)
        hours = sorted(self.hours)
        minutes = sorted(self.minutes)
        while day <= limit:
            if day.month not in self.months:
                day = _first_of_next_month(day)
                continue
            if self.day_matches(day):
                found = self._first_on_day(day, hours, minutes, start_wall, after, zone)
                if found is not None:
                    return found.astimezone(after.tzinfo)
            day += datetime.timedelta(days=1)
        return None

    @staticmethod
    def _first_on_day(day: datetime.date, hours: list[int], minutes: list[int],
                      start_wall: datetime.datetime, after: datetime.datetime,
                      zone: datetime.tzinfo) -> datetime.datetime | None:
        best: datetime.datetime | None = None
        best_wall: datetime.datetime | None = None
        for hour in hours:
            for minute in minutes:
                wall = datetime.datetime(day.year, day.month, day.day, hour, minute)
                if wall < start_wall:
                    continue
                if best_wall is not None and wall > best_wall + _DST_SLACK:
                    return best
                for instant in _instants(wall, zone):
                    if instant > after and (best is None or instant < best):
                        best, best_wall = instant, wall
        return best


def _instants(wall: datetime.datetime, zone: datetime.tzinfo) -> list[datetime.datetime]:
    """The real instants a wall-clock time names: none in a spring-forward gap, two
    in a fall-back fold (robfig steps in absolute time, so it fires in both)."""
    found: list[datetime.datetime] = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold)
        back = instant.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
        if back == wall and all(instant.utcoffset() != seen.utcoffset() for seen in found):
            found.append(instant)
    return found


def _first_of_next_month(day: datetime.date) -> datetime.date:
    if day.month == 12:
        return datetime.date(day.year + 1, 1, 1)
    return datetime.date(day.year, day.month + 1, 1)


@dataclass(frozen=True)
class ConstantDelaySchedule(Schedule):
    """`@every <duration>`: fires every `delay` seconds (whole, at least one)."""

    delay: int

    def next(self, after: datetime.datetime) -> datetime.datetime:
        return after.replace(microsecond=0) + datetime.timedelta(seconds=self.delay)


# -- parsing -------------------------------------------------------------------------------


def parse_standard(spec: str) -> Schedule:
    """Parse a schedule as robfig/cron's ParseStandard; raises CronError."""
    if not spec:
        raise CronError("empty spec string")
    location: datetime.tzinfo | None = None
    if spec.startswith(("TZ=", "CRON_TZ=")):
        location, spec = _split_time_zone(spec)
    if spec.startswith("@"):
        return _parse_descriptor(spec, location)
    fields = spec.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    minute = _parse_field(fields[0], _MINUTE)
    hour = _parse_field(fields[1], _HOUR)
    day_of_month = _parse_field(fields[2], _DAY_OF_MONTH)
    month = _parse_field(fields[3], _MONTH)
    day_of_week = _parse_field(fields[4], _DAY_OF_WEEK)
    return SpecSchedule(minute.values, hour.values, day_of_month.values, month.values,
                        day_of_week.values, day_of_month.star, day_of_week.star, location)


def load_location(name: str) -> datetime.tzinfo:
    """A zone by IANA name as Go's time.LoadLocation: "" and "UTC" are UTC."""
    if name in ("", "UTC"):
        return UTC
    if name == "Local":
        raise CronError("unknown time zone Local")  # the controller's own zone is UTC here
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(f"unknown time zone {name}") from None


def _split_time_zone(spec: str) -> tuple[datetime.tzinfo, str]:
    space = spec.find(" ")
    equals = spec.index("=")
    name = spec[equals + 1:space] if space >= 0 else spec[equals + 1:]
    try:
        location = load_location(name)
    except CronError as err:
        raise CronError(f"provided bad location {name}: {err}") from None
    if space < 0:
        raise CronError("empty spec string")
    return location, spec[space:].strip()


def _parse_descriptor(spec: str, location: datetime.tzinfo | None) -> Schedule:
    standard = _DESCRIPTORS.get(spec)
    if standard is not None:
        parsed = parse_standard(standard)
        assert isinstance(parsed, SpecSchedule)
        return SpecSchedule(parsed.minutes, parsed.hours, parsed.days_of_month,
                            parsed.months, parsed.days_of_week, parsed.day_of_month_star,
                            parsed.day_of_week_star, location)
    every = "@every "
    if spec.startswith(every):
        text = spec[len(every):]
        try:
            nanoseconds = parse_go_duration(text)
        except ValueError as err:
            raise CronError(f"failed to parse duration {spec}: {err}") from None
        # robfig rounds up to one second and drops the fraction of a second.
        return ConstantDelaySchedule(max(nanoseconds, 10 ** 9) // 10 ** 9)
    raise CronError(f"unrecognized descriptor: {spec}")


def _parse_field(text: str, bounds: _Bounds) -> _Field:
    values: set[int] = set()
    star = False
    for part in text.split(","):
        part_values, part_star = _parse_range(part, bounds)
        values |= part_values
        star = star or part_star
    return _Field(frozenset(values), star)


def _parse_range(expr: str, bounds: _Bounds) -> tuple[set[int], bool]:
    range_and_step = expr.split("/")
    low_and_high = range_and_step[0].split("-")
    single = len(low_and_high) == 1
    star = False
    if low_and_high[0] in ("*", "?"):
        start, end, star = bounds.low, bounds.high, True
    else:
        start = _int_or_name(low_and_high[0], bounds.names)
        if len(low_and_high) == 1:
            end = start
        elif len(low_and_high) == 2:
            end = _int_or_name(low_and_high[1], bounds.names)
        else:
            raise CronError(f"too many hyphens: {expr}")
    if len(range_and_step) == 1:
        step = 1
    elif len(range_and_step) == 2:
        step = _non_negative_int(range_and_step[1])
        if single:  # `N/step` means `N-max/step`
            end = bounds.high
        if step > 1:
            star = False
    else:
        raise CronError(f"too many slashes: {expr}")
    if start < bounds.low:
        raise CronError(f"beginning of range ({start}) below minimum ({bounds.low}): {expr}")
    if end > bounds.high:
        raise CronError(f"end of range ({end}) above maximum ({bounds.high}): {expr}")
    if start > end:
        raise CronError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
    if step == 0:
        raise CronError(f"step of range should be a positive number: {expr}")
    return set(range(start, end + 1, step)), star


def _int_or_name(text: str, names: dict[str, int] | None) -> int:
    if names is not None and text.lower() in names:
        return names[text.lower()]
    return _non_negative_int(text)


def _non_negative_int(text: str) -> int:
    number = _go_atoi(text)
    if number < 0:
        raise CronError(f"negative number ({number}) not allowed: {text}")
    return number


def _go_atoi(text: str) -> int:
    """strconv.Atoi: an optional sign and decimal digits, nothing else."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise CronError(f'failed to parse int from {text}: strconv.Atoi: parsing "{text}": '
                        f"invalid syntax")
    number = int(text)
    if not -_GO_INT64_MAX - 1 <= number <= _GO_INT64_MAX:
        raise CronError(f'failed to parse int from {text}: strconv.Atoi: parsing "{text}": '
                        f"value out of range")
    return number


