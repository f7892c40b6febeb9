"""Container probes (liveness, readiness, startup) and lifecycle handlers.

exec runs through the runtime's exec_sync; httpGet and tcpSocket connect to the pod's IP
from the node's network namespace (the pod sits on the node's bridge). Semantics as
upstream's pkg/kubelet/prober: nothing before initialDelaySeconds, then one probe every
periodSeconds with timeoutSeconds each; successThreshold consecutive successes make the
result Success, failureThreshold consecutive failures make it Failure. Readiness starts
as Failure, liveness as Success; liveness and readiness wait for the startup probe. A
liveness or startup Failure asks the pod worker to restart the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubi.kubelet.runtime.interface import RuntimeService, RuntimeServiceError
from kubi.kubelet.runtime.network import connect_in_netns

log = logging.getLogger("kubi.kubelet.probes")

Obj = dict[str, Any]

LIVENESS = "liveness"
READINESS = "readiness"
STARTUP = "startup"
USER_AGENT = "kube-probe/1.32"
MAX_OUTPUT = 10 * 1024  # upstream keeps at most 10 KiB of a probe's output


@dataclass
class Outcome:
    success: bool
    message: str = ""


def resolve_port(port: Any, container: Obj) -> int:
    """An int port, or a named one looked up in the container's ports."""
    if isinstance(port, int):
        return port
    text = str(port)
    if text.isdigit():
        return int(text)
    for declared in container.get("ports") or []:
        if declared.get("name") == text:
            return int(declared["containerPort"])
    raise ValueError(f"port {text!r} is not a named port of the container")


