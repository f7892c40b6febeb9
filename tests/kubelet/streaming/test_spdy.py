"""SPDY/3 framing and the server session, against a client-side framer."""

from __future__ import annotations

import asyncio
import struct
import zlib
from typing import TypeVar

import pytest

from kubi.kubelet.streaming import spdy
from kubi.kubelet.streaming.portforward import PortForwarder, check_stream

FrameT = TypeVar("FrameT")


def test_dictionary_is_the_spdy3_one() -> None:
    # The dictionary id zlib puts in every stream (FDICT) is its Adler-32.
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2


def test_every_frame_round_trips_across_split_reads() -> None:
    frames: list[spdy.Frame] = [
        spdy.SynStream(1, {"streamtype": ["data"], "port": ["8080"], "requestid": ["0"]},
                       priority=2, flags=spdy.FLAG_FIN),
        spdy.SynReply(1, {}),
        spdy.HeadersFrame(3, {"x": ["a", "b"]}),
        spdy.DataFrame(1, b"payload", spdy.FLAG_FIN),
        spdy.RstStream(3, spdy.CANCEL),
        spdy.Settings([(0, 7, 65536)]),
        spdy.Ping(7),
        spdy.GoAway(5, spdy.GOAWAY_OK),
        spdy.WindowUpdate(1, 1000),
    ]
    writer, reader = spdy.Framer(), spdy.Framer()
    wire = b"".join(writer.encode(f) for f in frames)
    decoded: list[spdy.Frame] = []
    for start in range(0, len(wire), 5):  # any split of the byte stream
        decoded += reader.feed(wire[start:start + 5])
    assert decoded == frames


def test_header_blocks_share_one_compression_context() -> None:
    writer = spdy.Framer()
    first = writer.encode(spdy.SynStream(1, {"streamtype": ["error"], "port": ["80"]}))
    second = writer.encode(spdy.SynStream(3, {"streamtype": ["error"], "port": ["80"]}))
    assert len(second) < len(first)  # the second refers back to the first
    fresh = spdy.Framer()
    with pytest.raises(spdy.SpdyError):
        fresh.feed(second)  # without the first block the context is missing


def _control(kind: int, payload: bytes, flags: int = 0, version: int = 3) -> bytes:
    return struct.pack("!HHI", 0x8000 | version, kind, (flags << 24) | len(payload)) + payload


@pytest.mark.parametrize("wire", [
    _control(spdy.TYPE_PING, struct.pack("!I", 1), version=2),  # unsupported version
    _control(42, b""),  # unknown type
    _control(spdy.TYPE_PING, struct.pack("!I", 0)),  # ping id 0
    _control(spdy.TYPE_RST_STREAM, struct.pack("!II", 1, 0)),  # status 0
    _control(spdy.TYPE_GOAWAY, b"\0\0\0\1"),  # short
    _control(spdy.TYPE_SYN_STREAM, struct.pack("!IIBB", 1, 0, 0, 0) + b"not zlib"),
    struct.pack("!II", 0, 3) + b"abc",  # data on stream 0
])
def test_bad_frames_are_refused(wire: bytes) -> None:
    with pytest.raises(spdy.SpdyError):
        spdy.Framer().feed(wire)


@pytest.mark.parametrize("head", [
    b"\xff" * 8,  # a control frame of version 0x7fff announcing 16 MiB
    b"\x00\x00\x00\x00\x00\xff\xff\xff",  # data on stream 0 announcing 16 MiB
])
def test_frames_that_cannot_be_spdy3_fail_before_their_payload(head: bytes) -> None:
    with pytest.raises(spdy.SpdyError):
        spdy.Framer().feed(head)


def test_uppercase_and_duplicate_header_names_are_refused() -> None:
    for block in (spdy.encode_header_block({"ok": ["1"]}).replace(b"ok", b"OK"),
                  struct.pack("!I", 2) + (struct.pack("!I", 1) + b"a" + struct.pack("!I", 0)) * 2):
        with pytest.raises(spdy.SpdyError):
            spdy.decode_header_block(block)


