"""The `proxy` subresources: nodes/NAME/proxy/…, pods/NAME[:PORT]/proxy/…,
services/NAME[:PORT]/proxy/…, relayed as upstream's API server relays them.

Node requests go to the node's agent. Pod and Service requests reach `localhost:PORT`
inside the pod's network namespace through a tunnel its node's agent opens (the API
server may not be able to route to pod IPs, as with k3s's egress selector).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpcore

from kubi.api import errors
from kubi.apiserver.http import (
    Request,
    Response,
    Scope,
    Send,
)
from kubi.apiserver.kubeletclient import (
    CONNECT_TIMEOUT,
    insecure_context,
    kubelet_token,
    kubelet_url,
    node_url,
)
from kubi.apiserver.streaming import AgentRefused, dial_upgrade

if TYPE_CHECKING:
    from kubi.apiserver.app import APIServer

log = logging.getLogger("kubi.apiserver.proxy")

Obj = dict[str, Any]


# -- proxy: nodes/NAME/proxy, pods/NAME/proxy, services/NAME/proxy ----------------------------

PROXY_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
PROXY_KINDS = ("pods", "services", "nodes")
TUNNEL_UPGRADE = "tcp"  # the agent's /portTunnel upgrade (kubi.kubelet.server)
_VALID_SCHEMES = ("", "http", "https")
# Headers of one hop only (RFC 9110 7.6.1), never passed on by the proxy.
_PROXY_HOP_HEADERS = frozenset((
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"))
# Upstream's proxy drops these from backends' answers (corsRemovingTransport).
_CORS_HEADERS = frozenset((
    "access-control-allow-credentials", "access-control-allow-headers",
    "access-control-allow-methods", "access-control-allow-origin"))
_UNREACHABLE = "error trying to reach service"

Dial = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def proxy_parts(group: str, parts: list[str]) -> bool:
    """Whether a resource path (after /api/v1) names a proxy subresource, which takes
    any path after it: [namespaces, NS, pods|services, NAME, proxy, ...] or
    [nodes, NAME, proxy, ...]."""
    if group:
        return False
    if len(parts) >= 5 and parts[0] == "namespaces" and parts[2] in ("pods", "services"):
        return parts[4] == "proxy"
    return len(parts) >= 3 and parts[0] == "nodes" and parts[2] == "proxy"


def split_scheme_name_port(name: str) -> tuple[str, str, str] | None:
    """`name`, `name:port` or `scheme:name:port` (scheme http or https), as upstream's
    SplitSchemeNamePort; None when invalid."""
    parts = name.split(":")
    if len(parts) == 1:
        scheme, bare, port = "", parts[0], ""
    elif len(parts) == 2:
        scheme, bare, port = "", parts[0], parts[1]
    elif len(parts) == 3:
        scheme, bare, port = parts
    else:
        return None
    if not bare or scheme not in _VALID_SCHEMES:
        return None
    return scheme, bare, port


@dataclass
class _Location:
    """Where a proxied request goes: scheme://host:port, reached by `dial` (a tunnel
    through the pod's node agent) or directly; `headers` are added (the agent's token)."""

    scheme: str
    host: str
    port: int
    dial: Dial | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _numeric_port(text: str, scheme: str) -> int:
    """A port as Go's dialer reads it: a number or a service name (/etc/services)."""
    if not text:
        return 443 if scheme == "https" else 80
    if text.isdigit():
        return int(text)
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        raise errors.StatusError(503, "ServiceUnavailable",
                                 f"{_UNREACHABLE}: dial tcp: lookup tcp/{text}: unknown "
                                 "port") from None


def _pod_ip(pod: Obj) -> str:
    ips = (pod.get("status") or {}).get("podIPs") or []
    return str(ips[0].get("ip") or "") if ips else ""


