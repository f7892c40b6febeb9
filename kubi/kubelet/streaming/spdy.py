"""SPDY/3.1 as kubectl speaks it for port-forward (and remote command over SPDY).

`Framer` turns bytes into frames and back; header blocks are zlib-compressed with the
fixed SPDY/3 dictionary, one compression context per direction for the whole
connection. `SpdySession` is the server side of a connection: the peer opens streams
(SYN_STREAM with headers such as streamtype/port/requestid), the session accepts or
rejects each (SYN_REPLY or RST_STREAM), carries DATA both ways, answers PINGs and stops
on GOAWAY. Semantics follow moby/spdystream as used by k8s.io/apimachinery's
httpstream/spdy: no flow control (WINDOW_UPDATE and SETTINGS are read and ignored),
data on a stream is delivered only after the stream was accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from kubi.util.aio import cancel_and_wait

VERSION = 3

TYPE_SYN_STREAM = 1
TYPE_SYN_REPLY = 2
TYPE_RST_STREAM = 3
TYPE_SETTINGS = 4
TYPE_PING = 6
TYPE_GOAWAY = 7
TYPE_HEADERS = 8
TYPE_WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

# RST_STREAM status codes
PROTOCOL_ERROR = 1
INVALID_STREAM = 2
REFUSED_STREAM = 3
UNSUPPORTED_VERSION = 4
CANCEL = 5
INTERNAL_ERROR = 6
FLOW_CONTROL_ERROR = 7
STREAM_IN_USE = 8
STREAM_ALREADY_CLOSED = 9
FRAME_TOO_LARGE = 11

# GOAWAY status codes
GOAWAY_OK = 0
GOAWAY_PROTOCOL_ERROR = 1
GOAWAY_INTERNAL_ERROR = 2

MAX_LENGTH = (1 << 24) - 1
MAX_STREAM_ID = 0x7FFFFFFF

_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
    "accept-encoding", "accept-language", "accept-ranges", "age", "allow", "authorization",
    "cache-control", "connection", "content-base", "content-encoding", "content-language",
    "content-length", "content-location", "content-md5", "content-range", "content-type",
    "date", "etag", "expect", "expires", "from", "host", "if-match", "if-modified-since",
    "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range",
    "referer", "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade",
    "user-agent", "vary", "via", "warning", "www-authenticate", "method", "get", "status",
    "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin",
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
    "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
    "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
    "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8"
    "charset=iso-8859-1,utf-,*,enq=0."
)
# The SPDY/3 header compression dictionary (spec section 2.6.10.1): length-prefixed
# words, then a run of common values.
DICTIONARY = b"".join(struct.pack("!I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()

Headers = dict[str, list[str]]


class SpdyError(Exception):
    """A protocol violation. `stream_id` 0: the whole connection is broken."""

    def __init__(self, message: str, stream_id: int = 0, status: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.status = status


@dataclass
class DataFrame:
    stream_id: int
    data: bytes = b""
    flags: int = 0


@dataclass
class SynStream:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    associated_to: int = 0
    priority: int = 0
    slot: int = 0
    flags: int = 0


@dataclass
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    flags: int = 0


@dataclass
class RstStream:
    stream_id: int
    status: int


@dataclass
class Settings:
    entries: list[tuple[int, int, int]] = field(default_factory=list)  # flags, id, value
    flags: int = 0


@dataclass
class Ping:
    ping_id: int


@dataclass
class GoAway:
    last_good_stream_id: int
    status: int = GOAWAY_OK


@dataclass
class HeadersFrame:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    flags: int = 0


@dataclass
class WindowUpdate:
    stream_id: int
    delta: int


Frame = (DataFrame | SynStream | SynReply | RstStream | Settings | Ping | GoAway
         | HeadersFrame | WindowUpdate)


def encode_header_block(headers: Headers) -> bytes:
    """The uncompressed name/value block: names lower-cased, several values of one name
    joined by NUL."""
    out = [struct.pack("!I", len(headers))]
    for name, values in headers.items():
        raw_name = name.lower().encode()
        raw_value = "\0".join(values).encode()
        out.append(struct.pack("!I", len(raw_name)) + raw_name)
        out.append(struct.pack("!I", len(raw_value)) + raw_value)
    return b"".join(out)


def decode_header_block(block: bytes, stream_id: int = 0) -> Headers:
    def take(position: int, size: int) -> bytes:
        if position + size > len(block):
            raise SpdyError("truncated header block", stream_id)
        return block[position:position + size]

    (count,) = struct.unpack("!I", take(0, 4))
    position = 4
    headers: Headers = {}
    for _ in range(count):
        (size,) = struct.unpack("!I", take(position, 4))
        if size == 0:
            raise SpdyError("empty header name", stream_id)
        name = take(position + 4, size).decode("latin-1")
        position += 4 + size
        if name != name.lower():
            raise SpdyError(f"header {name!r} was not lowercased", stream_id)
        if name in headers:
            raise SpdyError(f"multiple headers with name {name!r}", stream_id)
        (size,) = struct.unpack("!I", take(position, 4))
        value = take(position + 4, size).decode("latin-1")
        position += 4 + size
        headers[name] = value.split("\0")
    if position != len(block):
        raise SpdyError("trailing bytes after the header block", stream_id)
    return headers


class Framer:
    """Encodes frames to send and decodes received bytes, keeping the two zlib
    contexts. Feed it bytes in any pieces; it returns whole frames."""

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY,
                                            DICTIONARY)
        self._decompressor = zlib.decompressobj(15, DICTIONARY)
        self._buffer = bytearray()

    # -- writing --------------------------------------------------------------------------

    def _compress(self, headers: Headers) -> bytes:
        block = encode_header_block(headers)
        return self._compressor.compress(block) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def _control(kind: int, flags: int, payload: bytes) -> bytes:
        if len(payload) > MAX_LENGTH:
            raise SpdyError("frame too large", status=FRAME_TOO_LARGE)
        return struct.pack("!HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, DataFrame):
            if len(frame.data) > MAX_LENGTH:
                raise SpdyError("frame too large", frame.stream_id, FRAME_TOO_LARGE)
            return struct.pack("!II", frame.stream_id & MAX_STREAM_ID,
                               (frame.flags << 24) | len(frame.data)) + frame.data
        if isinstance(frame, SynStream):
            head = struct.pack("!IIBB", frame.stream_id, frame.associated_to,
                               (frame.priority & 7) << 5, frame.slot)
            return self._control(TYPE_SYN_STREAM, frame.flags,
                                 head + self._compress(frame.headers))
        if isinstance(frame, SynReply):
            return self._control(TYPE_SYN_REPLY, frame.flags, struct.pack("!I", frame.stream_id)
                                 + self._compress(frame.headers))
        if isinstance(frame, HeadersFrame):
            return self._control(TYPE_HEADERS, frame.flags, struct.pack("!I", frame.stream_id)
                                 + self._compress(frame.headers))
        if isinstance(frame, RstStream):
            return self._control(TYPE_RST_STREAM, 0,
                                 struct.pack("!II", frame.stream_id, frame.status))
        if isinstance(frame, Settings):
            body = struct.pack("!I", len(frame.entries)) + b"".join(
                struct.pack("!II", (flags << 24) | ident, value)
                for flags, ident, value in frame.entries)
            return self._control(TYPE_SETTINGS, frame.flags, body)
        if isinstance(frame, Ping):
            return self._control(TYPE_PING, 0, struct.pack("!I", frame.ping_id))
        if isinstance(frame, GoAway):
            return self._control(TYPE_GOAWAY, 0,
                                 struct.pack("!II", frame.last_good_stream_id, frame.status))
        return self._control(TYPE_WINDOW_UPDATE, 0,
                             struct.pack("!II", frame.stream_id, frame.delta))

    # -- reading --------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            first, second = struct.unpack_from("!II", self._buffer)
            control = bool(first & 0x80000000)
            # Checked before waiting for the payload: bytes that are not SPDY/3 at all
            # fail at once instead of reading as a huge frame still on its way.
            if control and (first >> 16) & 0x7FFF != VERSION:
                raise SpdyError(f"unsupported SPDY version {(first >> 16) & 0x7FFF}",
                                status=UNSUPPORTED_VERSION)
            if not control and first & MAX_STREAM_ID == 0:
                raise SpdyError("data frame on stream 0")
            length = second & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8:8 + length])
            del self._buffer[:8 + length]
            flags = second >> 24
            if control:
                frames.append(self._control_frame(first & 0xFFFF, flags, payload))
            else:
                frames.append(DataFrame(first & MAX_STREAM_ID, payload, flags))
        return frames

    def _decompress(self, compressed: bytes, stream_id: int) -> Headers:
        try:
            block = self._decompressor.decompress(compressed)
        except zlib.error as exc:
            raise SpdyError(f"header decompression failed: {exc}") from None
        return decode_header_block(block, stream_id)

    def _control_frame(self, kind: int, flags: int, payload: bytes) -> Frame:
        def need(size: int, exact: bool = False) -> None:
            if len(payload) < size or (exact and len(payload) != size):
                raise SpdyError(f"invalid control frame of type {kind} ({len(payload)} bytes)")

        if kind == TYPE_SYN_STREAM:
            need(10)
            stream_id, associated, priority, slot = struct.unpack_from("!IIBB", payload)
            stream_id &= MAX_STREAM_ID
            headers = self._decompress(payload[10:], stream_id)
            if stream_id == 0:
                raise SpdyError("SYN_STREAM on stream 0")
            return SynStream(stream_id, headers, associated & MAX_STREAM_ID, priority >> 5,
                             slot, flags)
        if kind in (TYPE_SYN_REPLY, TYPE_HEADERS):
            need(4)
            stream_id = struct.unpack_from("!I", payload)[0] & MAX_STREAM_ID
            headers = self._decompress(payload[4:], stream_id)
            if stream_id == 0:
                raise SpdyError("stream id zero is disallowed")
            if kind == TYPE_SYN_REPLY:
                return SynReply(stream_id, headers, flags)
            return HeadersFrame(stream_id, headers, flags)
        if kind == TYPE_RST_STREAM:
            need(8, exact=True)
            stream_id, status = struct.unpack("!II", payload)
            if status == 0 or stream_id & MAX_STREAM_ID == 0:
                raise SpdyError("invalid RST_STREAM")
            return RstStream(stream_id & MAX_STREAM_ID, status)
        if kind == TYPE_SETTINGS:
            need(4)
            (count,) = struct.unpack_from("!I", payload)
            need(4 + 8 * count, exact=True)
            entries = []
            for index in range(count):
                word, value = struct.unpack_from("!II", payload, 4 + 8 * index)
                entries.append((word >> 24, word & 0xFFFFFF, value))
            return Settings(entries, flags)
        if kind == TYPE_PING:
            need(4, exact=True)
            (ping_id,) = struct.unpack("!I", payload)
            if ping_id == 0 or flags:
                raise SpdyError("invalid PING")
            return Ping(ping_id)
        if kind == TYPE_GOAWAY:
            need(8, exact=True)
            last, status = struct.unpack("!II", payload)
            return GoAway(last & MAX_STREAM_ID, status)
        if kind == TYPE_WINDOW_UPDATE:
            need(8, exact=True)
            stream_id, delta = struct.unpack("!II", payload)
            return WindowUpdate(stream_id & MAX_STREAM_ID, delta & MAX_STREAM_ID)
        raise SpdyError(f"unknown control frame type {kind}")


# -- the server side of a connection -----------------------------------------------------

SendBytes = Callable[[bytes], Awaitable[None]]


class StreamReset(ConnectionError):
    """The stream was reset by the peer (or the connection went away)."""


class SpdyStream:
    """One stream the peer opened. `read` returns b"" once the peer half-closed it."""

    def __init__(self, session: SpdySession, stream_id: int, headers: Headers) -> None:
        self.session = session
        self.id = stream_id
        self.headers = headers
        self._incoming: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.remote_closed = False
        self.local_closed = False
        self.reset = False

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else ""

    def _deliver(self, data: bytes) -> None:
        if data and not self.remote_closed:
            self._incoming.put_nowait(data)

    def _remote_finish(self) -> None:
        if not self.remote_closed:
            self.remote_closed = True
            self._incoming.put_nowait(None)

    def _reset(self) -> None:
        self.reset = True
        self.local_closed = True
        self._remote_finish()

    async def read(self) -> bytes:
        if self._incoming.empty() and self.remote_closed:
            return b""
        data = await self._incoming.get()
        if data is None:
            self._incoming.put_nowait(None)  # keep reporting the end
            return b""
        return data

    async def write(self, data: bytes) -> None:
        if self.local_closed:
            raise StreamReset(f"stream {self.id} is closed")
        for start in range(0, len(data), 65536):
            await self.session.send_frame(DataFrame(self.id, data[start:start + 65536]))

    async def close(self) -> None:
        """Half-close: we will send no more (DATA with FIN)."""
        if self.local_closed:
            return
        self.local_closed = True
        with contextlib.suppress(ConnectionError):
            await self.session.send_frame(DataFrame(self.id, b"", FLAG_FIN))

    async def abort(self, status: int = CANCEL) -> None:
        if self.reset:
            return
        self._reset()
        with contextlib.suppress(ConnectionError):
            await self.session.send_frame(RstStream(self.id, status))


# Decides on a new stream: a reason to refuse it, or None to accept it.
StreamCheck = Callable[[SpdyStream], str | None]
StreamHandler = Callable[[SpdyStream], Coroutine[Any, Any, None]]


class SpdySession:
    """The server end of a SPDY connection over any byte transport."""

    def __init__(self, send: SendBytes, check: StreamCheck, handler: StreamHandler) -> None:
        self._send = send
        self._check = check
        self._handler = handler
        self.framer = Framer()
        self.streams: dict[int, SpdyStream] = {}
        self.rejected: list[tuple[int, str]] = []  # (stream id, reason), for diagnostics
        self._write_lock = asyncio.Lock()
        self._next_remote_id = 1
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    async def send_frame(self, frame: Frame) -> None:
        if self.closed:
            raise ConnectionError("SPDY connection closed")
        async with self._write_lock:  # the compressor is stateful: frames go out in order
            data = self.framer.encode(frame)
            await self._send(data)

    async def feed(self, data: bytes) -> bool:
        """Process received bytes; False once the peer said GOAWAY."""
        for frame in self.framer.feed(data):
            if not await self._on_frame(frame):
                return False
        return True

    async def _on_frame(self, frame: Frame) -> bool:
        if isinstance(frame, SynStream):
            await self._on_syn_stream(frame)
        elif isinstance(frame, DataFrame):
            stream = self.streams.get(frame.stream_id)
            if stream is not None:  # data for unknown or finished streams is dropped
                stream._deliver(frame.data)
                if frame.flags & FLAG_FIN:
                    stream._remote_finish()
        elif isinstance(frame, RstStream):
            stream = self.streams.pop(frame.stream_id, None)
            if stream is not None:
                stream._reset()
        elif isinstance(frame, Ping):
            if frame.ping_id % 2 == 1:  # the peer's ping (ours would be even): echo it
                await self.send_frame(frame)
        elif isinstance(frame, GoAway):
            return False
        elif isinstance(frame, HeadersFrame):
            stream = self.streams.get(frame.stream_id)
            if stream is not None and frame.flags & FLAG_FIN:
                stream._remote_finish()
        # SETTINGS, WINDOW_UPDATE, SYN_REPLY: nothing to do for a server without flow control
        return True

    async def _on_syn_stream(self, frame: SynStream) -> None:
        stream_id = frame.stream_id
        if stream_id % 2 == 0 or stream_id < self._next_remote_id:
            await self.send_frame(RstStream(stream_id, PROTOCOL_ERROR))
            return
        self._next_remote_id = stream_id + 2
        stream = SpdyStream(self, stream_id, frame.headers)
        if frame.flags & FLAG_FIN:
            stream._remote_finish()
        reason = self._check(stream)
        if reason is not None:
            self.rejected.append((stream_id, reason))
            await self.send_frame(RstStream(stream_id, CANCEL))
            return
        self.streams[stream_id] = stream
        await self.send_frame(SynReply(stream_id, {}))
        task = asyncio.create_task(self._handler(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, receive: Callable[[], Awaitable[bytes]]) -> None:
        """Read until the transport ends (b""), the peer goes away or breaks the protocol."""
        try:
            while True:
                data = await receive()
                if not data or not await self.feed(data):
                    return
        except SpdyError as err:
            with contextlib.suppress(ConnectionError):
                await self.send_frame(GoAway(self._next_remote_id - 2 if
                                             self._next_remote_id > 2 else 0,
                                             GOAWAY_PROTOCOL_ERROR))
            raise err
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        self.closed = True
        for stream in list(self.streams.values()):
            stream._reset()
        self.streams.clear()
        await cancel_and_wait(list(self._tasks))
