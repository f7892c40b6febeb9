"""The node agent's HTTPS API, as the kubelet's: logs, exec, attach, port-forward, the
read-only endpoints (pods, stats, configz, metrics) and a TCP tunnel into pods.

    GET /healthz                              "ok"
    GET /pods                                 PodList of the pods this agent runs
    GET /runningpods/                         PodList of the pods the runtime has
    GET /stats/summary[?only_cpu_and_memory=true]  Summary (stats.k8s.io/v1alpha1)
    GET /configz                              {"kubeletconfig": {...}}
    GET /metrics, /metrics/resource           Prometheus text
    UPGRADE /portTunnel/{ns}/{pod}/{port}     `Upgrade: tcp`, answered 101 once the
        agent connected to localhost:PORT in the pod's network namespace; then the
        connection carries that TCP stream (what the API server's pod and service
        proxy dial through, as k3s's egress tunnel)
    GET /containerLogs/{ns}/{pod}/{container}?follow&previous&tailLines&sinceSeconds
        &sinceTime&timestamps&limitBytes
    WS  /exec/{ns}/{pod}/{container}?command=…&stdin&stdout&stderr&tty   (channel protocol)
    WS  /attach/{ns}/{pod}/{container}?stdin&stdout&stderr&tty            (channel protocol)
    WS  /portForward/{ns}/{pod}     subprotocol SPDY/3.1+portforward.k8s.io (SPDY tunnelled
        in binary messages), or v4.channel.k8s.io / portforward.k8s.io with ?ports=…
    SPDY the same three paths as a plain SPDY/3.1 upgrade (`Connection: Upgrade`,
        `Upgrade: SPDY/3.1`, X-Stream-Protocol-Version: v4.channel.k8s.io … channel.k8s.io
        for exec/attach, portforward.k8s.io for port-forward), answered 101 once the
        request was checked; the connection is taken over through kubi.util.upgrade
        (serve with `http=UpgradeHttpProtocol`).

Every request but /healthz needs `Authorization: Bearer <token>` with the token the
agent was configured with (the API server's). Errors are plain text, as the kubelet's.

The server does not know the pod workers: a `ContainerResolver` maps (namespace, pod,
container, previous) to a runtime container id and a `SandboxResolver` maps (namespace,
pod) to a sandbox id. `label_resolvers` gives ones that read the CRI labels the
kubelet puts on sandboxes and containers (io.kubernetes.pod.namespace, …pod.name,
…container.name).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import hmac
import logging
import os
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from kubi.kubelet import stats as kstats
from kubi.kubelet.runtime import logs as crilogs
from kubi.kubelet.runtime.interface import (
    ContainerState,
    RuntimeService,
    RuntimeServiceError,
    SandboxState,
    StreamSession,
)
from kubi.kubelet.streaming import (
    channel,
    portforward,
    remotecommand,
    spdy,
    spdy_remotecommand,
)
from kubi.util.aio import cancel_and_wait
from kubi.util.upgrade import (
    UpgradedConnection,
    UpgradeHttpProtocol,
    UpgradeRefused,
    WebSocketProtocol,
    accept_upgrade,
    can_upgrade,
    upgrade_requested,
)

log = logging.getLogger("kubi.kubelet.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

Connector = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
ContainerResolver = Callable[[str, str, str, bool], Awaitable[str | None]]
SandboxResolver = Callable[[str, str], Awaitable[str | None]]
PodSource = Callable[[], Iterable[dict[str, Any]]]

LABEL_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD = "io.kubernetes.pod.name"
LABEL_CONTAINER = "io.kubernetes.container.name"

SPDY_PORTFORWARD = "SPDY/3.1+portforward.k8s.io"
# `SPDY/3.1+portforward.k8s.io` is not an RFC 6455 token, and Python WebSocket clients
# refuse it: the API server offers protocols in this header instead, and the answer
# names the chosen one in STREAM_PROTOCOL_HEADER.
STREAM_PROTOCOLS_HEADER = "x-kubi-stream-protocols"
STREAM_PROTOCOL_HEADER = "x-kubi-stream-protocol"
PORTFORWARD_V1 = "portforward.k8s.io"
PORTFORWARD_CHANNELS = (PORTFORWARD_V1, channel.V4)
SPDY_31 = "SPDY/3.1"
PROTOCOL_VERSION_HEADER = "x-stream-protocol-version"
ACCEPTED_VERSIONS_HEADER = "X-Accepted-Stream-Protocol-Versions"
DEFAULT_PORT = 10250
TUNNEL_UPGRADE = "tcp"
JSON = "application/json"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
# The kubelet's read-only GET endpoints (path -> route kind).
READ_ONLY = {"pods": "pods", "runningpods": "runningpods", "stats/summary": "summary",
             "configz": "configz", "metrics": "metrics", "metrics/resource": "resources"}
LOG_STATE_POLL = 0.2


class HTTPError(Exception):
    def __init__(self, code: int, message: str,
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or []


def label_resolvers(runtime: RuntimeService) -> tuple[ContainerResolver, SandboxResolver]:
    """Resolvers over the runtime's own records, by the kubelet's CRI labels."""

    async def container(namespace: str, pod: str, name: str, previous: bool) -> str | None:
        found = await runtime.list_containers(labels={
            LABEL_NAMESPACE: namespace, LABEL_POD: pod, LABEL_CONTAINER: name})
        found.sort(key=lambda c: (c.attempt, c.created_at), reverse=True)
        if previous:
            older = [c for c in found[1:] if c.state == ContainerState.EXITED]
            return older[0].id if older else None
        return found[0].id if found else None

    async def sandbox(namespace: str, pod: str) -> str | None:
        found = await runtime.list_pod_sandbox(SandboxState.READY, labels={
            LABEL_NAMESPACE: namespace, LABEL_POD: pod})
        if not found:  # sandboxes made without labels still carry the pod's name
            found = [s for s in await runtime.list_pod_sandbox(SandboxState.READY)
                     if s.config.namespace == namespace and s.config.name == pod]
        found.sort(key=lambda s: s.created_at, reverse=True)
        return found[0].id if found else None

    return container, sandbox


def _flag(query: dict[str, list[str]], name: str) -> bool:
    values = query.get(name) or []
    return bool(values) and values[-1].lower() in ("1", "true")


def _int(query: dict[str, list[str]], name: str) -> int | None:
    values = query.get(name) or []
    if not values or values[-1] == "":
        return None
    try:
        return int(values[-1])
    except ValueError:
        raise HTTPError(400, f'invalid value "{values[-1]}" for {name}') from None


def log_options(query: dict[str, list[str]]) -> crilogs.LogOptions:
    """PodLogOptions from the query, validated as upstream."""
    tail = _int(query, "tailLines")
    since_seconds = _int(query, "sinceSeconds")
    limit = _int(query, "limitBytes")
    since_time = (query.get("sinceTime") or [""])[-1]
    if tail is not None and tail < 0:
        raise HTTPError(400, f"tailLines: Invalid value: {tail}: must be greater than or "
                             "equal to 0")
    if limit is not None and limit < 1:
        raise HTTPError(400, f"limitBytes: Invalid value: {limit}: must be greater than 0")
    if since_seconds is not None and since_time:
        raise HTTPError(400, "at most one of `sinceTime` or `sinceSeconds` may be specified")
    since: datetime.datetime | None = None
    if since_seconds is not None:
        if since_seconds < 1:
            raise HTTPError(400, f"sinceSeconds: Invalid value: {since_seconds}: must be "
                                 "greater than 0")
        since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=since_seconds)
    elif since_time:
        try:
            since = datetime.datetime.fromisoformat(since_time.replace("Z", "+00:00"))
        except ValueError:
            raise HTTPError(400, f'invalid sinceTime "{since_time}"') from None
    return crilogs.LogOptions(tail=tail, since=since, timestamps=_flag(query, "timestamps"),
                              follow=_flag(query, "follow"), limit_bytes=limit)


@dataclass
class _Route:
    kind: str  # containerLogs, exec, attach, portForward, portTunnel, healthz, READ_ONLY's
    namespace: str = ""
    pod: str = ""
    container: str = ""
    port: int = 0


def _route(path: str) -> _Route:
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts == ["healthz"]:
        return _Route("healthz")
    if "/".join(parts) in READ_ONLY:
        return _Route(READ_ONLY["/".join(parts)])
    if parts[0] == "portTunnel" and len(parts) == 4:
        if not parts[3].isdigit() or not 0 < int(parts[3]) < 65536:
            raise HTTPError(400, f'invalid port "{parts[3]}"')
        return _Route("portTunnel", parts[1], parts[2], port=int(parts[3]))
    if parts[0] in ("containerLogs", "exec", "attach") and len(parts) in (4, 5):
        # /exec/{ns}/{pod}/{uid}/{container} is the kubelet's form with a pod uid
        return _Route(parts[0], parts[1], parts[2], parts[-1])
    if parts[0] == "portForward" and len(parts) in (3, 4):
        return _Route("portForward", parts[1], parts[2])
    raise HTTPError(404, "404 page not found")


class KubeletServer:
    """The ASGI application. `token`: the one bearer token accepted;
    `stream_creation_timeout`: how long a SPDY exec/attach client may take to open its
    streams; `node_name`: the node's name (stats); `pods`: the Pod objects the agent
    runs (/pods; without it /pods lists what the runtime runs, as /runningpods/);
    `configuration`: the /configz document (configz.kubelet_configuration);
    `pods_cgroup`: the cgroup all pods live under (default: the runtime's
    `cgroup_root`); `root_dir`: the agent's data directory (node file-system stats)."""

    def __init__(self, runtime: RuntimeService, token: str,
                 resolve_container: ContainerResolver | None = None,
                 resolve_sandbox: SandboxResolver | None = None,
                 stream_creation_timeout: float = spdy_remotecommand.STREAM_CREATION_TIMEOUT,
                 *, node_name: str = "", pods: PodSource | None = None,
                 configuration: dict[str, Any] | None = None, pods_cgroup: str | None = None,
                 root_dir: Path | None = None) -> None:
        if not token:
            raise ValueError("the kubelet server needs a token to authenticate callers")
        default_container, default_sandbox = label_resolvers(runtime)
        self.runtime = runtime
        self.token = token
        self.resolve_container = resolve_container or default_container
        self.resolve_sandbox = resolve_sandbox or default_sandbox
        self.stream_creation_timeout = stream_creation_timeout
        self.node_name = node_name or os.uname().nodename
        self.pods = pods
        self.configuration = configuration
        if pods_cgroup is None:
            pods_cgroup = str(getattr(runtime, "cgroup_root", "") or "")
        self.stats = kstats.StatsProvider(runtime, self.node_name, pods_cgroup, root_dir)
        self.closing = asyncio.Event()

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].removeprefix("lifespan.")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", ())}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"),
                         keep_blank_values=True)
        if scope["type"] == "websocket":
            await self._websocket(scope, headers, query, receive, send)
            return
        try:
            route = _route(scope["path"])
            if route.kind == "healthz":
                await _respond(send, 200, b"ok")
                return
            self._authenticate(headers)
            if route.kind == "portTunnel":
                await self._tunnel(scope, route)
                return
            if route.kind in READ_ONLY.values():
                if scope.get("method") not in ("GET", "HEAD"):
                    raise HTTPError(405, "405: Method Not Allowed")
                body, content_type = await self._read_only(route.kind, query)
                await _respond(send, 200, body, content_type)
                return
            if route.kind != "containerLogs":
                await self._spdy(scope, route, query)
                return
            if scope.get("method") != "GET":
                raise HTTPError(405, "405: Method Not Allowed")
            chunks = await self._logs(route, query)
        except HTTPError as err:
            await _respond(send, err.code, err.message.encode(), headers=err.headers)
            return
        await _stream(send, chunks)

    def _authenticate(self, headers: dict[str, str]) -> None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 self.token.encode()):
            raise HTTPError(401, "Unauthorized")

    # -- read-only endpoints ----------------------------------------------------------------

    async def _read_only(self, kind: str, query: dict[str, list[str]]) -> tuple[bytes, str]:
        if kind == "pods":
            items = list(self.pods()) if self.pods is not None else await self._running_pods()
            return _json({"kind": "PodList", "apiVersion": "v1", "metadata": {},
                          "items": items}), JSON
        if kind == "runningpods":
            return _json({"kind": "PodList", "apiVersion": "v1", "metadata": {},
                          "items": await self._running_pods()}), JSON
        if kind == "summary":
            return _json(await self.stats.summary(_flag(query, "only_cpu_and_memory"))), JSON
        if kind == "configz":
            return _json(self.configuration or {"kubeletconfig": {
                "kind": "KubeletConfiguration",
                "apiVersion": "kubelet.config.k8s.io/v1beta1", "enableServer": True}}), JSON
        if kind == "resources":
            return kstats.resource_metrics(await self.stats.summary(True)).encode(), \
                PROMETHEUS_TEXT
        return (await self._metrics()).encode(), PROMETHEUS_TEXT

    async def _running_pods(self) -> list[dict[str, Any]]:
        """Pods as the runtime knows them (the kubelet's /runningpods/): name, namespace,
        uid and the running containers' names and images."""
        pods: list[dict[str, Any]] = []
        for sandbox in await self.runtime.list_pod_sandbox(SandboxState.READY):
            containers = await self.runtime.list_containers(sandbox_id=sandbox.id,
                                                            state=ContainerState.RUNNING)
            pods.append({"metadata": {"name": sandbox.config.name,
                                      "namespace": sandbox.config.namespace,
                                      "uid": sandbox.config.uid, "creationTimestamp": None},
                         "spec": {"containers": [
                             {"name": c.labels.get(LABEL_CONTAINER) or c.name,
                              "image": c.image, "resources": {}}
                             for c in containers if c.state == ContainerState.RUNNING]},
                         "status": {}})
        return pods

    async def _metrics(self) -> str:
        """The few kubelet metrics this agent knows (Prometheus text)."""
        sandboxes = await self.runtime.list_pod_sandbox(SandboxState.READY)
        states: dict[str, int] = {}
        for container in await self.runtime.list_containers():
            state = container.state.value.removeprefix("CONTAINER_").lower()
            states[state] = states.get(state, 0) + 1
        node = self.node_name.replace("\\", "\\\\").replace('"', '\\"')
        lines = ["# HELP kubelet_node_name [ALPHA] The node's name. The count is always 1.",
                 "# TYPE kubelet_node_name gauge", f'kubelet_node_name{{node="{node}"}} 1',
                 "# HELP kubelet_running_containers [ALPHA] Number of containers currently "
                 "running", "# TYPE kubelet_running_containers gauge",
                 *(f'kubelet_running_containers{{container_state="{state}"}} {count}'
                   for state, count in sorted(states.items())),
                 "# HELP kubelet_running_pods [ALPHA] Number of pods that have a running pod "
                 "sandbox", "# TYPE kubelet_running_pods gauge",
                 f"kubelet_running_pods {len(sandboxes)}"]
        return "\n".join(lines) + "\n"

    # -- the tunnel into pods ---------------------------------------------------------------

    async def _tunnel(self, scope: Scope, route: _Route) -> None:
        """A TCP connection to localhost:PORT in the pod, over an upgraded connection."""
        if scope.get("method") != "POST":
            raise HTTPError(405, "405: Method Not Allowed")
        if upgrade_requested(scope) != TUNNEL_UPGRADE:
            raise HTTPError(400, "unable to upgrade: missing upgrade headers in request")
        if not can_upgrade(scope):
            raise HTTPError(400, "unable to upgrade: this server cannot take over "
                                 "connections (serve it with UpgradeHttpProtocol)")
        connect, _ = await self._sandbox(route)
        try:
            reader, writer = await connect(route.port)
        except (RuntimeServiceError, OSError) as err:
            raise HTTPError(502, _dial_error(err)) from None
        try:
            connection = await accept_upgrade(scope, TUNNEL_UPGRADE)
        except UpgradeRefused:
            writer.close()
            return
        await _splice(connection, reader, writer, self.closing)

    # -- logs -------------------------------------------------------------------------------

    async def _logs(self, route: _Route, query: dict[str, list[str]]) -> AsyncIterator[bytes]:
        options = log_options(query)
        previous = _flag(query, "previous")
        container_id = await self.resolve_container(route.namespace, route.pod,
                                                    route.container, previous)
        if container_id is None:
            if previous:
                raise HTTPError(400, f'previous terminated container "{route.container}" in '
                                     f'pod "{route.pod}" not found')
            raise HTTPError(400, f'container "{route.container}" in pod "{route.pod}" is '
                                 "not available")
        try:
            status = await self.runtime.container_status(container_id)
        except RuntimeServiceError as err:
            raise HTTPError(404, str(err)) from None
        if not status.log_path or not Path(status.log_path).exists():
            raise HTTPError(400, f'container "{route.container}" in pod "{route.pod}" has no '
                                 "log file")
        if options.follow and status.state != ContainerState.RUNNING:
            options.follow = False
        return self._read_log(container_id, Path(status.log_path), options)

    async def _read_log(self, container_id: str, path: Path,
                        options: crilogs.LogOptions) -> AsyncIterator[bytes]:
        running = options.follow
        watcher: asyncio.Task[None] | None = None

        async def watch() -> None:
            nonlocal running
            while running and not self.closing.is_set():
                await asyncio.sleep(LOG_STATE_POLL)
                try:
                    state = (await self.runtime.container_status(container_id)).state
                except RuntimeServiceError:
                    state = ContainerState.UNKNOWN
                running = state == ContainerState.RUNNING
            running = False

        if options.follow:
            watcher = asyncio.ensure_future(watch())
        try:
            async for chunk in crilogs.read_log(path, options, lambda: running):
                yield chunk
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    # -- websockets -------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, headers: dict[str, str],
                         query: dict[str, list[str]], receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        native = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")
                  if p.strip()]
        offered = native + [p.strip() for p in headers.get(STREAM_PROTOCOLS_HEADER, "")
                            .split(",") if p.strip()]

        async def accept(protocol: str) -> None:
            await send({"type": "websocket.accept",
                        "subprotocol": protocol if protocol in native else None,
                        "headers": [(STREAM_PROTOCOL_HEADER.encode(), protocol.encode())]})

        try:
            route = _route(scope["path"])
            if route.kind not in ("exec", "attach", "portForward"):
                raise HTTPError(400, f"{route.kind} is not a streaming endpoint")
            self._authenticate(headers)
            if route.kind == "portForward":
                await self._port_forward(route, query, offered, receive, send, accept)
            else:
                await self._remote_command(route, query, offered, receive, send, accept)
        except HTTPError as err:
            await _deny(send, err.code, err.message)

    @staticmethod
    def _command_options(route: _Route, query: dict[str, list[str]]
                         ) -> tuple[remotecommand.StreamOptions, list[str]]:
        options = remotecommand.StreamOptions.from_query(query)
        problem = options.check()
        command = query.get("command") or []
        if route.kind == "exec" and not command:
            problem = problem or "you must specify a command to execute"
        if problem:
            raise HTTPError(400, problem)
        return options, command

    async def _start_session(self, route: _Route, options: remotecommand.StreamOptions,
                             command: list[str]) -> StreamSession:
        container_id = await self.resolve_container(route.namespace, route.pod,
                                                    route.container, False)
        if container_id is None:
            raise HTTPError(404, f'container not found ("{route.container}")')
        try:
            if route.kind == "exec":
                return await self.runtime.exec(container_id, command, tty=options.tty,
                                               stdin=options.stdin)
            return await self.runtime.attach(container_id)
        except RuntimeServiceError as err:
            raise HTTPError(500, f"error {route.kind}ing into container: {err}") from None

    async def _sandbox(self, route: _Route) -> tuple[Connector, str]:
        """How to reach ports in the pod, and its uid (for messages)."""
        sandbox_id = await self.resolve_sandbox(route.namespace, route.pod)
        if sandbox_id is None:
            raise HTTPError(404, f'pod "{route.pod}" not found')
        uid = ""
        with contextlib.suppress(RuntimeServiceError):
            uid = (await self.runtime.pod_sandbox_status(sandbox_id)).config.uid

        async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await self.runtime.port_forward(sandbox_id, port)

        return connect, uid

    async def _remote_command(self, route: _Route, query: dict[str, list[str]],
                              offered: list[str], receive: Receive, send: Send,
                              accept: Callable[[str], Awaitable[None]]) -> None:
        protocol = channel.negotiate(offered)
        if protocol is None:
            raise HTTPError(400, f"unable to negotiate a channel protocol from {offered}; "
                                 f"supported: {', '.join(channel.SUPPORTED)}")
        options, command = self._command_options(route, query)
        session = await self._start_session(route, options, command)
        try:
            await accept(protocol)
            socket = _Socket(receive, send)
            await remotecommand.serve(session, options, protocol, socket.send, socket.receive,
                                      command=command, attach=route.kind == "attach")
            await socket.close()
        finally:
            await _end_session(session, route)

    async def _port_forward(self, route: _Route, query: dict[str, list[str]],
                            offered: list[str], receive: Receive, send: Send,
                            accept: Callable[[str], Awaitable[None]]) -> None:
        connect, uid = await self._sandbox(route)
        socket = _Socket(receive, send)
        if SPDY_PORTFORWARD in offered:
            await accept(SPDY_PORTFORWARD)
            forwarder = portforward.PortForwarder(connect, route.pod, uid)
            session = spdy.SpdySession(socket.send_bytes, portforward.check_stream,
                                       forwarder.handle)
            try:
                await session.run(socket.receive_bytes)
            except spdy.SpdyError as err:
                log.info("port-forward connection broken: %s", err)
            await socket.close()
            return
        protocol = next((p for p in offered if p in PORTFORWARD_CHANNELS), None)
        if protocol is None:
            raise HTTPError(400, f"unable to negotiate a port-forward protocol from {offered}")
        ports: list[int] = []
        for text in ",".join(query.get("ports") or query.get("port") or []).split(","):
            if not text.strip().isdigit() or not 0 < int(text) < 65536:
                raise HTTPError(400, f'invalid port "{text}"')
            ports.append(int(text))
        await accept(protocol)
        await portforward.serve_channels(ports, connect, socket.send_bytes,
                                         socket.receive_bytes_or_none, route.pod, uid)
        await socket.close()

    # -- plain SPDY -------------------------------------------------------------------------

    async def _spdy(self, scope: Scope, route: _Route, query: dict[str, list[str]]) -> None:
        """exec/attach/portForward as a SPDY/3.1 upgrade: every check answers with an
        HTTP error before the 101, then the connection speaks SPDY."""
        if SPDY_31.lower() not in upgrade_requested(scope):
            raise HTTPError(400, "unable to upgrade: missing upgrade headers in request")
        if not can_upgrade(scope):
            raise HTTPError(400, "unable to upgrade: this server cannot take over "
                                 "connections (serve it with UpgradeHttpProtocol)")
        offered = _protocol_versions(scope)
        if route.kind == "portForward":
            connect, uid = await self._sandbox(route)
            _handshake(offered, (PORTFORWARD_V1,))
            connection = await _switch(scope, PORTFORWARD_V1)
            forwarder = portforward.PortForwarder(connect, route.pod, uid)
            session = spdy.SpdySession(connection.write, portforward.check_stream,
                                       forwarder.handle)
            try:
                await session.run(connection.read)
            except spdy.SpdyError as err:
                log.info("port-forward connection broken: %s", err)
            finally:
                connection.close()
            return
        options, command = self._command_options(route, query)
        protocol = _handshake(offered, spdy_remotecommand.SUPPORTED)
        stream_session = await self._start_session(route, options, command)
        try:
            connection = await _switch(scope, protocol)
            await spdy_remotecommand.serve(
                connection, stream_session, options, protocol, command=command,
                attach=route.kind == "attach", creation_timeout=self.stream_creation_timeout)
        finally:
            await _end_session(stream_session, route)