def _tunnel(server: APIServer, pod: Obj, port: int, ip: str) -> Dial:
    """A dialer of localhost:PORT in the pod's network namespace, through its node's
    agent (the API server may not reach pod IPs: they live on the node)."""
    meta = pod["metadata"]

    async def dial() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        base = await node_url(server, pod)
        path = f"/portTunnel/{quote(meta.get('namespace', ''))}/{quote(meta['name'])}/{port}"
        try:
            reader, writer, _ = await dial_upgrade(base, path, TUNNEL_UPGRADE, [],
                                                    kubelet_token(server))
        except AgentRefused as refused:
            if refused.status == 502:
                reason = refused.text
                raise errors.StatusError(503, "ServiceUnavailable",
                                         f"{_UNREACHABLE}: dial tcp {_join(ip, port)}: "
                                         f"connect: {reason}") from None
            raise errors.StatusError(503, "ServiceUnavailable",
                                     f"{_UNREACHABLE}: error dialing backend: "
                                     f"{refused.text or refused.status}") from None
        except errors.StatusError as err:
            raise errors.StatusError(503, "ServiceUnavailable",
                                     f"{_UNREACHABLE}: {err.message}") from None
        return reader, writer

    return dial


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _pod_location(server: APIServer, namespace: str, ident: str) -> _Location:
    split = split_scheme_name_port(ident)
    if split is None:
        raise errors.bad_request(f'invalid pod request "{ident}"')
    scheme, name, port_text = split
    pod = await server.store_for("", "pods").get(namespace, name)
    if not port_text:
        port_text = next((str(c["ports"][0].get("containerPort")) for c in
                          (pod.get("spec") or {}).get("containers") or []
                          if c.get("ports")), "")
    ip = _pod_ip(pod)
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        address = None
    # Go's IsGlobalUnicast: private ranges are fine, these are not
    if address is None or address.is_loopback or address.is_link_local or \
            address.is_multicast or address.is_unspecified or \
            address == ipaddress.ip_address("255.255.255.255"):
        raise errors.bad_request("address not allowed")
    if not (pod.get("spec") or {}).get("nodeName"):
        raise errors.bad_request(f"pod {name} does not have a host assigned")
    scheme = scheme or "http"
    port = _numeric_port(port_text, scheme)
    return _Location(scheme, ip, port, _tunnel(server, pod, port, ip))


async def _service_location(server: APIServer, namespace: str, ident: str) -> _Location:
    split = split_scheme_name_port(ident)
    if split is None:
        raise errors.bad_request(f'invalid service request "{ident}"')
    scheme, name, port_name = split
    if port_name.isdigit() or (port_name.startswith("-") and port_name[1:].isdigit()):
        service = await server.store_for("", "services").get(namespace, name)
        number = int(port_name)
        declared = next((p for p in (service.get("spec") or {}).get("ports") or []
                         if p.get("port") == number), None)
        if declared is None:
            raise errors.StatusError(503, "ServiceUnavailable",
                                     f'no service port {number} found for service "{name}"')
        port_name = str(declared.get("name") or "")
    endpoints = await server.store_for("", "endpoints").get(namespace, name)
    subsets = endpoints.get("subsets") or []
    if not subsets:
        raise errors.StatusError(503, "ServiceUnavailable",
                                 f'no endpoints available for service "{name}"')
    pods = server.store_for("", "pods")
    start = random.randrange(len(subsets))
    for subset in subsets[start:] + subsets[:start]:
        addresses = subset.get("addresses") or []
        if not addresses:
            continue
        for port in subset.get("ports") or []:
            if str(port.get("name") or "") != port_name:
                continue
            first = random.randrange(len(addresses))
            for address in addresses[first:] + addresses[:first]:
                pod = await _endpoint_pod(pods, namespace, address)
                if pod is None:
                    continue
                number = int(port.get("port") or 0)
                ip = str(address["ip"])
                return _Location(scheme or "http", ip, number,
                                 _tunnel(server, pod, number, ip))
    raise errors.StatusError(503, "ServiceUnavailable",
                             f'no endpoints available for service "{ident}"')


async def _endpoint_pod(pods: Any, namespace: str, address: Obj) -> Obj | None:
    """The pod behind an endpoint address, when it still has that IP (upstream's
    isValidAddress); None otherwise."""
    ref = address.get("targetRef") or {}
    if ref.get("kind", "Pod") != "Pod" or not ref.get("name") or \
            ref.get("namespace", namespace) != namespace:
        return None
    try:
        pod: Obj = await pods.get(namespace, ref["name"])
    except errors.StatusError:
        return None
    ips = [entry.get("ip") for entry in (pod.get("status") or {}).get("podIPs") or []]
    return pod if address.get("ip") in ips else None


