"""CRI log files: the line format and reading with tail/since/timestamps/follow."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest

from kubi.kubelet.runtime.logs import (
    LogFormatError,
    LogOptions,
    format_line,
    parse_line,
    read_log,
)

BASE = 1_700_000_000 * 1_000_000_000


def write(path: Path, *records: tuple[int, str, bytes, bool]) -> None:
    with path.open("ab") as file:
        for offset, stream, content, partial in records:
            file.write(format_line(BASE + offset, stream, content, partial))


def collect(path: Path, options: LogOptions) -> bytes:
    async def gather() -> bytes:
        return b"".join([chunk async for chunk in read_log(path, options)])
    return asyncio.run(gather())


def test_line_format_round_trip() -> None:
    line = format_line(BASE + 5, "stderr", b"hello world")
    assert line == b"2023-11-14T22:13:20.000000005Z stderr F hello world\n"
    entry = parse_line(line)
    assert (entry.time_ns, entry.stream, entry.partial, entry.content) == (
        BASE + 5, "stderr", False, b"hello world")
    # Go's RFC3339Nano drops trailing zeros; offsets other than Z are valid too.
    assert parse_line(b"2023-11-14T23:13:20.5+01:00 stdout P x").time_ns == BASE + 500_000_000
    assert parse_line(b"2023-11-14T22:13:20Z stdout F ").content == b""
    for bad in (b"", b"garbage", b"2023-11-14T22:13:20Z stdin F x",
                b"2023-11-14T22:13:20Z stdout X x"):
        with pytest.raises(LogFormatError):
            parse_line(bad)


def test_read_with_options(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    write(log, (0, "stdout", b"one", False), (1_000_000_000, "stderr", b"two", False),
          (2_000_000_000, "stdout", b"thr", True), (2_000_000_001, "stdout", b"ee", False))
    with log.open("ab") as file:
        file.write(b"not a log line\n")
    assert collect(log, LogOptions()) == b"one\ntwo\nthree\n"
    # tail counts file lines, as the kubelet does: a split record's P half falls off.
    assert collect(log, LogOptions(tail=2)) == b"ee\n"
    assert collect(log, LogOptions(tail=3)) == b"three\n"
    assert collect(log, LogOptions(tail=0)) == b""
    assert collect(log, LogOptions(tail=100)) == b"one\ntwo\nthree\n"
    assert collect(log, LogOptions(stream="stdout")) == b"one\nthree\n"
    since = datetime.datetime.fromtimestamp(BASE / 1e9 + 1, datetime.UTC)
    assert collect(log, LogOptions(since=since)) == b"two\nthree\n"
    assert collect(log, LogOptions(limit_bytes=6)) == b"one\ntw"
    assert collect(log, LogOptions(timestamps=True, tail=4)).splitlines()[0] == (
        b"2023-11-14T22:13:21.000000000Z two")
    with pytest.raises(ValueError):
        collect(log, LogOptions(stream="stdin"))
    with pytest.raises(ValueError):
        collect(log, LogOptions(tail=-1))


def test_follow_until_the_container_stops(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    write(log, (0, "stdout", b"first", False))

    async def scenario() -> list[bytes]:
        running = True
        seen: list[bytes] = []

        async def writer() -> None:
            nonlocal running
            while not seen:
                await asyncio.sleep(0.01)
            write(log, (1, "stdout", b"second", False))
            # Rotation: the old file moves away, the writer reopens the path.
            while len(seen) < 2:
                await asyncio.sleep(0.01)
            log.rename(tmp_path / "c.log.1")
            write(log, (2, "stdout", b"third", False))
            running = False

        task = asyncio.create_task(writer())
        async for chunk in read_log(log, LogOptions(follow=True), lambda: running):
            seen.append(chunk)
        await task
        return seen

    assert asyncio.run(scenario()) == [b"first\n", b"second\n", b"third\n"]
