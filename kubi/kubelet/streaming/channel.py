"""The WebSocket channel protocol of exec and attach (`v5.channel.k8s.io` and older).

Every binary message is one frame: byte 0 names the stream, the rest is its payload.
Streams: 0 stdin, 1 stdout, 2 stderr, 3 error (a metav1.Status JSON from v4 on; plain
text before), 4 resize (`{"Width":…,"Height":…}`, v3 on). v5 adds the close signal
`[255, stream]`: the sender will write no more to that stream (stdin EOF).
The base64 variants carry text messages whose first character is the stream digit
and the rest the base64 of the payload.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V2 = "v2.channel.k8s.io"
V1 = "channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"

# Server preference does not matter: upstream takes the client's first supported one.
SUPPORTED = (V5, V4, V4_BASE64, V3, V2, V1, V1_BASE64)


class ChannelError(ValueError):
    """A frame that breaks the protocol (empty, wrong stream, bad encoding)."""


def negotiate(offered: list[str]) -> str | None:
    """The first protocol the client offered that we speak (None: none)."""
    for protocol in offered:
        if protocol.strip() in SUPPORTED:
            return protocol.strip()
    return None


def is_base64(protocol: str) -> bool:
    return "base64" in protocol


def supports_close(protocol: str) -> bool:
    return protocol == V5


def structured_errors(protocol: str) -> bool:
    """v4 and v5 report the outcome as a Status JSON; older ones as plain text."""
    return protocol in (V5, V4, V4_BASE64)


def supports_resize(protocol: str) -> bool:
    return protocol not in (V1, V1_BASE64, V2)


@dataclass(frozen=True)
class Frame:
    stream: int
    payload: bytes
    closing: bool = False  # a v5 close signal for `stream`


def encode(stream: int, payload: bytes, protocol: str = V5) -> bytes | str:
    """One message for `stream`: bytes for binary protocols, str for base64 ones."""
    if not 0 <= stream <= 255:
        raise ChannelError(f"stream {stream} out of range")
    if is_base64(protocol):
        return chr(ord("0") + stream) + base64.b64encode(payload).decode()
    return bytes([stream]) + payload


def encode_close(stream: int) -> bytes:
    return bytes([CLOSE, stream])


def decode(message: bytes | str, protocol: str = V5) -> Frame:
    if isinstance(message, str):
        if not is_base64(protocol):
            raise ChannelError("text message on a binary channel protocol")
        if not message:
            raise ChannelError("empty message")
        stream = ord(message[0]) - ord("0")
        if not 0 <= stream <= 9:
            raise ChannelError(f"invalid stream digit {message[0]!r}")
        try:
            return Frame(stream, base64.b64decode(message[1:], validate=True))
        except binascii.Error as exc:
            raise ChannelError(f"invalid base64 payload: {exc}") from None
    if is_base64(protocol):
        raise ChannelError("binary message on a base64 channel protocol")
    if not message:
        raise ChannelError("empty message")
    if message[0] == CLOSE and supports_close(protocol):
        if len(message) != 2:
            raise ChannelError(
                f"close signal must name exactly one stream, got {len(message) - 1} bytes")
        return Frame(message[1], b"", closing=True)
    return Frame(message[0], bytes(message[1:]))


def parse_resize(payload: bytes) -> tuple[int, int]:
    """(width, height) of a resize frame; raises ChannelError on anything else."""
    try:
        size: Any = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ChannelError(f"invalid resize payload: {exc}") from None
    if not isinstance(size, dict):
        raise ChannelError("resize payload must be an object")
    width, height = size.get("Width", 0), size.get("Height", 0)
    if not (isinstance(width, int) and isinstance(height, int)) or not (
            0 <= width < 65536 and 0 <= height < 65536):
        raise ChannelError(f"invalid terminal size {size!r}")
    return width, height


def success_status() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def exit_status(code: int, command: list[str] | None = None) -> dict[str, Any]:
    """The Status kubectl turns into its own exit code (client-go's CodeExitError)."""
    return {
        "metadata": {}, "status": "Failure",
        "message": f"command terminated with non-zero exit code: command "
                   f"'{' '.join(command or [])}' exited with {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def error_status(message: str) -> dict[str, Any]:
    return {"metadata": {}, "status": "Failure", "message": message,
            "reason": "InternalError", "code": 500}


def outcome_payload(status: dict[str, Any], protocol: str) -> bytes:
    """What goes on the error stream: the Status (v4+) or, before v4, the message of a
    failure (nothing on success)."""
    if structured_errors(protocol):
        return orjson.dumps(status)
    if status.get("status") == "Success":
        return b""
    return str(status.get("message", "")).encode()
