"""exec and attach over plain SPDY/3.1 (kubectl's fallback from WebSocket), as the
kubelet serves remote commands for the protocols v4.channel.k8s.io … channel.k8s.io.

The client opens one SPDY stream per standard stream, named by the `streamtype`
header: error (always), stdin, stdout, stderr (not with a tty) and, from v3 on with a
tty, resize (a sequence of `{"Width":…,"Height":…}` JSON objects). Once all the
streams the request asked for exist the session runs: output goes out on stdout and
stderr, the client's half-close of stdin closes the process's stdin. At the end stdout
and stderr are half-closed, the outcome is written on the error stream (v4: a Status
JSON, Success included; older: the failure message as text, nothing on success) and
the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from kubi.kubelet.runtime.interface import StreamSession
from kubi.kubelet.streaming import channel, spdy
from kubi.kubelet.streaming.remotecommand import DRAIN_SECONDS, StreamOptions
from kubi.util.aio import cancel_and_wait

log = logging.getLogger("kubi.kubelet.spdy_remotecommand")

# What the kubelet accepts over SPDY, best first (v5 is WebSocket only).
SUPPORTED = (channel.V4, channel.V3, channel.V2, channel.V1)
STREAM_TYPES = ("error", "stdin", "stdout", "stderr", "resize")
STREAM_CREATION_TIMEOUT = 30.0
# After the outcome went out, the client normally hangs up first; wait that long for it
# so that closing does not race its last frames.
CLOSE_GRACE_SECONDS = 2.0


class ByteConnection(Protocol):
    """A taken-over connection (kubi.util.upgrade.UpgradedConnection)."""

    async def read(self) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


def negotiate(offered: list[str]) -> str | None:
    """The first protocol the client offered that is served over SPDY."""
    return next((p for p in offered if p in SUPPORTED), None)


def expected_streams(options: StreamOptions, protocol: str) -> set[str]:
    wanted = {"error"}
    for name in ("stdin", "stdout", "stderr"):
        if getattr(options, name):
            wanted.add(name)
    if options.tty and channel.supports_resize(protocol):
        wanted.add("resize")
    return wanted


class StreamSet:
    """Collects the client's streams by type until every expected one is there."""

    def __init__(self, options: StreamOptions, protocol: str) -> None:
        self.expected = expected_streams(options, protocol)
        self.streams: dict[str, spdy.SpdyStream] = {}
        self.complete = asyncio.Event()

    def check(self, stream: spdy.SpdyStream) -> str | None:
        kind = stream.header("streamtype")
        if kind not in STREAM_TYPES:
            return f"unexpected stream type: {kind!r}"
        if kind in self.streams:
            return f"duplicate {kind} stream"
        self.streams[kind] = stream  # reserved now: a second one in the same batch is refused
        return None

    async def handle(self, stream: spdy.SpdyStream) -> None:
        if self.expected <= self.streams.keys():
            self.complete.set()

    def get(self, kind: str) -> spdy.SpdyStream | None:
        return self.streams.get(kind)


async def serve(connection: ByteConnection, session: StreamSession, options: StreamOptions,
                protocol: str, *, command: list[str] | None = None, attach: bool = False,
                creation_timeout: float = STREAM_CREATION_TIMEOUT) -> None:
    """Run the remote command over the connection to its end; closes the connection."""
    streams = StreamSet(options, protocol)
    connection_session = spdy.SpdySession(connection.write, streams.check, streams.handle)

    async def read_frames() -> None:
        try:
            await connection_session.run(connection.read)
        except spdy.SpdyError as err:
            log.info("remote command connection broken: %s", err)

    reader = asyncio.ensure_future(read_frames())
    ready = asyncio.ensure_future(streams.complete.wait())
    try:
        done, _ = await asyncio.wait({ready, reader}, timeout=creation_timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            if reader not in done:
                log.info("timed out waiting for client to create streams (have %s, want %s)",
                         sorted(streams.streams), sorted(streams.expected))
            return
        if await _run(session, options, protocol, streams, reader, command, attach):
            await asyncio.wait({reader}, timeout=CLOSE_GRACE_SECONDS)
    finally:
        await cancel_and_wait((ready, reader))
        await connection_session.shutdown()
        connection.close()


async def _run(session: StreamSession, options: StreamOptions, protocol: str,
               streams: StreamSet, reader: asyncio.Future[None], command: list[str] | None,
               attach: bool) -> bool:
    """The session over complete streams; True when the outcome was delivered."""

    async def pump(read: Callable[[int], Awaitable[bytes]], kind: str) -> None:
        stream = streams.get(kind) if getattr(options, kind) else None
        while data := await read(65536):
            if stream is not None and not stream.local_closed:
                try:
                    await stream.write(data)
                except ConnectionError:  # keep draining so the process is not blocked
                    stream = None

    async def copy_stdin(stream: spdy.SpdyStream) -> None:
        while data := await stream.read():
            await session.write_stdin(data)
        await session.close_stdin()

    async def follow_resizes(stream: spdy.SpdyStream) -> None:
        decoder, text = json.JSONDecoder(), ""
        while data := await stream.read():
            text += data.decode("utf-8", "replace")
            while text.strip():
                try:
                    _, end = decoder.raw_decode(text.lstrip())
                except json.JSONDecodeError:
                    break  # incomplete: wait for more (nonsense ends at the stream's end)
                body = text.lstrip()[:end]
                text = text.lstrip()[end:]
                try:
                    width, height = channel.parse_resize(body.encode())
                except channel.ChannelError as err:
                    log.info("ignoring the rest of the resize stream: %s", err)
                    return  # as upstream: the first bad size ends resizing
                await session.resize(width, height)

    outputs = [asyncio.ensure_future(pump(session.read_stdout, "stdout"))]
    if not session.tty:
        outputs.append(asyncio.ensure_future(pump(session.read_stderr, "stderr")))
    inputs: list[asyncio.Future[None]] = []
    stdin, resize = streams.get("stdin"), streams.get("resize")
    if stdin is not None and options.stdin:
        inputs.append(asyncio.ensure_future(copy_stdin(stdin)))
    if resize is not None and options.tty:
        inputs.append(asyncio.ensure_future(follow_resizes(resize)))
    waiter: asyncio.Future[Any] = asyncio.ensure_future(session.wait())
    try:
        done, _ = await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            return False  # the client left: nobody to report to
        try:
            code = waiter.result()
        except Exception as exc:  # the runtime lost the process
            status = channel.error_status(str(exc))
        else:
            status = (channel.success_status() if attach or code == 0
                      else channel.exit_status(code, command))
        await asyncio.wait(outputs, timeout=DRAIN_SECONDS)
        for kind in ("stdout", "stderr"):
            stream = streams.get(kind)
            if stream is not None:
                await stream.close()
        error = streams.get("error")
        if error is not None:
            payload = channel.outcome_payload(status, protocol)
            with contextlib.suppress(ConnectionError):
                if payload:
                    await error.write(payload)
            await error.close()
        if stdin is not None:
            await stdin.close()  # the client waits for this to stop reading its stdin
        return True
    finally:
        await cancel_and_wait([*outputs, *inputs, waiter])