async def http_get(action: Obj, container: Obj, pod_ip: str, netns: str | None,
                   timeout: float) -> Outcome:
    host = str(action.get("host") or pod_ip)
    try:
        port = resolve_port(action.get("port"), container)
    except ValueError as err:
        return Outcome(False, str(err))
    path = str(action.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    scheme = str(action.get("scheme") or "HTTP").lower()
    url = f"{scheme}://{host}:{port}{path}"
    headers = {"Host": f"{host}:{port}", "User-Agent": USER_AGENT, "Accept": "*/*",
               "Connection": "close"}
    for header in action.get("httpHeaders") or []:
        headers[str(header.get("name"))] = str(header.get("value") or "")
    request = f"GET {path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await connect_in_netns(netns, port, host)
            try:
                if scheme == "https":
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    await writer.start_tls(context)
                writer.write(request.encode())
                await writer.drain()
                status_line = await reader.readline()
                body = await reader.read(MAX_OUTPUT)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    except TimeoutError:
        return Outcome(False, f'Get "{url}": context deadline exceeded (Client.Timeout '
                              "exceeded while awaiting headers)")
    except (RuntimeServiceError, OSError) as err:
        return Outcome(False, f'Get "{url}": {err}')
    parts = status_line.decode(errors="replace").split()
    if len(parts) < 2 or not parts[1].isdigit():
        return Outcome(False, f'Get "{url}": malformed HTTP response')
    code = int(parts[1])
    if 200 <= code < 400:
        return Outcome(True, body.decode(errors="replace"))
    return Outcome(False, f"HTTP probe failed with statuscode: {code}")


async def tcp_socket(action: Obj, container: Obj, pod_ip: str, netns: str | None,
                     timeout: float) -> Outcome:
    host = str(action.get("host") or pod_ip)
    try:
        port = resolve_port(action.get("port"), container)
    except ValueError as err:
        return Outcome(False, str(err))
    try:
        async with asyncio.timeout(timeout):
            _, writer = await connect_in_netns(netns, port, host)
    except TimeoutError:
        return Outcome(False, f"dial tcp {host}:{port}: i/o timeout")
    except (RuntimeServiceError, OSError) as err:
        return Outcome(False, f"dial tcp {host}:{port}: {err}")
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return Outcome(True)


async def exec_command(runtime: RuntimeService, container_id: str, command: list[str],
                       timeout: float) -> Outcome:
    try:
        result = await runtime.exec_sync(container_id, command, timeout)
    except TimeoutError:
        return Outcome(False, f"command {command!r} timed out")
    except RuntimeServiceError as err:
        return Outcome(False, str(err))
    output = (result.stdout + result.stderr)[:MAX_OUTPUT].decode(errors="replace")
    return Outcome(result.exit_code == 0, output)


async def run_action(runtime: RuntimeService, action: Obj, container: Obj, container_id: str,
                     pod_ip: str, netns: str | None, timeout: float) -> Outcome:
    """One probe or handler: exec, httpGet, tcpSocket (grpc is not supported here)."""
    if action.get("exec") is not None:
        return await exec_command(runtime, container_id,
                                  [str(c) for c in action["exec"].get("command") or []],
                                  timeout)
    if action.get("httpGet") is not None:
        return await http_get(action["httpGet"], container, pod_ip, netns, timeout)
    if action.get("tcpSocket") is not None:
        return await tcp_socket(action["tcpSocket"], container, pod_ip, netns, timeout)
    if action.get("sleep") is not None:
        await asyncio.sleep(min(float(action["sleep"].get("seconds") or 0), timeout))
        return Outcome(True)
    return Outcome(False, "unknown probe or handler type")


@dataclass
class ProbeState:
    """The current results of one container's probes."""

    ready: bool = False
    started: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


Changed = Callable[[], None]
Failed = Callable[[str, str, str, str], Awaitable[None]]  # container name, id, kind, message
Event = Callable[[str, str, str], Awaitable[None]]  # type, reason, message


class ProbeManager:
    """Probe workers of one pod's containers, keyed by container id."""

    def __init__(self, runtime: RuntimeService, netns: str | None, on_change: Changed,
                 on_failure: Failed, event: Event) -> None:
        self.runtime = runtime
        self.netns = netns
        self.on_change = on_change
        self.on_failure = on_failure
        self.event = event
        self.states: dict[str, ProbeState] = {}

    def ready(self, container_id: str) -> bool:
        state = self.states.get(container_id)
        return bool(state and state.ready)

    def started(self, container_id: str) -> bool:
        state = self.states.get(container_id)
        return bool(state and state.started)

    def ensure(self, container: Obj, container_id: str, pod_ip: str,
               started_monotonic: float) -> None:
        """Start the probe workers of a running container, once."""
        if container_id in self.states:
            return
        state = ProbeState(ready=container.get("readinessProbe") is None,
                           started=container.get("startupProbe") is None)
        self.states[container_id] = state
        for kind in (STARTUP, LIVENESS, READINESS):
            probe = container.get(f"{kind}Probe")
            if probe is not None:
                state.tasks.append(asyncio.create_task(
                    self._work(kind, probe, container, container_id, pod_ip,
                               started_monotonic), name=f"probe-{kind}-{container_id[:12]}"))

    def stop(self, container_id: str) -> None:
        state = self.states.pop(container_id, None)
        if state is not None:
            for task in state.tasks:
                task.cancel()

    def stop_all(self) -> None:
        for container_id in list(self.states):
            self.stop(container_id)

    def retain(self, container_ids: set[str]) -> None:
        for container_id in list(self.states):
            if container_id not in container_ids:
                self.stop(container_id)

    async def _work(self, kind: str, probe: Obj, container: Obj, container_id: str,
                    pod_ip: str, started_monotonic: float) -> None:
        loop = asyncio.get_running_loop()
        state = self.states[container_id]
        period = max(1, int(probe.get("periodSeconds") or 10))
        timeout = max(1, int(probe.get("timeoutSeconds") or 1))
        success_threshold = max(1, int(probe.get("successThreshold") or 1))
        failure_threshold = max(1, int(probe.get("failureThreshold") or 3))
        delay = started_monotonic + int(probe.get("initialDelaySeconds") or 0) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        successes = failures = 0
        name = str(container.get("name"))
        label = kind.capitalize()
        while True:
            if kind != STARTUP and not state.started:
                await asyncio.sleep(min(period, 1))
                continue
            try:
                outcome = await run_action(self.runtime, probe, container, container_id,
                                           pod_ip, self.netns, timeout)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a probe that cannot run counts as failed
                outcome = Outcome(False, str(err))
            if outcome.success:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
                await self.event("Warning", "Unhealthy",
                                 f"{label} probe failed: {outcome.message}")
            if kind == READINESS:
                if successes >= success_threshold and not state.ready:
                    state.ready = True
                    self.on_change()
                elif failures >= failure_threshold and state.ready:
                    state.ready = False
                    self.on_change()
            elif kind == STARTUP:
                if successes >= 1:
                    state.started = True
                    self.on_change()
                    return  # a startup probe stops once it succeeded
                if failures >= failure_threshold:
                    await self.on_failure(name, container_id, kind, outcome.message)
                    return
            elif failures >= failure_threshold:
                await self.on_failure(name, container_id, kind, outcome.message)
                return
            await asyncio.sleep(period)