class Peer:
    """The client end: a framer of its own, talking to a session through queues."""

    def __init__(self) -> None:
        self.framer = spdy.Framer()
        self.to_server: asyncio.Queue[bytes] = asyncio.Queue()
        self.received: asyncio.Queue[spdy.Frame] = asyncio.Queue()

    async def from_server(self, data: bytes) -> None:
        for frame in self.framer.feed(data):
            self.received.put_nowait(frame)

    def send(self, frame: spdy.Frame) -> None:
        self.to_server.put_nowait(self.framer.encode(frame))

    async def expect(self, kind: type[FrameT]) -> FrameT:
        frame = await asyncio.wait_for(self.received.get(), 10)
        assert isinstance(frame, kind), frame
        return frame


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client half-closes
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_port_forward_session_pairs_streams_and_forwards() -> None:
    async def scenario() -> None:
        echo, port = await _echo_server()
        peer = Peer()

        async def connect(wanted: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            if wanted != 8080:
                raise ConnectionRefusedError(f"nothing listens on {wanted}")
            return await asyncio.open_connection("127.0.0.1", port)

        forwarder = PortForwarder(connect, "web", "uid-1")
        session = spdy.SpdySession(peer.from_server, check_stream, forwarder.handle)
        runner = asyncio.ensure_future(session.run(peer.to_server.get))
        try:
            headers = {"streamtype": ["error"], "port": ["8080"], "requestid": ["0"]}
            peer.send(spdy.SynStream(1, headers))
            assert (await peer.expect(spdy.SynReply)).stream_id == 1
            peer.send(spdy.DataFrame(1, b"", spdy.FLAG_FIN))  # kubectl never writes errors
            peer.send(spdy.SynStream(3, {**headers, "streamtype": ["data"]}))
            assert (await peer.expect(spdy.SynReply)).stream_id == 3
            peer.send(spdy.DataFrame(3, b"hello"))
            peer.send(spdy.DataFrame(3, b"", spdy.FLAG_FIN))
            data = await peer.expect(spdy.DataFrame)
            assert (data.stream_id, data.data) == (3, b"HELLO")
            closes = {(await peer.expect(spdy.DataFrame)).stream_id for _ in range(2)}
            assert closes == {1, 3}
            peer.send(spdy.Ping(5))
            assert (await peer.expect(spdy.Ping)).ping_id == 5

            # a port nobody listens on: the reason arrives on the error stream
            bad = {"streamtype": ["error"], "port": ["9999"], "requestid": ["1"]}
            peer.send(spdy.SynStream(5, bad))
            await peer.expect(spdy.SynReply)
            peer.send(spdy.SynStream(7, {**bad, "streamtype": ["data"]}))
            await peer.expect(spdy.SynReply)
            error = await peer.expect(spdy.DataFrame)
            assert error.stream_id == 5
            assert b"error forwarding port 9999 to pod web, uid uid-1" in error.data
            closes = {(await peer.expect(spdy.DataFrame)).stream_id for _ in range(2)}
            assert closes == {5, 7}

            # invalid headers and a stream id going backwards are refused with a reset
            peer.send(spdy.SynStream(9, {"streamtype": ["data"], "port": ["http"]}))
            assert (await peer.expect(spdy.RstStream)).stream_id == 9
            assert session.rejected[-1] == (9, 'unable to parse "http" as a port')
            peer.send(spdy.SynStream(3, headers))
            reset = await peer.expect(spdy.RstStream)
            assert reset.status == spdy.PROTOCOL_ERROR
            peer.send(spdy.GoAway(0))
            await asyncio.wait_for(runner, 10)
        finally:
            runner.cancel()
            echo.close()
            await echo.wait_closed()

    asyncio.run(scenario())


def test_session_answers_garbage_with_goaway() -> None:
    async def scenario() -> None:
        peer = Peer()

        async def handler(stream: spdy.SpdyStream) -> None:
            return None

        session = spdy.SpdySession(peer.from_server, lambda s: None, handler)
        peer.to_server.put_nowait(_control(99, b""))
        with pytest.raises(spdy.SpdyError):
            await session.run(peer.to_server.get)
        goaway = await peer.expect(spdy.GoAway)
        assert goaway.status == spdy.GOAWAY_PROTOCOL_ERROR

    asyncio.run(scenario())
