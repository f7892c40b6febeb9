"""Streams the API server relays to the node agent: pod logs, exec, attach, port-forward.

The pod names its node; the node names its agent's endpoint: the annotation
`kubi.dev/kubelet-url` the agent writes (e.g. https://127.0.0.1:10250) or, as upstream,
status.addresses (InternalIP, then Hostname, then ExternalIP) with
status.daemonEndpoints.kubeletEndpoint.Port. The agent's certificate is not verified
(upstream's default without --kubelet-certificate-authority); the API server
authenticates to it with its own token (`APIServer.kubelet_token` when set, else the
admin token the agents are given).

Logs are a streamed text/plain answer. exec/attach/portforward arrive as WebSocket
upgrades (v5.channel.k8s.io, SPDY/3.1+portforward.k8s.io): the API server opens a
WebSocket to the agent with the protocols the client offered and relays messages both
ways without looking into them. Or they arrive as plain SPDY/3.1 upgrades (POST with
`Upgrade: SPDY/3.1` and X-Stream-Protocol-Version, kubectl's fallback): after the same
checks the API server makes the same upgrade to the agent and, once the agent answered
101, answers the client 101 with the agent's protocol and copies bytes both ways
unchanged, as upstream's upgrade-aware proxy does. The agent's refusals come back as
Status errors. Taking over the client's connection needs the server to run with
`uvicorn.Config(http=HttpProtocol)` (kubi.util.upgrade).
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
from urllib.parse import quote, urlencode, urlsplit

import httpcore
import httpx
import orjson
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from kubi.api import errors
from kubi.api import meta as m
from kubi.apiserver.http import (
    Receive,
    Request,
    Response,
    Scope,
    Send,
    StreamResponse,
)
from kubi.apiserver.tokens import ANONYMOUS
from kubi.util import upgrade
from kubi.util.aio import cancel_and_wait
from kubi.util.upgrade import UpgradeHttpProtocol

if TYPE_CHECKING:
    from kubi.apiserver.app import APIServer, Target

log = logging.getLogger("kubi.apiserver.proxy")

Obj = dict[str, Any]

KUBELET_URL_ANNOTATION = m.KUBELET_URL_ANNOTATION
DEFAULT_KUBELET_PORT = 10250
CONNECT_TIMEOUT = 10.0
UPGRADE_SUBRESOURCES = ("exec", "attach", "portforward")
# The agent hop carries the client's subprotocols in a header of ours: Python WebSocket
# clients refuse `SPDY/3.1+portforward.k8s.io` (not an RFC 6455 token) as a subprotocol.
STREAM_PROTOCOLS_HEADER = "X-Kubi-Stream-Protocols"
STREAM_PROTOCOL_HEADER = "X-Kubi-Stream-Protocol"
SPDY_31 = "SPDY/3.1"
PROTOCOL_VERSION_HEADER = "x-stream-protocol-version"
# Bounds on the agent's answer to an upgrade that it refused.
MAX_AGENT_HEAD = 64 * 1024
MAX_AGENT_BODY = 64 * 1024
# The agent's answer headers not passed on to the client with the 101.
_HOP_HEADERS = ("connection", "upgrade", "content-length", "transfer-encoding", "date",
                "server", "keep-alive")

# The HTTP protocol class the API server is served with: uvicorn's, able to hand a SPDY
# upgrade's connection to the application.
HttpProtocol = UpgradeHttpProtocol


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


# -- where ------------------------------------------------------------------------------------


def kubelet_url(node: Obj) -> str:
    """Base URL of a node's agent API."""
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    if annotations.get(KUBELET_URL_ANNOTATION):
        return str(annotations[KUBELET_URL_ANNOTATION]).rstrip("/")
    status = node.get("status") or {}
    addresses = status.get("addresses") or []
    port = (((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {})
            .get("Port") or DEFAULT_KUBELET_PORT)
    for kind in ("InternalIP", "Hostname", "ExternalIP"):
        for address in addresses:
            if address.get("type") == kind and address.get("address"):
                host = str(address["address"])
                return f"https://{f'[{host}]' if ':' in host else host}:{port}"
    raise errors.internal(f"Internal error occurred: no preferred addresses found; known "
                          f"addresses: {addresses}")


def _kubelet_token(server: APIServer) -> str:
    return getattr(server, "kubelet_token", None) or server.tokens.admin_token


def _insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _container_names(pod: Obj) -> list[str]:
    spec = pod.get("spec") or {}
    return [c.get("name", "") for key in ("initContainers", "containers", "ephemeralContainers")
            for c in spec.get(key) or []]


def validate_container(pod: Obj, container: str) -> str:
    """The container a request means, as upstream's validateContainer."""
    name = pod["metadata"]["name"]
    containers = (pod.get("spec") or {}).get("containers") or []
    if not container:
        if len(containers) == 1:
            return str(containers[0].get("name", ""))
        if not containers:
            raise errors.bad_request(f"a container name must be specified for pod {name}")
        raise errors.bad_request(f"a container name must be specified for pod {name}, "
                                 f"choose one of: [{' '.join(_container_names(pod))}]")
    if container not in _container_names(pod):
        raise errors.bad_request(f"container {container} is not valid for pod {name}")
    return container


def _container_status(pod: Obj, container: str) -> Obj | None:
    status = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for entry in status.get(key) or []:
            if entry.get("name") == container:
                return dict(entry)
    return None


async def _node_url(server: APIServer, pod: Obj) -> str:
    node_name = str((pod.get("spec") or {}).get("nodeName") or "")
    node = await server.store_for("", "nodes").get("", node_name)
    return kubelet_url(node)


def _kubelet_error(code: int, text: str) -> errors.StatusError:
    """The agent's plain-text error as the Status upstream's proxy makes of it."""
    text = text.strip()
    if code == 400:
        return errors.bad_request(text)
    if code == 404:
        return errors.StatusError(404, "NotFound", text)
    if code in (401, 403):
        return errors.internal(f"Internal error occurred: the node agent refused the API "
                               f"server ({code}): {text}")
    return errors.StatusError(code if code >= 500 else 500, "InternalError",
                              f'an error on the server ("{text}") has prevented the request '
                              "from succeeding")


# -- logs -------------------------------------------------------------------------------------


def _log_query(request: Request, name: str) -> dict[str, str]:
    causes: list[errors.Cause] = []
    query: dict[str, str] = {}
    for flag in ("follow", "previous", "timestamps"):
        if request.flag(flag):
            query[flag] = "true"
    tail, since, limit = (request.int_param("tailLines"), request.int_param("sinceSeconds"),
                          request.int_param("limitBytes"))
    since_time = request.param("sinceTime")
    if tail is not None:
        if tail < 0:
            causes.append(errors.invalid("tailLines", tail, "must be greater than or equal to 0"))
        query["tailLines"] = str(tail)
    if limit is not None:
        if limit < 1:
            causes.append(errors.invalid("limitBytes", limit, "must be greater than 0"))
        query["limitBytes"] = str(limit)
    if since is not None and since_time:
        causes.append(errors.forbidden("", "at most one of `sinceTime` or `sinceSeconds` "
                                           "may be specified"))
    elif since is not None:
        if since < 1:
            causes.append(errors.invalid("sinceSeconds", since, "must be greater than 0"))
        query["sinceSeconds"] = str(since)
    elif since_time:
        query["sinceTime"] = since_time
    if causes:
        raise errors.invalid_object("", "PodLogOptions", name, causes)
    return query


async def stream_logs(server: APIServer, request: Request,
                      target: Target) -> Response | StreamResponse:
    pod = await server.store(target.info).get(target.namespace, target.name)
    container = validate_container(pod, request.param("container"))
    query = _log_query(request, target.name)
    if not (pod.get("spec") or {}).get("nodeName"):
        return Response(200, b"", "text/plain")  # upstream: no location, nothing to read
    status = _container_status(pod, container)
    if status and not query.get("previous"):
        waiting = (status.get("state") or {}).get("waiting")
        if waiting is not None and not (status.get("lastState") or {}).get("terminated"):
            reason = waiting.get("reason") or "ContainerCreating"
            if reason == "ErrImagePull":
                reason = "image can't be pulled"
            elif reason == "ImagePullBackOff":
                reason = "trying and failing to pull image"
            raise errors.bad_request(f'container "{container}" in pod "{target.name}" is '
                                     f"waiting to start: {reason}")
    base = await _node_url(server, pod)
    url = (f"{base}/containerLogs/{quote(target.namespace)}/{quote(target.name)}/"
           f"{quote(container)}")
    client = httpx.AsyncClient(verify=_insecure_context(), timeout=httpx.Timeout(
        CONNECT_TIMEOUT, read=None))
    try:
        upstream = await client.send(client.build_request(
            "GET", url, params=query,
            headers={"Authorization": f"Bearer {_kubelet_token(server)}"}), stream=True)
    except httpx.HTTPError as exc:
        await client.aclose()
        raise errors.internal(f"Get \"{url}\": {exc}") from None
    if upstream.status_code != 200:
        body = await upstream.aread()
        await upstream.aclose()
        await client.aclose()
        raise _kubelet_error(upstream.status_code, body.decode(errors="replace"))

    async def chunks() -> AsyncIterator[bytes]:
        source = upstream.aiter_raw()
        closing = asyncio.ensure_future(server.closing.wait())
        try:
            while True:
                step = asyncio.ensure_future(anext(source))
                done, _ = await asyncio.wait({step, closing},
                                             return_when=asyncio.FIRST_COMPLETED)
                if step not in done:
                    step.cancel()
                    return
                try:
                    yield step.result()
                except (StopAsyncIteration, httpx.HTTPError):
                    return
        finally:
            closing.cancel()
            with contextlib.suppress(Exception):
                await upstream.aclose()
            await client.aclose()

    return StreamResponse(200, chunks(), "text/plain")


# -- exec, attach, port-forward ----------------------------------------------------------------


async def _upgrade_target(server: APIServer, target: Target, request: Request) -> str:
    """Check a streaming request as upstream does and return the agent URL path + query."""
    if target.info.kind != "Pod" or target.subresource not in UPGRADE_SUBRESOURCES:
        raise errors.StatusError(503, "ServiceUnavailable",
                                 f"kubi does not proxy {target.info.plural}/"
                                 f"{target.subresource} yet")
    pod = await server.store(target.info).get(target.namespace, target.name)
    ns, name = quote(target.namespace), quote(target.name)
    if target.subresource == "portforward":
        if not (pod.get("spec") or {}).get("nodeName"):
            raise errors.bad_request(f"pod {target.name} does not have a host assigned")
        ports = request.query.get("ports") or []
        return f"/portForward/{ns}/{name}" + (f"?{urlencode({'port': ','.join(ports)})}"
                                               if ports else "")
    container = validate_container(pod, request.param("container"))
    if not (pod.get("spec") or {}).get("nodeName"):
        raise errors.bad_request(f"pod {target.name} does not have a host assigned")
    params: list[tuple[str, str]] = [(flag, "1") for flag in ("stdin", "stdout", "stderr", "tty")
                                     if request.flag(flag)]
    if target.subresource == "exec":
        params += [("command", c) for c in request.query.get("command") or []]
    path = f"/{target.subresource}/{ns}/{name}/{quote(container)}"
    return f"{path}?{urlencode(params)}" if params else path


async def plain_upgrade(server: APIServer, request: Request, target: Target) -> Response:
    """exec/attach/portforward without a WebSocket: a SPDY/3.1 upgrade relayed to the
    node agent (see the module docstring); anything else is answered 400."""
    path = await _upgrade_target(server, target, request)
    if SPDY_31.lower() not in upgrade.upgrade_requested(request.scope):
        raise errors.bad_request("Upgrade request required")
    if not upgrade.can_upgrade(request.scope):
        raise errors.bad_request("Upgrade request required: this server cannot take over "
                                 "connections (it must be served with proxy.HttpProtocol)")
    pod = await server.store(target.info).get(target.namespace, target.name)
    offered = [value.decode("latin-1") for name, value in request.scope.get("headers", ())
               if name.decode("latin-1").lower() == PROTOCOL_VERSION_HEADER]
    reader, writer, headers = await _dial_agent(await _node_url(server, pod), path, offered,
                                                _kubelet_token(server))
    return _SpdyRelay(request.scope, reader, writer, headers, server.closing)


class _AgentRefused(Exception):
    """The agent answered an upgrade request with something else than 101."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


async def _dial_upgrade(base: str, path: str, protocol: str, headers: list[str], token: str
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                   list[tuple[str, str]]]:
    """Make an upgrade request (`Upgrade: protocol`) to the agent; return the upgraded
    connection and the agent's 101 headers. Raises _AgentRefused with the agent's
    answer, or a StatusError when the agent cannot be reached."""
    url = urlsplit(base)
    secure = url.scheme == "https"
    host = url.hostname or "127.0.0.1"
    port = url.port or (443 if secure else 80)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            host, port, ssl=_insecure_context() if secure else None,
            server_hostname=host if secure else None), CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise errors.internal(f"error dialing backend: {exc}") from None
    lines = [f"POST {path} HTTP/1.1", f"Host: {url.netloc}", f"Authorization: Bearer {token}",
             "Connection: Upgrade", f"Upgrade: {protocol}", "Content-Length: 0", *headers]
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT)
        status, answer = _parse_head(head)
        if status == 101:
            return reader, writer, answer
        length = next((v for k, v in answer if k.lower() == "content-length"), "")
        body = await asyncio.wait_for(
            reader.readexactly(min(int(length), MAX_AGENT_BODY)) if length.isdigit()
            else reader.read(MAX_AGENT_BODY), CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError,
            asyncio.LimitOverrunError) as exc:
        writer.close()
        raise errors.internal(f"error upgrading connection to the node agent: "
                              f"{exc or type(exc).__name__}") from None
    writer.close()
    raise _AgentRefused(status, body.decode(errors="replace").strip())


async def _dial_agent(base: str, path: str, offered: list[str], token: str
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                 list[tuple[str, str]]]:
    """Make the SPDY upgrade request to the agent; return the upgraded connection and
    the agent's 101 headers, or raise the agent's refusal as a StatusError."""
    try:
        return await _dial_upgrade(base, path, SPDY_31,
                                   [f"X-Stream-Protocol-Version: {v}" for v in offered], token)
    except _AgentRefused as refused:
        if refused.status == 403 and "unable to negotiate protocol" in refused.text:
            raise errors.StatusError(403, "Forbidden", refused.text) from None
        raise _kubelet_error(refused.status, refused.text) from None


def _parse_head(head: bytes) -> tuple[int, list[tuple[str, str]]]:
    if len(head) > MAX_AGENT_HEAD:
        raise ValueError("the node agent's answer head is too long")
    status_line, *rest = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"malformed answer from the node agent: {status_line!r}")
    headers: list[tuple[str, str]] = []
    for line in rest:
        name, colon, value = line.partition(":")
        if colon:
            headers.append((name.strip(), value.strip()))
    return int(parts[1]), headers


class _SpdyRelay(Response):
    """The answer to a SPDY upgrade the agent accepted: 101, then bytes both ways."""

    def __init__(self, scope: Scope, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, agent_headers: list[tuple[str, str]],
                 closing: asyncio.Event) -> None:
        super().__init__(101, b"")
        self.scope = scope
        self.reader = reader
        self.writer = writer
        self.agent_headers = [(k, v) for k, v in agent_headers if k.lower() not in _HOP_HEADERS]
        self.closing = closing

    async def send(self, send: Send) -> None:
        try:
            client = await upgrade.accept_upgrade(self.scope, SPDY_31, self.agent_headers)
        except upgrade.UpgradeRefused:
            self.writer.close()  # the client is gone
            return
        writer = self.writer

        async def to_agent() -> None:
            while data := await client.read():
                writer.write(data)
                await writer.drain()

        async def to_client() -> None:
            while data := await self.reader.read(65536):
                await client.write(data)

        tasks = [asyncio.ensure_future(to_agent()), asyncio.ensure_future(to_client()),
                 asyncio.ensure_future(self.closing.wait())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(tasks)
            client.close()  # after what was relayed to it has gone out
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), CONNECT_TIMEOUT)


async def _deny(send: Send, err: errors.StatusError) -> None:
    body = orjson.dumps(err.to_status())
    await send({"type": "websocket.http.response.start", "status": err.code, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "websocket.http.response.body", "body": body})


async def relay_websocket(server: APIServer, scope: Scope, receive: Receive,
                          send: Send) -> None:
    """Accept the client's WebSocket only once the agent accepted ours, then relay."""
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

    message = await receive()
    if message["type"] != "websocket.connect":
        return
    request = Request.from_scope(scope, receive)
    offered = [p.strip() for p in request.headers.get("sec-websocket-protocol", "").split(",")
               if p.strip()]
    upstream: ClientConnection | None = None
    try:
        user = server.authenticate(request)
        if user is ANONYMOUS:
            raise errors.forbidden_request(
                f'forbidden: User "system:anonymous" cannot get path "{request.path}"')
        request.user, request.groups = user.name, user.groups
        parts = request.path.strip("/").split("/")
        if len(parts) < 3 or parts[0] not in ("api", "apis"):
            raise errors.StatusError(404, "NotFound",
                                     "the server could not find the requested resource")
        group, version, rest = (("", parts[1], parts[2:]) if parts[0] == "api"
                                else (parts[1], parts[2], parts[3:]))
        target = server._target(group, version, rest)
        if not target.subresource:
            raise errors.bad_request(f"{target.info.plural} do not stream over WebSocket")
        path = await _upgrade_target(server, target, request)
        pod = await server.store(target.info).get(target.namespace, target.name)
        url = (await _node_url(server, pod)).replace("https://", "wss://", 1).replace(
            "http://", "ws://", 1) + path
        try:
            upstream = await connect(
                url, ssl=_insecure_context() if url.startswith("wss:") else None,
                additional_headers={"Authorization": f"Bearer {_kubelet_token(server)}",
                                    STREAM_PROTOCOLS_HEADER: ", ".join(offered)},
                max_size=None, ping_interval=None, compression=None,
                open_timeout=CONNECT_TIMEOUT)
        except InvalidStatus as exc:
            raise _kubelet_error(exc.response.status_code,
                                 exc.response.body.decode(errors="replace")
                                 if exc.response.body else "") from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise errors.internal(f"error dialing backend: {exc}") from None
    except errors.StatusError as err:
        await _deny(send, err)
        return
    except Exception as exc:  # an unexpected bug still answers, as the HTTP path does
        log.exception("websocket %s failed", request.path)
        await _deny(send, errors.internal(f"Internal error occurred: {exc}"))
        return

    chosen = (upstream.response.headers.get(STREAM_PROTOCOL_HEADER) if upstream.response
              else None)
    await send({"type": "websocket.accept", "subprotocol": chosen or None})
    close_code = 1000

    async def client_to_agent() -> None:
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                return
            if event["type"] == "websocket.receive":
                data = event.get("bytes")
                await upstream.send(data if data is not None else event.get("text") or "")

    async def agent_to_client() -> None:
        nonlocal close_code
        try:
            async for data in upstream:
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})
        except ConnectionClosed:
            pass
        close_code = upstream.close_code or 1000

    tasks = [asyncio.ensure_future(client_to_agent()), asyncio.ensure_future(agent_to_client()),
             asyncio.ensure_future(server.closing.wait())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if tasks[0] not in done:  # the agent (or the server) ended it: tell the client
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close",
                            "code": close_code if close_code in (1000, 1001, 1011) else 1000})
    except (ConnectionClosed, OSError):
        pass
    finally:
        await cancel_and_wait(tasks)
        with contextlib.suppress(Exception):
            await upstream.close()


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
        base = await _node_url(server, pod)
        path = f"/portTunnel/{quote(meta.get('namespace', ''))}/{quote(meta['name'])}/{port}"
        try:
            reader, writer, _ = await _dial_upgrade(base, path, TUNNEL_UPGRADE, [],
                                                    _kubelet_token(server))
        except _AgentRefused as refused:
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
            ("authorization", f"Bearer {_kubelet_token(server)}")])
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
    pool = httpcore.AsyncConnectionPool(ssl_context=_insecure_context(), max_connections=1,
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
