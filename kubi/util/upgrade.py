"""Taking over an HTTP/1.1 connection after `101 Switching Protocols`, under uvicorn.

ASGI knows WebSocket upgrades only: an application cannot answer 101 to another
protocol and then speak it on the raw connection, as kubectl's SPDY/3.1 fallback for
exec/attach/port-forward needs. `UpgradeHttpProtocol` is uvicorn's httptools protocol
plus that: a request with `Connection: Upgrade` and an `Upgrade` other than websocket
reaches the application as an ordinary `http` request (so it is authenticated and
checked like any other), with the scope extension `kubi.upgrade`. To refuse, the
application answers normally (the connection is closed after the answer). To accept,
it calls `accept_upgrade(scope, protocol, headers)`, which writes the 101 answer and
returns the connection's bytes as an `UpgradedConnection`; bytes the client sent
after the request and before the answer come first. The connection is closed when the
application returns.

Pass the class as `uvicorn.Config(http=UpgradeHttpProtocol)`. This module depends on
uvicorn and httptools only, which both servers already use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

EXTENSION = "kubi.upgrade"
# Received bytes held for a connection's reader before the socket stops being read.
READ_HIGH_WATER = 1024 * 1024

Scope = MutableMapping[str, Any]
Accept = Callable[[str, list[tuple[str, str]]], Awaitable["UpgradedConnection"]]


class UpgradeRefused(ConnectionError):
    """The connection cannot be taken over (no support, answered already, or gone)."""


def upgrade_requested(scope: Scope) -> str:
    """The protocol the client asks to switch to ("" when it asks for none), lowercased,
    as the `Upgrade` header of a request whose `Connection` names `upgrade`."""
    connection: list[str] = []
    upgrade = ""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"connection":
            connection += [t.strip().lower() for t in value.decode("latin-1").split(",")]
        elif name.lower() == b"upgrade":
            upgrade = value.decode("latin-1").strip().lower()
    return upgrade if "upgrade" in connection else ""


def can_upgrade(scope: Scope) -> bool:
    """Whether the server can hand this request's connection to the application."""
    return EXTENSION in (scope.get("extensions") or {})


async def accept_upgrade(scope: Scope, protocol: str,
                         headers: list[tuple[str, str]] | None = None) -> UpgradedConnection:
    """Answer `101 Switching Protocols` (Connection: Upgrade, Upgrade: `protocol`, then
    `headers`) and return the connection. Raises UpgradeRefused when impossible."""
    extension = (scope.get("extensions") or {}).get(EXTENSION)
    if extension is None:
        raise UpgradeRefused("this server cannot take over connections")
    accept: Accept = extension["accept"]
    return await accept(protocol, list(headers or []))


class UpgradedConnection:
    """The raw bytes of a taken-over connection. `read` returns b"" at the end."""

    def __init__(self, transport: asyncio.Transport, flow: FlowControl, early: bytes) -> None:
        self._transport = transport
        self._flow = flow
        self._buffer = bytearray(early)
        self._readable = asyncio.Event()
        self._ended = False
        if early:
            self._readable.set()

    def _feed(self, data: bytes) -> None:
        self._buffer += data
        self._readable.set()
        if len(self._buffer) > READ_HIGH_WATER:
            self._flow.pause_reading()

    def _end(self) -> None:
        self._ended = True
        self._readable.set()

    async def read(self) -> bytes:
        while not self._buffer:
            if self._ended:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = bytes(self._buffer)
        self._buffer.clear()
        self._flow.resume_reading()
        return data

    async def write(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise ConnectionResetError("connection closed")
        self._transport.write(data)
        if self._flow.write_paused:
            await self._flow.drain()

    def close(self) -> None:
        """Close after what was written has been sent."""
        self._end()
        if not self._transport.is_closing():
            self._transport.close()


class UpgradeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP protocol that lets the application take over the
    connection of a non-WebSocket upgrade request (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._offered = False  # the current request may be taken over
        self._early: bytearray | None = None  # bytes after the request, once it ended
        self._upgraded: UpgradedConnection | None = None

    def on_headers_complete(self) -> None:
        upgrade = self._get_upgrade()
        self._offered = upgrade is not None and upgrade != b"websocket"
        if self._offered:
            extensions = dict(self.scope.get("extensions") or {})
            extensions[EXTENSION] = {"accept": self._accept}
            self.scope["extensions"] = extensions
        super().on_headers_complete()
        if self._offered:
            # After a refusal the connection cannot carry another request.
            self.cycle.keep_alive = False

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._upgraded is not None:
            self._upgraded._feed(data)
            return
        if self._early is not None:  # the application has not decided yet
            self._early += data
            if len(self._early) > READ_HIGH_WATER:
                self.flow.pause_reading()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)
        except httptools.HttpParserUpgrade as upgrade:
            if self._offered:
                offset = int(upgrade.args[0]) if upgrade.args else len(data)
                self._early = bytearray(data[offset:])
            elif self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._upgraded is not None:
            self._upgraded._end()

    async def _accept(self, protocol: str,
                      headers: list[tuple[str, str]]) -> UpgradedConnection:
        cycle = self.cycle
        if cycle is None or cycle.response_started or self._early is None:
            raise UpgradeRefused("the request was answered already or is not complete")
        if self.transport.is_closing():
            raise UpgradeRefused("the client went away")
        # uvicorn must neither answer for the application nor close after it returns.
        cycle.response_started = cycle.response_complete = True
        lines = ["HTTP/1.1 101 Switching Protocols", "Connection: Upgrade",
                 f"Upgrade: {protocol}", *(f"{name}: {value}" for name, value in headers)]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        connection = UpgradedConnection(self.transport, self.flow, bytes(self._early))
        self._upgraded = connection
        self._early = None
        self.flow.resume_reading()
        task = asyncio.current_task()
        if task is not None:  # the application's task: when it ends, so does the connection
            task.add_done_callback(lambda _: connection.close())
        return connection


class _LenientHandshake(ServerProtocol):
    """kubectl offers `SPDY/3.1+portforward.k8s.io`, which is not an RFC 6455 token:
    websockets refuses the handshake (400) before the application sees it. The
    application picks the subprotocol from the scope and uvicorn answers it."""

    def process_subprotocol(self, headers: Headers) -> Subprotocol | None:
        return None


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with a lenient subprotocol check; pass it as
    `uvicorn.Config(ws=WebSocketProtocol)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _LenientHandshake(extensions=self.conn.available_extensions,
                                      max_size=self.conn.max_message_size,
                                      logger=self.conn.logger)
