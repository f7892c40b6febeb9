"""Container log files in the CRI format, and reading them as `kubectl logs` wants.

Each line of a file is `<RFC 3339 nano time> <stdout|stderr> <F|P> <content>`: F ends a
line of the container's output, P is a piece of a longer one (the writer splits lines
longer than its buffer). The reader follows upstream's pkg/kubelet/kuberuntime/logs:
tail counts file lines from the end, since filters by time, timestamps prefix each
record, follow keeps reading (across a rotation) while the container runs.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_LINE = re.compile(
    rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) "
    rb"(stdout|stderr) ([FP]) ?(.*)$", re.DOTALL)
FOLLOW_POLL_SECONDS = 0.1


class LogFormatError(ValueError):
    pass


@dataclass
class LogEntry:
    time_ns: int  # nanoseconds since the epoch
    stream: str
    partial: bool
    content: bytes  # without the newline

    def timestamp(self) -> str:
        return format_time_ns(self.time_ns)


def format_time_ns(time_ns: int) -> str:
    """RFC 3339 in UTC with nine fraction digits: 2024-01-01T00:00:00.000000000Z."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def format_line(time_ns: int, stream: str, content: bytes, partial: bool = False) -> bytes:
    return (f"{format_time_ns(time_ns)} {stream} {'P' if partial else 'F'} ".encode()
            + content + b"\n")


def parse_line(line: bytes) -> LogEntry:
    """One line of a CRI log file (with or without its trailing newline)."""
    match = _LINE.match(line.rstrip(b"\n"))
    if match is None:
        raise LogFormatError(f"not a CRI log line: {line[:80]!r}")
    base, fraction, zone, stream, tag, content = match.groups()
    when = datetime.datetime.fromisoformat(
        base.decode() + ("+00:00" if zone == b"Z" else zone.decode()))
    nanos = int((fraction or b"0").ljust(9, b"0"))
    return LogEntry(int(when.timestamp()) * 1_000_000_000 + nanos, stream.decode(),
                    tag == b"P", content)


@dataclass
class LogOptions:
    tail: int | None = None  # lines from the end; None: all
    since: datetime.datetime | None = None
    timestamps: bool = False
    follow: bool = False
    limit_bytes: int | None = None
    stream: str = "all"  # all, stdout or stderr


def render(entry: LogEntry, timestamps: bool) -> bytes:
    body = entry.content if entry.partial else entry.content + b"\n"
    return (entry.timestamp().encode() + b" " + body) if timestamps else body


def _tail_offset(handle: os.PathLike[str] | str, lines: int) -> int:
    """Byte offset where the last `lines` lines of the file begin."""
    with open(handle, "rb") as file:
        file.seek(0, os.SEEK_END)
        end = file.tell()
        if lines <= 0:
            return end
        position, found, block = end, 0, 8192
        while position > 0:
            step = min(block, position)
            position -= step
            file.seek(position)
            chunk = file.read(step)
            # The file's last newline ends the last line rather than starting one.
            limit = len(chunk) - 1 if position + step == end else len(chunk)
            index = limit
            while True:
                index = chunk.rfind(b"\n", 0, index)
                if index < 0:
                    break
                found += 1
                if found >= lines:
                    return position + index + 1
        return 0


async def read_log(path: Path, options: LogOptions,
                   running: Callable[[], bool] | None = None) -> AsyncIterator[bytes]:
    """Yield the rendered records of a CRI log file. With `follow`, keep going while
    `running()` says the container runs, reopening the file when it is rotated."""
    if options.stream not in ("all", "stdout", "stderr"):
        raise ValueError(f"unknown stream {options.stream!r}")
    if options.tail is not None and options.tail < 0:
        raise ValueError("tail must not be negative")
    since_ns = None if options.since is None else int(options.since.timestamp() * 1e9)
    remaining = options.limit_bytes
    file = open(path, "rb")  # noqa: SIM115 (closed in finally; reopened on rotation)
    try:
        if options.tail is not None:
            file.seek(_tail_offset(path, options.tail))
        pending = b""
        final = False
        while True:
            chunk = file.readline()
            if chunk and not chunk.endswith(b"\n"):
                pending += chunk  # a line still being written
                chunk = b""
            elif chunk:
                chunk, pending = pending + chunk, b""
            if not chunk:
                if not (options.follow and running is not None):
                    return
                if _rotated(file, path):
                    file.close()
                    file = open(path, "rb")  # noqa: SIM115
                    pending = b""
                    continue
                if not running():
                    # One more pass: the writer may have flushed just before exiting.
                    if final:
                        return
                    final = True
                    continue
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
                continue
            try:
                entry = parse_line(chunk)
            except LogFormatError:
                continue  # upstream skips lines it cannot parse
            if options.stream != "all" and entry.stream != options.stream:
                continue
            if since_ns is not None and entry.time_ns < since_ns:
                continue
            data = render(entry, options.timestamps)
            if remaining is not None:
                if remaining <= 0:
                    return
                data = data[:remaining]
                remaining -= len(data)
            yield data
    finally:
        file.close()


def _rotated(file: BinaryIO, path: Path) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(file.fileno())
    return (current.st_ino, current.st_dev) != (opened.st_ino, opened.st_dev)
