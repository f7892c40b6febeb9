"""exec and attach over the WebSocket channel protocol (see channel.py).

The session's output goes out as stdout/stderr frames; stdin, resize and (v5) the
stdin close signal come in. At the end the error stream carries the outcome — Success,
or NonZeroExitCode with the exit code for exec — and the connection closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kubi.kubelet.runtime.interface import StreamSession
from kubi.kubelet.streaming import channel
from kubi.util.aio import cancel_and_wait

log = logging.getLogger("kubi.kubelet.remotecommand")

# After the process exited, output still buffered is drained for at most this long
# (a daemonised child may keep the pipe open forever).
DRAIN_SECONDS = 2.0

SendMessage = Callable[[bytes | str], Awaitable[None]]
ReceiveMessage = Callable[[], Awaitable[bytes | str | None]]


@dataclass
class StreamOptions:
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    tty: bool = False

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> StreamOptions:
        def flag(name: str) -> bool:
            values = query.get(name) or []
            return bool(values) and values[-1].lower() in ("1", "true")

        tty = flag("tty")
        # A terminal merges stderr into stdout: upstream drops stderr with a tty.
        return cls(flag("stdin"), flag("stdout"), flag("stderr") and not tty, tty)

    def check(self) -> str | None:
        if not (self.stdin or self.stdout or self.stderr):
            return "you must specify at least 1 of stdin, stdout, stderr"
        return None


async def serve(session: StreamSession, options: StreamOptions, protocol: str,
                send: SendMessage, receive: ReceiveMessage, *,
                command: list[str] | None = None, attach: bool = False) -> None:
    """Run the session to its end over one connection; the caller closes it after."""
    write_lock = asyncio.Lock()

    async def emit(stream: int, data: bytes) -> None:
        async with write_lock:
            await send(channel.encode(stream, data, protocol))

    async def pump(read: Callable[[int], Awaitable[bytes]], stream: int, wanted: bool) -> None:
        while True:
            data = await read(65536)
            if not data:
                return
            if wanted:
                await emit(stream, data)

    async def inbound() -> None:
        while True:
            message = await receive()
            if message is None:
                return  # the client went away
            try:
                frame = channel.decode(message, protocol)
            except channel.ChannelError as err:
                log.info("ignoring bad frame: %s", err)
                continue
            if frame.closing:
                if frame.stream == channel.STDIN and options.stdin:
                    await session.close_stdin()
            elif frame.stream == channel.STDIN and options.stdin:
                if frame.payload:
                    await session.write_stdin(frame.payload)
            elif frame.stream == channel.RESIZE and options.tty:
                try:
                    width, height = channel.parse_resize(frame.payload)
                except channel.ChannelError as err:
                    log.info("ignoring bad resize: %s", err)
                    continue
                await session.resize(width, height)

    outputs = [asyncio.ensure_future(pump(session.read_stdout, channel.STDOUT, options.stdout))]
    if not session.tty:
        outputs.append(asyncio.ensure_future(
            pump(session.read_stderr, channel.STDERR, options.stderr)))
    reader = asyncio.ensure_future(inbound())
    waiter = asyncio.ensure_future(session.wait())
    status: dict[str, object] | None = None
    try:
        done, _ = await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            return  # the client left: nobody to report to
        try:
            code = waiter.result()
        except Exception as exc:  # the runtime lost the process
            status = channel.error_status(str(exc))
        else:
            status = (channel.success_status() if attach or code == 0
                      else channel.exit_status(code, command))
        await asyncio.wait(outputs, timeout=DRAIN_SECONDS)
        await emit(channel.ERROR, channel.outcome_payload(status, protocol))
    finally:
        await cancel_and_wait([*outputs, reader, waiter])
