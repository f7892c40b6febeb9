"""Go's time.Duration in text: ParseDuration and String, as Kubernetes objects and the
kubelet's configuration spell durations (`1h30m`, `1.5s`, `150ms`)."""

from __future__ import annotations

import re

_GO_INT64_MAX = 2 ** 63 - 1
_DURATION_UNITS = {"ns": 1, "us": 10 ** 3, "µs": 10 ** 3, "μs": 10 ** 3, "ms": 10 ** 6,
                   "s": 10 ** 9, "m": 60 * 10 ** 9, "h": 3600 * 10 ** 9}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)")


def parse_go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds (e.g. `1h30m`, `1.5s`, `-2m`)."""
    quoted = f'"{text}"'
    body = text
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise ValueError(f"time: invalid duration {quoted}")
    total = 0
    position = 0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        assert match is not None  # both groups may match empty
        number, unit = match.group(1), match.group(2)
        if number in ("", "."):
            raise ValueError(f"time: invalid duration {quoted}")
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        scale = _DURATION_UNITS.get(unit)
        if scale is None:
            raise ValueError(f'time: unknown unit "{unit}" in duration {quoted}')
        whole, _, fraction = number.partition(".")
        total += int(whole or "0") * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        position = match.end()
    if total > _GO_INT64_MAX:
        raise ValueError(f"time: invalid duration {quoted}")
    return sign * total


def go_duration(ns: int) -> str:
    """Go's time.Duration.String(): `1h2m3.5s`, `150ms`, `0s`."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{_decimal(u, 3)}µs"
    if u < 1_000_000_000:
        return f"{sign}{_decimal(u, 6)}ms"
    seconds, hours_minutes = u % 60_000_000_000, u // 60_000_000_000
    text = _decimal(seconds, 9) + "s"
    if hours_minutes:
        hours, minutes = divmod(hours_minutes, 60)
        text = f"{minutes}m{text}"
        if hours:
            text = f"{hours}h{text}"
    return sign + text


def _decimal(value: int, digits: int) -> str:
    whole, fraction = divmod(value, 10**digits)
    if not fraction:
        return str(whole)
    return f"{whole}." + f"{fraction:0{digits}d}".rstrip("0")


def go_duration_seconds(seconds: float) -> str:
    """Go's String() of a duration given in seconds, truncated to whole nanoseconds."""
    return go_duration(int(seconds * 1_000_000_000))
