"""Port forwarding over SPDY streams (`portforward.k8s.io`), as the kubelet serves it.

For each forwarded connection the client opens two streams with the same `requestid`
and `port` headers: `streamtype: error` (the server writes a message there when the
forward fails) and `streamtype: data` (the bytes). Once both exist the server connects
to the port inside the pod and copies both ways; when the pod's side ends it half-closes
the data stream, then closes the error stream.

`serve_channels` serves the other port-forward protocol, WebSocket channels
(`v4.channel.k8s.io` / `portforward.k8s.io` with `?ports=…`), which the Python client uses:
two channels per port (data 2i, error 2i+1), each starting with the port as 2 bytes
little-endian.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kubi.kubelet.streaming.spdy import SpdyStream
from kubi.util.aio import cancel_and_wait

log = logging.getLogger("kubi.kubelet.portforward")

STREAM_CREATION_TIMEOUT = 30.0

Connector = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def check_stream(stream: SpdyStream) -> str | None:
    """Refuse streams without a valid port and stream type (as upstream)."""
    port_text = stream.header("port")
    if not port_text:
        return '"port" header is required'
    if not port_text.isdigit() or int(port_text) > 65535:
        return f'unable to parse "{port_text}" as a port'
    if int(port_text) < 1:
        return f'port "{port_text}" must be > 0'
    stream_type = stream.header("streamtype")
    if not stream_type:
        return '"streamType" header is required'
    if stream_type not in ("error", "data"):
        return f'invalid stream type "{stream_type}"'
    return None


@dataclass
class _Pair:
    request_id: str
    data: SpdyStream | None = None
    error: SpdyStream | None = None
    complete: asyncio.Event = field(default_factory=asyncio.Event)


class PortForwarder:
    """Pairs the streams of one SPDY connection and forwards each pair to `connect`."""

    def __init__(self, connect: Connector, pod: str, uid: str,
                 creation_timeout: float = STREAM_CREATION_TIMEOUT) -> None:
        self.connect = connect
        self.pod = pod
        self.uid = uid
        self.creation_timeout = creation_timeout
        self.pairs: dict[str, _Pair] = {}

    @staticmethod
    def _request_id(stream: SpdyStream) -> str:
        request_id = stream.header("requestid")
        if request_id:
            return request_id
        # Old clients send no request id: error and data streams come as ids n, n+2.
        offset = 0 if stream.header("streamtype") == "error" else 2
        return str(stream.id - offset)

    async def handle(self, stream: SpdyStream) -> None:
        request_id = self._request_id(stream)
        pair = self.pairs.get(request_id)
        if pair is None:
            pair = self.pairs[request_id] = _Pair(request_id)
            asyncio.get_running_loop().create_task(self._expire(pair))
        kind = stream.header("streamtype")
        if getattr(pair, kind) is not None:
            message = f"error processing stream for request {request_id}: " \
                      f"{kind} stream already assigned"
            await self._report(pair, message)
            return
        setattr(pair, kind, stream)
        if pair.data is not None and pair.error is not None:
            pair.complete.set()
            await self._forward(pair, pair.data, pair.error)

    async def _expire(self, pair: _Pair) -> None:
        try:
            await asyncio.wait_for(pair.complete.wait(), self.creation_timeout)
        except TimeoutError:
            await self._report(pair, f"(request={pair.request_id}) timed out waiting for streams")
            for stream in (pair.data, pair.error):
                if stream is not None:
                    await stream.close()
        finally:
            self.pairs.pop(pair.request_id, None)

    @staticmethod
    async def _report(pair: _Pair, message: str) -> None:
        if pair.error is not None and not pair.error.local_closed:
            with contextlib.suppress(ConnectionError):
                await pair.error.write(message.encode())

    async def _forward(self, pair: _Pair, data: SpdyStream, error: SpdyStream) -> None:
        port = int(data.header("port"))
        try:
            try:
                reader, writer = await self.connect(port)
            except Exception as exc:
                message = f"error forwarding port {port} to pod {self.pod}, uid {self.uid}: {exc}"
                log.info("%s", message)
                await self._report(pair, message)
                return
            try:
                await copy_both_ways(data, reader, writer)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        finally:
            await data.close()
            await error.close()


async def copy_both_ways(stream: SpdyStream, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
    """Until the pod's side ends (or the stream is reset): stream → socket, socket →
    stream. The client's half-close only half-closes the socket."""

    async def upstream() -> None:
        while True:
            chunk = await stream.read()
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
        if stream.reset:
            return
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()
        await asyncio.Event().wait()  # the pod's side decides when we are done

    async def downstream() -> None:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            await stream.write(chunk)

    tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(tasks)


# -- the WebSocket channel protocol for port forwarding -----------------------------------

SendMessage = Callable[[bytes], Awaitable[None]]
ReceiveMessage = Callable[[], Awaitable[bytes | None]]


async def serve_channels(ports: list[int], connect: Connector, send: SendMessage,
                         receive: ReceiveMessage, pod: str, uid: str) -> None:
    """Forward one connection per requested port over WebSocket channels."""
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = []
    for index, port in enumerate(ports):
        prefix = struct.pack("<H", port)
        await send(bytes([2 * index]) + prefix)
        await send(bytes([2 * index + 1]) + prefix)
        try:
            connections.append(await connect(port))
        except Exception as exc:
            connections.append(None)
            await send(bytes([2 * index + 1]) + (
                f"error forwarding port {port} to pod {pod}, uid {uid}: {exc}").encode())

    async def pump(index: int, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(65536):
            await send(bytes([2 * index]) + chunk)

    pumps = [asyncio.ensure_future(pump(i, c[0])) for i, c in enumerate(connections) if c]
    try:
        while True:
            message = await receive()
            if message is None:
                return
            if not message:
                continue
            channel, payload = message[0], message[1:]
            index = channel // 2
            if channel % 2 or index >= len(ports) or connections[index] is None:
                continue
            connection = connections[index]
            assert connection is not None
            connection[1].write(payload)
            await connection[1].drain()
    finally:
        for task in pumps:
            task.cancel()
        for connection in connections:
            if connection is not None:
                connection[1].close()
