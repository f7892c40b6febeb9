"""How a client reaches the API: over HTTPS, or in-process through the same ASGI app.

Both transports send the same requests through the same authentication,
routing and handlers, so a component behaves identically whether it runs beside
the API server or on another machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx

Query = dict[str, str]
ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]],
                    Callable[[MutableMapping[str, Any]], Awaitable[None]]], Awaitable[None]]


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class Transport(Protocol):
    async def request(self, method: str, path: str, query: Query | None = None,
                      body: bytes | None = None, content_type: str = "") -> RawResponse: ...

    def stream(self, method: str, path: str, query: Query | None = None
               ) -> AsyncIterator[bytes]:
        """Yield the body of a streamed response (watch, logs) line by line."""
        ...

    async def close(self) -> None: ...


class HTTPTransport:
    def __init__(self, server: str, token: str, ca_file: str | None = None,
                 insecure: bool = False) -> None:
        verify: Any = (False if insecure else
                       ssl.create_default_context(cafile=ca_file) if ca_file else True)
        self._client = httpx.AsyncClient(
            base_url=server, verify=verify, http2=False,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json",
                     "User-Agent": "kubi/0.1"},
            timeout=httpx.Timeout(60.0, read=None),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))

    async def request(self, method: str, path: str, query: Query | None = None,
                      body: bytes | None = None, content_type: str = "") -> RawResponse:
        headers = {"Content-Type": content_type} if content_type else {}
        r = await self._client.request(method, path, params=query, content=body,
                                       headers=headers)
        return RawResponse(r.status_code, dict(r.headers), r.content)

    async def stream(self, method: str, path: str, query: Query | None = None
                     ) -> AsyncIterator[bytes]:
        async with self._client.stream(method, path, params=query) as r:
            if r.status_code >= 300:
                yield await r.aread()
                return
            async for line in r.aiter_lines():
                if line:
                    yield line.encode()

    async def close(self) -> None:
        await self._client.aclose()


class InProcessTransport:
    """Calls the API server's ASGI app directly, with a real bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._token = token

    def _scope(self, method: str, path: str, query: Query | None,
               content_type: str) -> dict[str, Any]:
        headers = [(b"authorization", f"Bearer {self._token}".encode()),
                   (b"accept", b"application/json")]
        if content_type:
            headers.append((b"content-type", content_type.encode()))
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                "method": method, "scheme": "https", "path": path, "raw_path": path.encode(),
                "query_string": urlencode(query or {}).encode(), "headers": headers,
                "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0)}

    async def request(self, method: str, path: str, query: Query | None = None,
                      body: bytes | None = None, content_type: str = "") -> RawResponse:
        scope = self._scope(method, path, query, content_type)
        sent = False
        status = 500
        headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()
            sent = True
            return {"type": "http.request", "body": body or b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for k, v in message.get("headers", []):
                    headers[k.decode().lower()] = v.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self._app(scope, receive, send)
        return RawResponse(status, headers, b"".join(chunks))

    async def stream(self, method: str, path: str, query: Query | None = None
                     ) -> AsyncIterator[bytes]:
        scope = self._scope(method, path, query, "")
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        disconnected = asyncio.Event()
        first = True

        async def receive() -> dict[str, Any]:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": b"", "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if chunk:
                    await queue.put(chunk)
                if not message.get("more_body"):
                    await queue.put(None)

        async def run() -> None:
            try:
                await self._app(scope, receive, send)
            finally:
                await queue.put(None)

        task = asyncio.create_task(run())
        buffer = b""
        try:
            while True:
                chunk = await queue.get()
                if chunk is None:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line:
                        yield line
            if buffer.strip():
                yield buffer
        finally:
            disconnected.set()
            # Repeat the cancellation until the app task ends: one can be lost inside the
            # app (Python 3.11's wait_for drops a cancel that races a result).
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
            if not task.cancelled():
                with contextlib.suppress(Exception):
                    task.result()

    async def close(self) -> None:
        return None