async def _splice(connection: UpgradedConnection, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter, closing: asyncio.Event) -> None:
    """Copy bytes both ways until either side ends (the API server never half-closes:
    its end means the exchange is over)."""

    async def inbound() -> None:
        while data := await connection.read():
            writer.write(data)
            await writer.drain()

    async def outbound() -> None:
        while data := await reader.read(65536):
            await connection.write(data)

    to_pod, from_pod = asyncio.ensure_future(inbound()), asyncio.ensure_future(outbound())
    stop = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait({to_pod, from_pod, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait((to_pod, from_pod, stop))
        connection.close()
        writer.close()


def _dial_error(err: Exception) -> str:
    """A failed connect as Go's dialer words it ("connection refused", …)."""
    number = err.errno if isinstance(err, OSError) else None
    if number is None:
        found = re.search(r"\[Errno (\d+)\]", str(err))
        number = int(found.group(1)) if found else None
    words = {errno.ECONNREFUSED: "connection refused", errno.EHOSTUNREACH: "no route to host",
             errno.ENETUNREACH: "network is unreachable", errno.ETIMEDOUT: "i/o timeout"}
    return words.get(number or 0) or str(err)


def _json(obj: Any) -> bytes:
    return orjson.dumps(obj)


async def _end_session(session: StreamSession, route: _Route) -> None:
    """Stop the session. An exec's stdin pipe is closed too: when the client left
    without closing it, the process's pipes would outlive it. (An attachment's stdin is
    the container's and stays open, as upstream.)"""
    if route.kind == "exec" and not session.tty:
        with contextlib.suppress(Exception):
            await session.close_stdin()
    await session.close()


def _protocol_versions(scope: Scope) -> list[str]:
    """Every X-Stream-Protocol-Version the client sent, in order (repeated headers and
    comma-separated lists alike)."""
    offered: list[str] = []
    for name, value in scope.get("headers", ()):
        if name.decode("latin-1").lower() == PROTOCOL_VERSION_HEADER:
            offered += [p.strip() for p in value.decode("latin-1").split(",") if p.strip()]
    return offered


def _handshake(offered: list[str], supported: tuple[str, ...]) -> str:
    """The client's first protocol we serve, as upstream's httpstream.Handshake."""
    if not offered:
        raise HTTPError(400, "unable to upgrade: X-Stream-Protocol-Version is required")
    chosen = next((p for p in offered if p in supported), None)
    if chosen is None:
        raise HTTPError(403, "unable to upgrade: unable to negotiate protocol: client "
                             f"supports [{' '.join(offered)}], server accepts "
                             f"[{' '.join(supported)}]",
                        headers=[(ACCEPTED_VERSIONS_HEADER, p) for p in supported])
    return chosen


async def _switch(scope: Scope, protocol: str) -> UpgradedConnection:
    try:
        return await accept_upgrade(scope, SPDY_31, [("X-Stream-Protocol-Version", protocol)])
    except UpgradeRefused as err:
        raise HTTPError(400, f"unable to upgrade: {err}") from None


class _Socket:
    """An accepted ASGI WebSocket as send/receive of whole messages."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.closed = False

    async def receive(self) -> bytes | str | None:
        while not self.closed:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                self.closed = True
                return None
            if message["type"] == "websocket.receive":
                if message.get("bytes") is not None:
                    return bytes(message["bytes"])
                return str(message.get("text") or "")
        return None

    async def receive_bytes_or_none(self) -> bytes | None:
        message = await self.receive()
        return message.encode() if isinstance(message, str) else message

    async def receive_bytes(self) -> bytes:
        """The next non-empty message; b"" only at the end (Go writes empty messages)."""
        while True:
            message = await self.receive_bytes_or_none()
            if message is None:
                return b""
            if message:
                return message

    async def send(self, data: bytes | str) -> None:
        if self.closed:
            raise ConnectionError("websocket closed")
        try:
            if isinstance(data, str):
                await self._send({"type": "websocket.send", "text": data})
            else:
                await self._send({"type": "websocket.send", "bytes": data})
        except OSError as err:  # uvicorn: the client is gone
            self.closed = True
            raise ConnectionError(str(err)) from None

    async def send_bytes(self, data: bytes) -> None:
        await self.send(data)

    async def close(self, code: int = 1000) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                await self._send({"type": "websocket.close", "code": code})


async def _respond(send: Send, code: int, body: bytes,
                   content_type: str = "text/plain; charset=utf-8",
                   headers: list[tuple[str, str]] | None = None) -> None:
    await send({"type": "http.response.start", "status": code, "headers": [
        (b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def _deny(send: Send, code: int, message: str) -> None:
    """Refuse a WebSocket handshake with an HTTP answer (ASGI websocket.http.response)."""
    body = message.encode()
    await send({"type": "websocket.http.response.start", "status": code, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode())]})
    await send({"type": "websocket.http.response.body", "body": body})


async def _stream(send: Send, chunks: AsyncIterator[bytes]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/plain"), (b"transfer-encoding", b"chunked")]})
    try:
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    await send({"type": "http.response.body", "body": b""})




# -- serving ----------------------------------------------------------------------------------


def self_signed_certificate(directory: Path, names: list[str]) -> tuple[Path, Path]:
    """A serving certificate for the agent when none is given (the API server does not
    verify kubelet certificates unless told to, as upstream without
    --kubelet-certificate-authority)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = directory / "kubelet.crt", directory / "kubelet.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names
                                            else "kubi-kubelet")])
    alt: list[x509.GeneralName] = []
    for name in names or ["localhost"]:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(key, hashes.SHA256()))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


class RunningServer:
    """A started kubelet server; `stop()` ends it."""

    def __init__(self, server: Any, app: KubeletServer, port: int) -> None:
        self._server = server
        self.app = app
        self.port = port

    async def stop(self) -> None:
        self.app.closing.set()
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await self._server.shutdown()


async def serve(app: KubeletServer, host: str, port: int, certfile: Path,
                keyfile: Path) -> RunningServer:
    """Serve `app` over HTTPS on host:port (port 0: any free port; see .port)."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port: int = sock.getsockname()[1]
    config = uvicorn.Config(app, loop="none", http=UpgradeHttpProtocol, ws=WebSocketProtocol,
                            lifespan="off", log_level="warning", access_log=False,
                            ssl_certfile=str(certfile), ssl_keyfile=str(keyfile),
                            ssl_cert_reqs=ssl.CERT_NONE, ws_ping_interval=None,
                            ws_max_size=16 * 1024 * 1024, date_header=False,
                            timeout_graceful_shutdown=2)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    if server.should_exit:
        sock.close()
        raise OSError(f"cannot serve on {host}:{port}")
    return RunningServer(server, app, bound_port)
