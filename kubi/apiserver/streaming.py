"""Streams the API server relays to the node agent: pod logs, exec, attach, port-forward.

The pod names its node, the node its agent (kubeletclient.py).

Logs are a streamed text/plain answer. exec/attach/portforward arrive as WebSocket
upgrades (v5.channel.k8s.io, SPDY/3.1+portforward.k8s.io): the API server opens a
WebSocket to the agent with the protocols the client offered and relays messages both
ways without looking into them. Or they arrive as plain SPDY/3.1 upgrades (POST with
`Upgrade: SPDY/3.1` and X-Stream-Protocol-Version, kubectl's fallback): after the same
checks the API server makes the same upgrade to the agent and, once the agent answered
101, answers the client 101 with the agent's protocol and copies bytes both ways
unchanged, as upstream's upgrade-aware proxy does. The agent's refusals come back as
Status errors. Taking over the client's connection needs the server to run with
`uvicorn.Config(http=UpgradeHttpProtocol)` (kubi.util.upgrade).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
import orjson

from kubi.api import errors
from kubi.apiserver.http import (
    Receive,
    Request,
    Response,
    Scope,
    Send,
    StreamResponse,
)
from kubi.apiserver.kubeletclient import (
    CONNECT_TIMEOUT,
    insecure_context,
    kubelet_error,
    kubelet_token,
    node_url,
)
from kubi.apiserver.tokens import ANONYMOUS
from kubi.util import upgrade
from kubi.util.aio import cancel_and_wait

if TYPE_CHECKING:
    from kubi.apiserver.app import APIServer, Target

log = logging.getLogger("kubi.apiserver.streaming")

Obj = dict[str, Any]

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
    base = await node_url(server, pod)
    url = (f"{base}/containerLogs/{quote(target.namespace)}/{quote(target.name)}/"
           f"{quote(container)}")
    client = httpx.AsyncClient(verify=insecure_context(), timeout=httpx.Timeout(
        CONNECT_TIMEOUT, read=None))
    try:
        upstream = await client.send(client.build_request(
            "GET", url, params=query,
            headers={"Authorization": f"Bearer {kubelet_token(server)}"}), stream=True)
    except httpx.HTTPError as exc:
        await client.aclose()
        raise errors.internal(f"Get \"{url}\": {exc}") from None
    if upstream.status_code != 200:
        body = await upstream.aread()
        await upstream.aclose()
        await client.aclose()
        raise kubelet_error(upstream.status_code, body.decode(errors="replace"))

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
                                 "connections (serve it with UpgradeHttpProtocol)")
    pod = await server.store(target.info).get(target.namespace, target.name)
    offered = [value.decode("latin-1") for name, value in request.scope.get("headers", ())
               if name.decode("latin-1").lower() == PROTOCOL_VERSION_HEADER]
    reader, writer, headers = await _dial_agent(await node_url(server, pod), path, offered,
                                                kubelet_token(server))
    return _SpdyRelay(request.scope, reader, writer, headers, server.closing)


class AgentRefused(Exception):
    """The agent answered an upgrade request with something else than 101."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


async def dial_upgrade(base: str, path: str, protocol: str, headers: list[str], token: str
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                   list[tuple[str, str]]]:
    """Make an upgrade request (`Upgrade: protocol`) to the agent; return the upgraded
    connection and the agent's 101 headers. Raises AgentRefused with the agent's
    answer, or a StatusError when the agent cannot be reached."""
    url = urlsplit(base)
    secure = url.scheme == "https"
    host = url.hostname or "127.0.0.1"
    port = url.port or (443 if secure else 80)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            host, port, ssl=insecure_context() if secure else None,
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
    raise AgentRefused(status, body.decode(errors="replace").strip())


async def _dial_agent(base: str, path: str, offered: list[str], token: str
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                 list[tuple[str, str]]]:
    """Make the SPDY upgrade request to the agent; return the upgraded connection and
    the agent's 101 headers, or raise the agent's refusal as a StatusError."""
    try:
        return await dial_upgrade(base, path, SPDY_31,
                                   [f"X-Stream-Protocol-Version: {v}" for v in offered], token)
    except AgentRefused as refused:
        if refused.status == 403 and "unable to negotiate protocol" in refused.text:
            raise errors.StatusError(403, "Forbidden", refused.text) from None
        raise kubelet_error(refused.status, refused.text) from None


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
        url = (await node_url(server, pod)).replace("https://", "wss://", 1).replace(
            "http://", "ws://", 1) + path
        try:
            upstream = await connect(
                url, ssl=insecure_context() if url.startswith("wss:") else None,
                additional_headers={"Authorization": f"Bearer {kubelet_token(server)}",
                                    STREAM_PROTOCOLS_HEADER: ", ".join(offered)},
                max_size=None, ping_interval=None, compression=None,
                open_timeout=CONNECT_TIMEOUT)
        except InvalidStatus as exc:
            raise kubelet_error(exc.response.status_code,
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