async def _node_location(server: APIServer, ident: str) -> _Location:
    split = split_scheme_name_port(ident)
    if split is None:
        raise errors.bad_request(f'invalid node request "{ident}"')
    scheme, name, port_text = split
    node = await server.store_for("", "nodes").get("", name)
    base = urlsplit(kubelet_url(node))
    host = base.hostname or ""
    kubelet_port = base.port or (443 if base.scheme == "https" else 80)
    if not port_text or port_text == str(kubelet_port):
        return _Location(base.scheme, host, kubelet_port, headers=[
            ("authorization", f"Bearer {kubelet_token(server)}")])
    scheme = scheme or "http"
    return _Location(scheme, host, _numeric_port(port_text, scheme))


def _proxy_path(scope: Scope, group_depth: int, resource_depth: int) -> tuple[str, str]:
    """(the proxy's own prefix, the path after it) from the undecoded request path:
    `.../proxy` -> "", `.../proxy/` -> "/", `.../proxy/a/b` -> "/a/b"."""
    raw = scope.get("raw_path")
    text = raw.decode("latin-1") if isinstance(raw, bytes) else quote(scope["path"])
    text = text.split("?", 1)[0]
    segments = text.split("/")
    cut = 1 + group_depth + resource_depth
    prefix = "/".join(segments[:cut])
    rest = segments[cut:]
    return prefix, ("/" + "/".join(rest)) if rest else ""


async def serve_proxy(server: APIServer, request: Request, parts: list[str]) -> Response:
    """Relay a request to what a proxy subresource names (see proxy_parts), as
    upstream's proxy handlers: method, headers (the caller's credentials removed),
    body and query go out; status, headers and body come back, streamed."""
    if request.method not in PROXY_METHODS:
        raise errors.method_not_allowed()
    if parts[0] == "namespaces":
        namespace, kind, ident, depth = parts[1], parts[2], parts[3], 5
    else:
        namespace, kind, ident, depth = "", parts[0], parts[1], 3
    prefix, path = _proxy_path(request.scope, 2, depth)
    if kind == "pods":
        location = await _pod_location(server, namespace, ident)
    elif kind == "services":
        location = await _service_location(server, namespace, ident)
    else:
        location = await _node_location(server, ident)
    query = request.scope.get("query_string", b"").decode("latin-1")
    if not path:  # upstream redirects the proxy's root to end with a slash
        return Response(301, b"", "text/plain", [
            ("location", f"{prefix}/" + (f"?{query}" if query else ""))])
    return await _relay(server, request, location, prefix, path, query)


def _request_headers(request: Request, location: _Location) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = [(b"host", location.netloc.encode("latin-1"))]
    forwarded = ""
    for key, value in request.scope.get("headers", ()):
        name = key.decode("latin-1").lower()
        if name in _PROXY_HOP_HEADERS or name in ("host", "authorization"):
            continue
        if name == "x-forwarded-for":
            forwarded = value.decode("latin-1")
            continue
        out.append((key, value))
    client = (request.scope.get("client") or ("", 0))[0]
    if client:
        out.append((b"x-forwarded-for",
                    (f"{forwarded}, {client}" if forwarded else client).encode("latin-1")))
    if "chunked" in request.headers.get("transfer-encoding", "").lower():
        out.append((b"transfer-encoding", b"chunked"))
    out += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in location.headers]
    return out


async def _request_body(request: Request) -> AsyncIterator[bytes]:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body"):
            return


