"""The WebSocket channel protocol: frames, negotiation, the outcome Status."""

from __future__ import annotations

import orjson
import pytest

from kubi.kubelet.streaming import channel


def test_binary_round_trip_and_close_signal() -> None:
    message = channel.encode(channel.STDOUT, b"hello")
    assert message == b"\x01hello"
    frame = channel.decode(message)
    assert (frame.stream, frame.payload, frame.closing) == (1, b"hello", False)
    closing = channel.decode(channel.encode_close(channel.STDIN))
    assert (closing.stream, closing.closing) == (0, True)
    # v4 has no close signal: 255 is just a stream number there
    assert channel.decode(b"\xff\x00", channel.V4).closing is False


def test_base64_variant() -> None:
    message = channel.encode(channel.STDERR, b"\x00\xffbin", channel.V4_BASE64)
    assert isinstance(message, str) and message[0] == "2"
    assert channel.decode(message, channel.V4_BASE64).payload == b"\x00\xffbin"


@pytest.mark.parametrize("message, protocol", [
    (b"", channel.V5),
    (b"\xff", channel.V5),
    (b"\xff\x00\x01", channel.V5),
    ("1aGk=", channel.V5),
    (b"\x01hi", channel.V4_BASE64),
    ("x!!!", channel.V4_BASE64),
    ("1not base64!", channel.V4_BASE64),
])
def test_bad_frames_are_refused(message: bytes | str, protocol: str) -> None:
    with pytest.raises(channel.ChannelError):
        channel.decode(message, protocol)


def test_negotiation_takes_the_clients_first_supported() -> None:
    assert channel.negotiate(["v9.channel.k8s.io", "v4.channel.k8s.io", "v5.channel.k8s.io"]) \
        == channel.V4
    assert channel.negotiate(["SPDY/3.1+portforward.k8s.io"]) is None
    assert channel.negotiate([]) is None


def test_resize() -> None:
    assert channel.parse_resize(b'{"Width":120,"Height":40}') == (120, 40)
    for bad in (b"[1,2]", b"{", b'{"Width":-1,"Height":2}', b'{"Width":"a"}'):
        with pytest.raises(channel.ChannelError):
            channel.parse_resize(bad)


def test_outcome_status() -> None:
    failure = orjson.loads(channel.outcome_payload(channel.exit_status(3, ["sh"]), channel.V5))
    assert failure["status"] == "Failure" and failure["reason"] == "NonZeroExitCode"
    assert failure["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert orjson.loads(channel.outcome_payload(channel.success_status(), channel.V4)) == {
        "metadata": {}, "status": "Success"}
    # before v4 the error stream carries only a failure's text
    assert channel.outcome_payload(channel.success_status(), channel.V2) == b""
    assert channel.outcome_payload(channel.error_status("boom"), channel.V1) == b"boom"
