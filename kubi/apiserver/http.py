"""A thin request/response layer over ASGI, shaped by what the API needs.

Bodies are read whole (they are bounded at 3 MiB as upstream); responses are
JSON (or YAML) objects, or streams for watch and logs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson
import yaml

from kubi.api import errors

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 3 * 1024 * 1024

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"


@dataclass
class Request:
    scope: Scope
    receive: Receive
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    user: str = ""
    groups: tuple[str, ...] = ()

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> Request:
        headers: dict[str, str] = {}
        for key, value in scope.get("headers", ()):
            name = key.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[name] = f"{headers[name]},{text}" if name in headers else text
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"),
                         keep_blank_values=True)
        return cls(scope, receive, scope.get("method", "GET"), unquote(scope["path"]), query,
                   headers)

    def param(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        return self.param(name).lower() in ("true", "1")

    def int_param(self, name: str) -> int | None:
        value = self.param(name)
        if value == "":
            return None
        try:
            return int(value)
        except ValueError as exc:
            raise errors.bad_request(f'invalid value "{value}" for {name}') from exc

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def accept(self) -> str:
        return self.headers.get("accept", "")

    async def body(self) -> bytes:
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            raise errors.too_large()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise errors.too_large()
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return b"".join(chunks)


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)

    async def send(self, send: Send) -> None:
        raw = [(b"content-type", self.content_type.encode()),
               (b"content-length", str(len(self.body)).encode()),
               (b"cache-control", b"no-cache, private")]
        raw += [(k.encode(), v.encode("latin-1", "replace")) for k, v in self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


@dataclass
class StreamResponse:
    status: int
    chunks: AsyncIterator[bytes]
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)

    async def send(self, send: Send) -> None:
        raw = [(b"content-type", self.content_type.encode()),
               (b"cache-control", b"no-cache, private"),
               (b"transfer-encoding", b"chunked")]
        raw += [(k.encode(), v.encode("latin-1", "replace")) for k, v in self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        try:
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        await send({"type": "http.response.body", "body": b""})


def wants_yaml(accept: str) -> bool:
    return "application/yaml" in accept and JSON not in accept.split(",")[0]


def check_acceptable(accept: str) -> None:
    if not accept:
        return
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in ("*/*", "application/*", JSON, YAML, PROTOBUF,
                     "application/json-patch+json", "application/merge-patch+json",
                     "application/strategic-merge-patch+json"):
            return
    raise errors.not_acceptable(accept)


def object_response(obj: Any, status: int = 200, accept: str = "",
                    warnings: list[str] | None = None) -> Response:
    headers = [("warning", f'299 - "{_escape(w)}"') for w in warnings or []]
    if wants_yaml(accept):
        return Response(status, yaml.safe_dump(obj, sort_keys=False).encode(), YAML, headers)
    return Response(status, orjson.dumps(obj), JSON, headers)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def status_response(err: errors.StatusError, accept: str = "") -> Response:
    headers: list[tuple[str, str]] = []
    if err.retry_after is not None:
        headers.append(("retry-after", str(err.retry_after)))
    return Response(err.code, orjson.dumps(err.to_status()), JSON, headers)


def decode_body(body: bytes, content_type: str) -> Any:
    """Decode a JSON or YAML request body (protobuf is decoded by kubi.api.protobuf)."""
    if content_type in (YAML, "application/apply-patch+yaml", "text/yaml"):
        try:
            return yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise errors.bad_request(f"error converting YAML to JSON: {exc}") from exc
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_request(
            f"couldn't get version/kind; json parse error: {exc}") from exc