class _TunnelStream(httpcore.AsyncNetworkStream):
    """An already dialled connection (the agent's tunnel) as httpcore's stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return await asyncio.wait_for(self.reader.read(max_bytes), timeout)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            self.writer.write(buffer)
            await asyncio.wait_for(self.writer.drain(), timeout)
        except (OSError, TimeoutError) as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), CONNECT_TIMEOUT)

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        try:
            await asyncio.wait_for(self.writer.start_tls(
                ssl_context, server_hostname=server_hostname), timeout)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return self.reader.at_eof()
        return self.writer.get_extra_info(info)


class _TunnelBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network for one request: the tunnel dialled beforehand."""

    def __init__(self, stream: _TunnelStream) -> None:
        self.stream: _TunnelStream | None = stream

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        stream, self.stream = self.stream, None
        if stream is None:
            raise httpcore.ConnectError("the tunnel was used already")
        return stream

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("no unix sockets through the tunnel")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _relay(server: APIServer, request: Request, location: _Location, prefix: str,
                 path: str, query: str) -> Response:
    backend: httpcore.AsyncNetworkBackend | None = None
    if location.dial is not None:
        backend = _TunnelBackend(_TunnelStream(*await location.dial()))
    pool = httpcore.AsyncConnectionPool(ssl_context=insecure_context(), max_connections=1,
                                        retries=0, network_backend=backend)
    target = path + (f"?{query}" if query else "")
    has_body = request.headers.get("content-length", "0") not in ("", "0") or \
        "chunked" in request.headers.get("transfer-encoding", "").lower()
    outgoing = httpcore.Request(
        request.method,
        httpcore.URL(scheme=location.scheme.encode(), host=location.host.encode("idna"),
                     port=location.port, target=target.encode("latin-1")),
        headers=_request_headers(request, location),
        content=_request_body(request) if has_body else None,
        extensions={"timeout": {"connect": CONNECT_TIMEOUT, "pool": CONNECT_TIMEOUT,
                                "read": None, "write": None}})
    try:
        answer = await pool.handle_async_request(outgoing)
    except httpcore.ConnectError as exc:
        await pool.aclose()
        text = str(exc)
        if "refused" in text.lower():
            text = f"dial tcp {_join(location.host, location.port)}: connect: connection refused"
        raise errors.StatusError(503, "ServiceUnavailable", f"{_UNREACHABLE}: {text}") from None
    except (httpcore.ProtocolError, httpcore.NetworkError, httpcore.TimeoutException,
            OSError) as exc:
        await pool.aclose()
        raise errors.StatusError(503, "ServiceUnavailable",
                                 f"{_UNREACHABLE}: {exc or type(exc).__name__}") from None
    headers = _answer_headers(answer.headers, location, prefix)
    return _ProxiedResponse(answer, pool, headers, server.closing)


def _answer_headers(raw: list[tuple[bytes, bytes]], location: _Location,
                    prefix: str) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for key, value in raw:
        name = key.decode("latin-1").lower()
        if name in _PROXY_HOP_HEADERS or name in _CORS_HEADERS:
            continue
        if name == "location":
            value = _rewrite_location(value.decode("latin-1"), location, prefix).encode(
                "latin-1")
        out.append((key, value))
    return out


def _rewrite_location(value: str, location: _Location, prefix: str) -> str:
    """A redirect to the backend itself stays behind the proxy (upstream's proxy
    transport rewrites such Locations the same way)."""
    target = urlsplit(value)
    same_host = not target.netloc or (target.hostname == location.host and (
        target.port or (443 if target.scheme == "https" else 80)) == location.port)
    if not same_host or not target.path.startswith("/"):
        return value
    return prefix + target.path + (f"?{target.query}" if target.query else "") + \
        (f"#{target.fragment}" if target.fragment else "")


class _ProxiedResponse(Response):
    """The backend's answer, streamed to the client as it comes."""

    def __init__(self, answer: httpcore.Response, pool: httpcore.AsyncConnectionPool,
                 raw_headers: list[tuple[bytes, bytes]], closing: asyncio.Event) -> None:
        super().__init__(answer.status, b"")
        self.answer = answer
        self.pool = pool
        self.raw_headers = raw_headers
        self.closing = closing

    async def send(self, send: Send) -> None:
        headers = self.raw_headers + [(k.encode("latin-1"), v.encode("latin-1", "replace"))
                                      for k, v in self.headers]
        closing = asyncio.ensure_future(self.closing.wait())
        try:
            await send({"type": "http.response.start", "status": self.status,
                        "headers": headers})
            stream = self.answer.stream
            assert isinstance(stream, AsyncIterable)
            source = aiter(stream)
            while True:
                step = asyncio.ensure_future(anext(source))
                done, _ = await asyncio.wait({step, closing},
                                             return_when=asyncio.FIRST_COMPLETED)
                if step not in done:
                    step.cancel()
                    with contextlib.suppress(BaseException):
                        await step
                    break
                try:
                    chunk = step.result()
                except StopAsyncIteration:
                    break
                except (httpcore.ProtocolError, httpcore.NetworkError,
                        httpcore.TimeoutException) as exc:
                    log.info("proxied answer ended early: %s", exc)
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            closing.cancel()
            with contextlib.suppress(Exception):
                await self.answer.aclose()
            with contextlib.suppress(Exception):
                await self.pool.aclose()
