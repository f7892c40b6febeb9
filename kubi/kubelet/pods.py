"""Pod workers: each pod bound to the node is synced by its own task, as upstream's
pod_workers + kuberuntime_manager do.

One sync: volumes, the sandbox, images (Pulling/Pulled/Failed, ErrImagePull then
ImagePullBackOff), init containers in order, then containers, restarts per
restartPolicy with CrashLoopBackOff back-off, probes, and the pod status written as a
kubelet writes it (status.py). A deleted pod is stopped gracefully (preStop, SIGTERM,
grace period, SIGKILL), everything of it removed, then the object deleted with grace 0
and a uid precondition. All state lives in the runtime (labels carry the pod uid and
container name, the attempt is the restart count), so a new agent adopts what an earlier
one started.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import heapq
import itertools
import logging
import math
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.client.events import NORMAL, WARNING, EventRecorder
from kubi.client.rest import Client
from kubi.kubelet import status as st
from kubi.kubelet.images import ImageError, ImageNotFoundError, ImageStore
from kubi.kubelet.probes import ProbeManager, run_action
from kubi.kubelet.runtime.interface import (
    ContainerConfig,
    ContainerState,
    ContainerStatus,
    DNSConfig,
    NotFoundError,
    PodSandboxConfig,
    PodSandboxStatus,
    PortMapping,
    Resources,
    RuntimeService,
    RuntimeServiceError,
    SandboxState,
    Security,
)
from kubi.kubelet.volumes import (
    PodVolumes,
    VolumeError,
    VolumeManager,
    container_mounts,
    field_ref_value,
    in_thread,
    parse_quantity,
    resource_field_value,
)

log = logging.getLogger("kubi.kubelet.pods")

Obj = dict[str, Any]

LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
ANN_RESTART_COUNT = "io.kubernetes.container.restartCount"
ANN_IMAGE_ID = "kubi.dev/image-id"
ANN_ROOTFS_DIR = "kubi.dev/container-dir"
ANN_INIT = "kubi.dev/init-container"
DEFAULT_GRACE_SECONDS = 30
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
CREATE_CONFIG_ERROR = "CreateContainerConfigError"
CREATE_ERROR = "CreateContainerError"


# -- back-off --------------------------------------------------------------------------


class Backoff:
    """Upstream's flowcontrol.Backoff as the kubelet uses it: the first restart is at
    once, each later one waits the current delay (doubling up to `cap`) counted from the
    last failure."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap
        self.delays: dict[str, float] = {}

    def remaining(self, key: str, since: float) -> float:
        """Seconds still to wait for `key`, given the failure happened at wall time `since`."""
        delay = self.delays.get(key)
        if delay is None:
            return 0.0
        return max(0.0, since + delay - time.time())

    def current(self, key: str) -> float:
        return self.delays.get(key, 0.0)

    def next(self, key: str) -> None:
        delay = self.delays.get(key)
        self.delays[key] = self.base if delay is None else min(delay * 2, self.cap)

    def reset(self, key: str) -> None:
        self.delays.pop(key, None)


# -- start slots -----------------------------------------------------------------------


class StartSlots:
    """At most `size` pods at a time in the runtime's costly calls (sandbox creation,
    container creation and start), the pod that came first served first. Started all at
    once, a burst of pods would all be Running late, and the event loop they share with
    the API server would be crowded meanwhile."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("StartSlots needs at least one slot")
        self.free = size
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        """Hold a slot; a lower `priority` is served first."""
        if self.free > 0 and not self._waiting:
            self.free -= 1
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, next(self._order), future))
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release()  # handed over just as we were cancelled
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            future = heapq.heappop(self._waiting)[2]
            if not future.done():
                future.set_result(None)
                return
        self.free += 1


_worker_order = itertools.count()


# -- environment -----------------------------------------------------------------------


class ConfigError(Exception):
    """A container's configuration cannot be built (CreateContainerConfigError)."""


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Upstream's $(VAR) expansion: $(NAME) becomes its value when defined, $$ escapes a
    dollar, anything else stays as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "$" and i + 1 < len(text):
            following = text[i + 1]
            if following == "$":
                out.append("$")
                i += 2
                continue
            if following == "(":
                end = text.find(")", i + 2)
                if end == -1:
                    out.append(text[i:])
                    break
                name = text[i + 2:end]
                value = lookup(name) if name else None
                out.append(value if value is not None else text[i:end + 1])
                i = end + 1
                continue
        out.append(char)
        i += 1
    return "".join(out)


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def service_env(services: list[Obj]) -> list[tuple[str, str]]:
    """`<SVC>_SERVICE_HOST` and the Docker-link variables of each service with a cluster IP."""
    env: list[tuple[str, str]] = []
    for service in sorted(services, key=m.name_of):
        spec = service.get("spec") or {}
        ip = spec.get("clusterIP")
        ports = spec.get("ports") or []
        if not ip or ip == "None" or not ports:
            continue
        name = _env_name(m.name_of(service))
        env.append((f"{name}_SERVICE_HOST", ip))
        env.append((f"{name}_SERVICE_PORT", str(ports[0].get("port"))))
        for port in ports:
            if port.get("name"):
                env.append((f"{name}_SERVICE_PORT_{_env_name(port['name'])}",
                            str(port.get("port"))))
        first = ports[0]
        env.append((f"{name}_PORT", f"{str(first.get('protocol') or 'TCP').lower()}://"
                                    f"{ip}:{first.get('port')}"))
        for port in ports:
            protocol = str(port.get("protocol") or "TCP")
            prefix = f"{name}_PORT_{port.get('port')}_{protocol.upper()}"
            env += [(prefix, f"{protocol.lower()}://{ip}:{port.get('port')}"),
                    (f"{prefix}_PROTO", protocol.lower()),
                    (f"{prefix}_PORT", str(port.get("port"))),
                    (f"{prefix}_ADDR", ip)]
    return env


# -- DNS -------------------------------------------------------------------------------


def dns_config(pod: Obj, cluster_dns: list[str], cluster_domain: str) -> DNSConfig:
    """The pod's resolv.conf as upstream's dns configurer builds it."""
    spec = pod.get("spec") or {}
    namespace = str(pod["metadata"].get("namespace") or "default")
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"
    config = DNSConfig()
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and cluster_dns:
        config.servers = list(cluster_dns)
        config.searches = [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}",
                           cluster_domain]
        config.options = ["ndots:5"]
    custom = spec.get("dnsConfig") or {}
    if policy == "None" or custom:
        config.servers += [str(s) for s in custom.get("nameservers") or []]
        config.searches += [str(s) for s in custom.get("searches") or []
                            if s not in config.searches]
        options = {o.split(":", 1)[0]: o for o in config.options}
        for option in custom.get("options") or []:
            name = str(option.get("name"))
            options[name] = f"{name}:{option['value']}" if option.get("value") else name
        config.options = list(options.values())
    return config


# -- the shared context ------------------------------------------------------------------


@dataclass
class PodContext:
    """What every pod worker of one agent shares."""

    client: Client
    runtime: RuntimeService
    images: ImageStore
    volumes: VolumeManager
    recorder: EventRecorder
    node_name: str
    node_ip: str
    containers_dir: Path  # per-container rootfs directories
    logs_dir: Path  # CRI logs: <ns>_<name>_<uid>/<container>/<attempt>.log
    cluster_dns: list[str] = field(default_factory=list)
    cluster_domain: str = "cluster.local"
    node_netns: str | None = None  # where probes connect from (None: this process's)
    crash_backoff: Backoff = field(default_factory=lambda: Backoff(10.0, 300.0))
    image_backoff: Backoff = field(default_factory=lambda: Backoff(10.0, 300.0))
    backoff_reset_seconds: float = 600.0
    sync_period: float = 10.0
    services: Callable[[str], list[Obj]] = lambda namespace: []
    allocatable: Callable[[], dict[str, str]] = dict
    rootfs_method: str = "auto"
    # Uids of the pods that may have sandboxes: those found when the agent started plus
    # those a worker made since. A new pod's worker then need not scan every sandbox of
    # the node for its own. None: unknown, always scan.
    sandbox_uids: set[str] | None = None
    start_slots: StartSlots | None = None  # None: no limit


def pod_labels(pod: Obj) -> dict[str, str]:
    meta = pod["metadata"]
    return {LABEL_POD_UID: str(meta["uid"]), LABEL_POD_NAME: str(meta.get("name")),
            LABEL_POD_NAMESPACE: str(meta.get("namespace") or "")}


def _seconds_stamp(cri_time: str) -> str | None:
    """CRI nanosecond time -> the API's RFC 3339 seconds."""
    return cri_time[:19] + "Z" if cri_time else None


def _epoch(cri_time: str) -> float:
    parsed = st.parse_time(_seconds_stamp(cri_time))
    return parsed.timestamp() if parsed else time.time()


def _should_restart(policy: str, status: ContainerStatus) -> bool:
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return status.exit_code != 0
    return False


async def remove_container(ctx: PodContext, container: ContainerStatus) -> None:
    """Remove a container and release its root filesystem."""
    await ctx.runtime.remove_container(container.id)
    directory = container.annotations.get(ANN_ROOTFS_DIR)
    if directory:
        await in_thread(ctx.images.release_rootfs, directory)
        shutil.rmtree(directory, ignore_errors=True)


async def remove_pod_resources(ctx: PodContext, uid: str) -> None:
    """Everything of a pod on this node: containers, sandboxes, volumes, directories."""
    for container in await ctx.runtime.list_containers(labels={LABEL_POD_UID: uid}):
        await remove_container(ctx, container)
    for sandbox in await ctx.runtime.list_pod_sandbox(labels={LABEL_POD_UID: uid}):
        await ctx.runtime.remove_pod_sandbox(sandbox.id)
    await in_thread(ctx.volumes.teardown, uid)
    shutil.rmtree(ctx.containers_dir / uid, ignore_errors=True)


# -- the worker ------------------------------------------------------------------------


class PodWorker:
    """Syncs one pod until it is gone."""

    def __init__(self, ctx: PodContext, pod: Obj) -> None:
        self.ctx = ctx
        self.pod = pod
        self.uid = str(pod["metadata"]["uid"])
        self.removed = False  # gone from the API server
        self.finished = False
        self._wake = asyncio.Event()
        self._waiting: dict[str, tuple[str, str]] = {}  # container -> (reason, message)
        self._written: Obj | None = None
        self._terminal_done = False
        self._deleted_sent = False
        self._pull_failed_at: dict[str, float] = {}
        self._pull_errors: dict[str, str] = {}
        # The sandbox in use and its containers' ids, so a sync reads only this pod's
        # records instead of scanning every sandbox and container of the node. Only this
        # worker creates or removes them while it runs; None: not known, scan.
        self._sandbox_id: str | None = None
        self._container_ids: set[str] | None = None
        self.probes = ProbeManager(ctx.runtime, ctx.node_netns, self.wake,
                                   self._probe_failed, self._event_on_pod)
        self.task: asyncio.Task[None] | None = None
        self.order = next(_worker_order)  # earlier pods get start slots first
        self._events: asyncio.Task[None] | None = None  # the last event queued

    # -- plumbing ------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"pod-{self.uid[:8]}")

    def wake(self) -> None:
        self._wake.set()

    def update(self, pod: Obj) -> None:
        """A newer version of the pod; only changes beyond its status (ours) wake the
        worker, as the kubelet's config source ignores status-only updates."""
        changed = _desired(pod) != _desired(self.pod)
        self.pod = pod
        if changed:
            self.wake()

    def remove(self) -> None:
        self.removed = True
        self.wake()

    async def stop(self) -> None:
        self.finished = True  # also ends the loop should a cancel get lost
        self.probes.stop_all()
        for task in (self.task, self._events):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def run(self) -> None:
        failures = 0
        try:
            while not self.finished:
                self._wake.clear()
                try:
                    delay = await self.sync()
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    failures += 1
                    log.warning("pod %s/%s: sync failed: %s", self.namespace, self.name, err,
                                exc_info=not isinstance(err, StatusError | VolumeError))
                    delay = min(0.5 * 2 ** failures, 10.0)
                if self.finished:
                    break
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if delay is None else max(delay, 0.05)):
                        await self._wake.wait()
        finally:
            self.probes.stop_all()

    @property
    def name(self) -> str:
        return str(self.pod["metadata"].get("name"))

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"].get("namespace") or "")

    async def _event_on_pod(self, event_type: str, reason: str, message: str) -> None:
        """Queue an event about the pod. As upstream's recorder, this does not wait for
        the API server: events go out in order, while the worker gets on with its work,
        and all of them before the pod's next status write (`_flush_events`)."""
        previous, pod = self._events, self.pod

        async def send() -> None:
            if previous is not None:
                await previous
            await self.ctx.recorder.event(pod, event_type, reason, message)

        self._events = asyncio.create_task(send(), name=f"pod-{self.uid[:8]}-event")

    async def _flush_events(self) -> None:
        if self._events is not None:
            await self._events

    async def _probe_failed(self, name: str, container_id: str, kind: str,
                            message: str) -> None:
        spec = self._spec(name)
        await self._event_on_pod(NORMAL, "Killing",
                                 f"Container {name} failed {kind} probe, will be restarted")
        with contextlib.suppress(RuntimeServiceError):
            await self._kill(spec or {"name": name}, container_id, self._grace_period(),
                             announce=False)
        self.probes.stop(container_id)
        self.wake()
        del message

    @contextlib.asynccontextmanager
    async def _start_slot(self) -> AsyncIterator[None]:
        slots = self.ctx.start_slots
        if slots is None:
            yield
            return
        async with slots.slot(self.order):
            yield

    def _spec(self, name: str) -> Obj | None:
        spec = self.pod.get("spec") or {}
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            if container.get("name") == name:
                return dict(container)
        return None

    def _grace_period(self) -> int:
        meta = self.pod["metadata"]
        if meta.get("deletionGracePeriodSeconds") is not None:
            return int(meta["deletionGracePeriodSeconds"])
        value = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        return DEFAULT_GRACE_SECONDS if value is None else int(value)

    # -- sync ------------------------------------------------------------------------------

    async def sync(self) -> float | None:
        if self.removed:
            await self._terminate(grace=0, api=False)
            return None
        if self.pod["metadata"].get("deletionTimestamp"):
            await self._terminate(grace=self._grace_period(), api=True)
            return None
        if (self.pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            await self._finish_terminal()
            return None
        try:
            volumes = await self.ctx.volumes.setup(self.pod)
        except VolumeError as err:
            await self._event_on_pod(WARNING, "FailedMount", str(err))
            await self._write_status(await self._status(None, [], volumes_ready=False))
            return 2.0
        sandbox = await self._ensure_sandbox()
        if sandbox is None:
            return 2.0
        containers = await self._containers(sandbox.id)
        wake = await self._sync_containers(sandbox, containers, volumes)
        containers = await self._containers(sandbox.id)
        # Probes of containers started by this sync begin now, so a container without a
        # readiness probe is reported Ready in the same status that says it runs.
        self._ensure_probes(sandbox, containers)
        status = await self._status(sandbox, containers)
        await self._write_status(status)
        if status["phase"] in ("Succeeded", "Failed"):
            await self._finish_terminal()
            return None
        return wake

    def _pod_ip(self, sandbox: PodSandboxStatus | None) -> str:
        if (self.pod.get("spec") or {}).get("hostNetwork"):
            return self.ctx.node_ip
        return sandbox.ip if sandbox else ""

    async def _containers(self, sandbox_id: str) -> list[ContainerStatus]:
        """The containers of `sandbox_id`, oldest first (list_containers' order)."""
        runtime = self.ctx.runtime
        if sandbox_id != self._sandbox_id or self._container_ids is None:
            containers = await runtime.list_containers(sandbox_id=sandbox_id)
            if sandbox_id == self._sandbox_id:
                self._container_ids = {c.id for c in containers}
            return containers
        result = []
        for container_id in list(self._container_ids):
            try:
                result.append(await runtime.container_status(container_id))
            except NotFoundError:
                self._container_ids.discard(container_id)
        return sorted(result, key=lambda c: c.created_at)

    def _ensure_probes(self, sandbox: PodSandboxStatus,
                       containers: list[ContainerStatus]) -> None:
        latest = self._latest(containers)
        now = time.time()
        for container in (self.pod.get("spec") or {}).get("containers") or []:
            current = latest.get(str(container.get("name")))
            if current is not None and current.state == ContainerState.RUNNING:
                self.probes.ensure(container, current.id, self._pod_ip(sandbox),
                                   asyncio.get_running_loop().time()
                                   - (now - _epoch(current.started_at)))

    async def _ensure_sandbox(self) -> PodSandboxStatus | None:
        runtime = self.ctx.runtime
        if self._sandbox_id is not None:
            with contextlib.suppress(NotFoundError):
                current = await runtime.pod_sandbox_status(self._sandbox_id)
                if current.state == SandboxState.READY:
                    return current
            self._sandbox_id = self._container_ids = None
        may_have = self.ctx.sandbox_uids
        sandboxes = [] if may_have is not None and self.uid not in may_have else \
            await runtime.list_pod_sandbox(labels={LABEL_POD_UID: self.uid})
        ready = [s for s in sandboxes if s.state == SandboxState.READY]
        if ready:
            chosen = max(ready, key=lambda s: s.created_at)
            for other in sandboxes:
                if other.id != chosen.id:
                    await self._remove_sandbox(other.id)
            self._sandbox_id, self._container_ids = chosen.id, None
            return chosen
        for old in sandboxes:
            await self._remove_sandbox(old.id)
        spec = self.pod.get("spec") or {}
        meta = self.pod["metadata"]
        hostname = str(spec.get("hostname") or meta.get("name"))[:63]
        config = PodSandboxConfig(
            name=str(meta.get("name")), namespace=self.namespace, uid=self.uid,
            attempt=len(sandboxes), hostname=hostname,
            dns=dns_config(self.pod, self.ctx.cluster_dns, self.ctx.cluster_domain),
            port_mappings=[PortMapping(int(p["containerPort"]), int(p["hostPort"]),
                                       str(p.get("protocol") or "TCP"),
                                       str(p.get("hostIP") or ""))
                           for c in spec.get("containers") or []
                           for p in c.get("ports") or [] if p.get("hostPort")],
            labels=pod_labels(self.pod), annotations={},
            share_process_namespace=bool(spec.get("shareProcessNamespace")),
            host_network=bool(spec.get("hostNetwork")),
            host_aliases=[(str(a.get("ip")), [str(h) for h in a.get("hostnames") or []])
                          for a in spec.get("hostAliases") or []],
            log_directory=str(self._log_dir()))
        if may_have is not None:
            may_have.add(self.uid)
        try:
            async with self._start_slot():
                sandbox_id = await runtime.run_pod_sandbox(config)
        except RuntimeServiceError as err:
            await self._event_on_pod(WARNING, "FailedCreatePodSandBox",
                                     f"Failed to create pod sandbox: {err}")
            return None
        self._sandbox_id, self._container_ids = sandbox_id, set()
        if sandboxes:
            await self._event_on_pod(NORMAL, "SandboxChanged",
                                     "Pod sandbox changed, it will be killed and re-created.")
        return await runtime.pod_sandbox_status(sandbox_id)

    async def _remove_sandbox(self, sandbox_id: str) -> None:
        if sandbox_id == self._sandbox_id:
            self._sandbox_id = self._container_ids = None
        for container in await self.ctx.runtime.list_containers(sandbox_id=sandbox_id):
            self.probes.stop(container.id)
            await remove_container(self.ctx, container)
        await self.ctx.runtime.remove_pod_sandbox(sandbox_id)

    def _log_dir(self) -> Path:
        return self.ctx.logs_dir / f"{self.namespace}_{self.name}_{self.uid}"

    @staticmethod
    def _latest(containers: list[ContainerStatus]) -> dict[str, ContainerStatus]:
        latest: dict[str, ContainerStatus] = {}
        for container in containers:
            name = container.labels.get(LABEL_CONTAINER_NAME, container.name)
            if name not in latest or container.attempt > latest[name].attempt:
                latest[name] = container
        return latest

    async def _sync_containers(self, sandbox: PodSandboxStatus,
                               containers: list[ContainerStatus],
                               volumes: PodVolumes) -> float | None:
        spec = self.pod.get("spec") or {}
        policy = str(spec.get("restartPolicy") or "Always")
        latest = self._latest(containers)
        pod_ip = self._pod_ip(sandbox)
        wake: float | None = self.ctx.sync_period
        self._waiting = {k: v for k, v in self._waiting.items() if k in latest or
                         v[0] not in (CRASH_LOOP_BACK_OFF,)}

        def soonest(delay: float) -> None:
            nonlocal wake
            wake = delay if wake is None else min(wake, delay)

        for init in spec.get("initContainers") or []:
            name = str(init.get("name"))
            current = latest.get(name)
            if current is None:
                await self._start(sandbox, init, 0, volumes, init=True)
                return 0.2
            if current.state != ContainerState.EXITED:
                return 0.5
            if current.exit_code == 0:
                continue
            if policy == "Never":
                return None  # the pod has failed; the status says so
            delay = self._restart_delay(name, current)
            if delay > 0:
                soonest(delay)
                return wake
            await self._start(sandbox, init, current.attempt + 1, volumes, init=True)
            return 0.2
        running_ids = set()
        for container in spec.get("containers") or []:
            name = str(container.get("name"))
            current = latest.get(name)
            if current is None:
                await self._start(sandbox, container, 0, volumes)
                soonest(0.5)
                continue
            if current.state == ContainerState.RUNNING:
                running_ids.add(current.id)
                started = _epoch(current.started_at)
                self.probes.ensure(container, current.id, pod_ip,
                                   asyncio.get_running_loop().time() - (time.time() - started))
                if time.time() - started >= self.ctx.backoff_reset_seconds:
                    self.ctx.crash_backoff.reset(self._backoff_key(name))
                continue
            if current.state == ContainerState.CREATED:
                with contextlib.suppress(RuntimeServiceError):
                    await self.ctx.runtime.start_container(current.id)
                soonest(0.5)
                continue
            if current.state == ContainerState.UNKNOWN:
                await self._kill(container, current.id, 0, announce=False)
                soonest(0.5)
                continue
            if not _should_restart(policy, current):
                continue
            delay = self._restart_delay(name, current)
            if delay > 0:
                soonest(delay)
                continue
            await self._start(sandbox, container, current.attempt + 1, volumes)
            soonest(0.5)
        self.probes.retain(running_ids)
        return wake

    def _backoff_key(self, name: str) -> str:
        return f"{self.uid}/{name}"

    def _restart_delay(self, name: str, current: ContainerStatus) -> float:
        """Seconds until `name` may restart; records CrashLoopBackOff while waiting."""
        key = self._backoff_key(name)
        finished = _epoch(current.finished_at)
        started = _epoch(current.started_at) if current.started_at else finished
        if finished - started >= self.ctx.backoff_reset_seconds:
            self.ctx.crash_backoff.reset(key)
        remaining = self.ctx.crash_backoff.remaining(key, finished)
        if remaining > 0:
            delay = self.ctx.crash_backoff.current(key)
            message = (f"back-off {_duration(delay)} restarting failed container={name} "
                       f"pod={self.name}_{self.namespace}({self.uid})")
            if self._waiting.get(name, ("", ""))[1] != message:
                asyncio.get_running_loop().create_task(self._event_on_pod(
                    WARNING, "BackOff", f"Back-off restarting failed container {name} in "
                                        f"pod {self.name}_{self.namespace}({self.uid})"))
            self._waiting[name] = (CRASH_LOOP_BACK_OFF, message)
            return remaining
        self.ctx.crash_backoff.next(key)
        return 0.0

    # -- starting containers ---------------------------------------------------------------

    async def _pull(self, container: Obj) -> tuple[str, str] | None:
        """Make the image present; returns (image, repo digest) or None (waiting set)."""
        name = str(container.get("name"))
        image = str(container.get("image") or "")
        policy = str(container.get("imagePullPolicy") or "")
        key = f"{self.uid}/{image}"
        backoff = self.ctx.image_backoff
        last = self._waiting.get(name)
        if last and last[0] in ("ErrImagePull", "ImagePullBackOff") and \
                backoff.remaining(key, self._pull_failed_at.get(key, 0)) > 0:
            if last[0] != "ImagePullBackOff":
                await self._event_on_pod(NORMAL, "BackOff", f'Back-off pulling image "{image}"')
                await self._event_on_pod(WARNING, "Failed", "Error: ImagePullBackOff")
            self._waiting[name] = ("ImagePullBackOff", f'Back-off pulling image "{image}": '
                                   f"{self._pull_errors.get(key, '')}".rstrip(": "))
            return None
        try:
            await in_thread(self.ctx.images.get, image)
            present = True
        except Exception:  # not stored, or not even a valid reference
            present = False
        tag = image.rsplit("/", 1)[-1]
        always = policy == "Always" or (not policy and "@" not in image
                                        and (":" not in tag or tag.endswith(":latest")))
        if policy != "Never" and (not present or always):
            await self._event_on_pod(NORMAL, "Pulling", f'Pulling image "{image}"')
        secrets = []
        for ref in (self.pod.get("spec") or {}).get("imagePullSecrets") or []:
            with contextlib.suppress(StatusError):
                secrets.append(await self.ctx.client.get("secrets", str(ref.get("name")),
                                                         self.namespace))
        try:
            result = await in_thread(self.ctx.images.ensure_image, image, policy,
                                             secrets)
        except ImageError as err:
            if err.reason == "ErrImagePull":
                await self._event_on_pod(WARNING, "Failed",
                                         f'Failed to pull image "{image}": {err.message}')
                backoff.next(key)
                self._pull_failed_at[key] = time.time()
                self._pull_errors[key] = err.message
            else:
                await self._event_on_pod(WARNING, "Failed", err.message)
            await self._event_on_pod(WARNING, "Failed", f"Error: {err.reason}")
            self._waiting[name] = (err.reason, err.message)
            return None
        backoff.reset(key)
        await self._event_on_pod(NORMAL, "Pulled", result.message)
        return result.image, result.repo_digest

    async def _start(self, sandbox: PodSandboxStatus, container: Obj, attempt: int,
                     volumes: PodVolumes, *, init: bool = False) -> None:
        name = str(container.get("name"))
        pulled = await self._pull(container)
        if pulled is None:
            return
        image, repo_digest = pulled
        try:
            env = await self._environment(container, sandbox)
            mounts = container_mounts(container, volumes)
        except (ConfigError, VolumeError) as err:
            await self._event_on_pod(WARNING, "Failed", f"Error: {err}")
            self._waiting[name] = (CREATE_CONFIG_ERROR, str(err))
            return
        lookup = dict(env)
        command = [expand(str(c), lookup.get) for c in container.get("command") or []]
        args = [expand(str(a), lookup.get) for a in container.get("args") or []]
        directory = self.ctx.containers_dir / self.uid / f"{name}-{attempt}-{sandbox.id[:8]}"
        for stale in await self._containers(sandbox.id):
            if stale.labels.get(LABEL_CONTAINER_NAME) == name and stale.attempt < attempt - 1:
                await remove_container(self.ctx, stale)
                if self._container_ids is not None:
                    self._container_ids.discard(stale.id)
        if directory.exists():
            await in_thread(self.ctx.images.release_rootfs, directory)
        try:
            rootfs = await in_thread(self.ctx.images.prepare_rootfs, image, directory,
                                             method=self.ctx.rootfs_method)
            image_config = (await in_thread(self.ctx.images.image_config, image)
                            ).get("config") or {}
        except (OSError, ImageNotFoundError) as err:
            await self._event_on_pod(WARNING, "Failed", f"Error: {err}")
            self._waiting[name] = (CREATE_ERROR, str(err))
            return
        log_path = self._log_dir() / name / f"{attempt}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        config = ContainerConfig(
            name=name, rootfs=rootfs.path, image=image, image_config=image_config,
            attempt=attempt, command=command, args=args,
            working_dir=str(container.get("workingDir") or ""), env=env, mounts=mounts,
            resources=_resources(container), security=_security(self.pod, container),
            log_path=str(log_path), tty=bool(container.get("tty")),
            stdin=bool(container.get("stdin")), stdin_once=bool(container.get("stdinOnce")),
            labels={**pod_labels(self.pod), LABEL_CONTAINER_NAME: name},
            annotations={ANN_RESTART_COUNT: str(attempt), ANN_IMAGE_ID: repo_digest,
                         ANN_ROOTFS_DIR: str(directory), ANN_INIT: "true" if init else ""})
        try:
            async with self._start_slot():
                container_id = await self.ctx.runtime.create_container(sandbox.id, config)
        except RuntimeServiceError as err:
            await in_thread(self.ctx.images.release_rootfs, directory)
            await self._event_on_pod(WARNING, "Failed", f"Error: {err}")
            self._waiting[name] = (CREATE_ERROR, str(err))
            return
        if sandbox.id == self._sandbox_id and self._container_ids is not None:
            self._container_ids.add(container_id)
        await self._event_on_pod(NORMAL, "Created", f"Created container: {name}")
        self._waiting.pop(name, None)
        try:
            async with self._start_slot():
                await self.ctx.runtime.start_container(container_id)
        except RuntimeServiceError as err:
            await self._event_on_pod(WARNING, "Failed", f"Error: {err}")
            return
        await self._event_on_pod(NORMAL, "Started", f"Started container {name}")
        hook = (container.get("lifecycle") or {}).get("postStart")
        if hook:
            outcome = await run_action(self.ctx.runtime, hook, container, container_id,
                                       self._pod_ip(sandbox), self.ctx.node_netns,
                                       float(self._grace_period() or 30))
            if not outcome.success:
                await self._event_on_pod(WARNING, "FailedPostStartHook", outcome.message)
                await self._kill(container, container_id, self._grace_period())

    async def _environment(self, container: Obj, sandbox: PodSandboxStatus
                           ) -> list[tuple[str, str]]:
        """envFrom, env (with $(VAR) expansion and valueFrom), then service links."""
        pod = m.deep_copy(self.pod)
        status = pod.setdefault("status", {})
        status.setdefault("podIP", self._pod_ip(sandbox))
        status.setdefault("podIPs", [{"ip": self._pod_ip(sandbox)}])
        status.setdefault("hostIP", self.ctx.node_ip)
        status.setdefault("hostIPs", [{"ip": self.ctx.node_ip}])
        spec = pod.get("spec") or {}
        services = self.ctx.services(self.namespace) if spec.get(
            "enableServiceLinks", True) is not False else []
        masters = [s for s in self.ctx.services("default") if m.name_of(s) == "kubernetes"]
        links = service_env([*[s for s in services if m.name_of(s) != "kubernetes"
                               or self.namespace != "default"], *masters])
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = str(source.get("prefix") or "")
            if source.get("configMapRef") is not None:
                data = await self._object_data("configmaps", source["configMapRef"])
            elif source.get("secretRef") is not None:
                data = await self._object_data("secrets", source["secretRef"])
            else:
                continue
            for key, value in data.items():
                env[prefix + key] = value
        link_values = dict(links)

        def lookup(name: str) -> str | None:
            return env.get(name, link_values.get(name))

        for item in container.get("env") or []:
            name = str(item.get("name"))
            if "valueFrom" not in item or item.get("valueFrom") is None:
                env[name] = expand(str(item.get("value") or ""), lookup)
                continue
            resolved = await self._value_from(pod, container, item["valueFrom"])
            if resolved is not None:
                env[name] = resolved
        for key, value in links:
            env.setdefault(key, value)
        return list(env.items())

    async def _object_data(self, resource: str, ref: Obj) -> dict[str, str]:
        name = str(ref.get("name") or "")
        kind = "configmap" if resource == "configmaps" else "secret"
        try:
            obj = await self.ctx.client.get(resource, name, self.namespace)
        except StatusError as err:
            if err.code == 404 and ref.get("optional"):
                return {}
            if err.code == 404:
                raise ConfigError(f'{kind} "{name}" not found') from None
            raise
        if resource == "secrets":
            return {k: base64.b64decode(v).decode(errors="replace")
                    for k, v in (obj.get("data") or {}).items()}
        return {k: str(v) for k, v in (obj.get("data") or {}).items()}

    async def _value_from(self, pod: Obj, container: Obj, source: Obj) -> str | None:
        try:
            if source.get("fieldRef"):
                return field_ref_value(pod, str(source["fieldRef"].get("fieldPath")))
            if source.get("resourceFieldRef"):
                ref = source["resourceFieldRef"]
                return resource_field_value(
                    pod, str(ref.get("containerName") or container.get("name")), ref,
                    self.ctx.allocatable())
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for key, resource in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
            ref = source.get(key)
            if not ref:
                continue
            data = await self._object_data(resource, {**ref, "optional": False}) \
                if not ref.get("optional") else await self._object_data(resource, ref)
            wanted = str(ref.get("key"))
            if wanted not in data:
                if ref.get("optional"):
                    return None
                kind = "configmap" if resource == "configmaps" else "secret"
                raise ConfigError(f"couldn't find key {wanted} in {kind.capitalize()} "
                                  f"{self.namespace}/{ref.get('name')}")
            return data[wanted]
        return None

    # -- stopping --------------------------------------------------------------------------

    async def _kill(self, container: Obj, container_id: str, grace: int, *,
                    announce: bool = True) -> None:
        """preStop hook, then SIGTERM and SIGKILL after what is left of the grace period."""
        name = str(container.get("name"))
        if announce:
            await self._event_on_pod(NORMAL, "Killing", f"Stopping container {name}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        hook = (container.get("lifecycle") or {}).get("preStop")
        if hook and grace > 0:
            pod_ip = str((self.pod.get("status") or {}).get("podIP") or "")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    outcome = await run_action(self.ctx.runtime, hook, container,
                                               container_id, pod_ip, self.ctx.node_netns,
                                               grace)
                if not outcome.success:
                    await self._event_on_pod(WARNING, "FailedPreStopHook",
                                             f"PreStopHook failed: {outcome.message}")
        remaining = max(0.0, deadline - loop.time())
        # The minimum the kubelet gives SIGTERM once preStop used the grace period up.
        if grace > 0:
            remaining = max(remaining, 2.0)
        await self.ctx.runtime.stop_container(container_id, remaining)

    async def _terminate(self, grace: int, api: bool) -> None:
        runtime = self.ctx.runtime
        self.probes.stop_all()
        containers = await runtime.list_containers(labels={LABEL_POD_UID: self.uid})
        running = [c for c in containers if c.state == ContainerState.RUNNING]
        await asyncio.gather(*(self._kill(self._spec(c.labels.get(LABEL_CONTAINER_NAME, c.name))
                                          or {"name": c.name}, c.id, grace)
                               for c in running), return_exceptions=True)
        final: Obj | None = None
        if api:
            containers = await runtime.list_containers(labels={LABEL_POD_UID: self.uid})
            sandboxes = await runtime.list_pod_sandbox(labels={LABEL_POD_UID: self.uid})
            sandbox = max(sandboxes, key=lambda s: s.created_at) if sandboxes else None
            final = await self._status(sandbox, [c for c in containers if sandbox is None
                                                 or c.sandbox_id == sandbox.id],
                                       terminating=True)
        log.info("pod %s/%s: stopped, removing its containers and sandbox", self.namespace,
                 self.name)
        await remove_pod_resources(self.ctx, self.uid)
        shutil.rmtree(self._log_dir(), ignore_errors=True)
        if final is not None:
            # Written once everything is gone: an update of a pod being deleted may be the
            # last thing the server accepts for it.
            with contextlib.suppress(StatusError):
                await self._write_status(final)
        if api and not self._deleted_sent:
            await self._flush_events()
            try:
                await self.ctx.client.delete("pods", self.name, self.namespace,
                                             grace_period=0, uid=self.uid)
            except StatusError as err:
                if err.code not in (404, 409):
                    raise
            self._deleted_sent = True
        self.finished = True

    async def _finish_terminal(self) -> None:
        """A pod that ran to completion: stop its sandbox, keep its containers' logs."""
        if self._terminal_done:
            return
        self.probes.stop_all()
        for sandbox in await self.ctx.runtime.list_pod_sandbox(labels={LABEL_POD_UID: self.uid}):
            if sandbox.state == SandboxState.READY:
                await self.ctx.runtime.stop_pod_sandbox(sandbox.id)
        self._terminal_done = True

    # -- status ------------------------------------------------------------------------------

    def _run_of(self, spec: Obj, containers: list[ContainerStatus], policy: str,
                default_waiting: str, runtime: str) -> st.ContainerRun:
        name = str(spec.get("name"))
        mine = sorted((c for c in containers
                       if c.labels.get(LABEL_CONTAINER_NAME, c.name) == name),
                      key=lambda c: c.attempt)
        waiting = self._waiting.get(name)
        if not mine:
            return st.ContainerRun(name, waiting_reason=waiting[0] if waiting
                                   else default_waiting,
                                   waiting_message=waiting[1] if waiting else "")
        current = mine[-1]
        previous = mine[-2] if len(mine) > 1 else None
        run = st.ContainerRun(name, restart_count=current.attempt,
                              container_id=f"{runtime}://{current.id}")
        if previous is not None and previous.state == ContainerState.EXITED:
            run.last_exit = _terminated(previous, runtime)
        if current.state == ContainerState.RUNNING:
            run.started_at = _seconds_stamp(current.started_at)
            run.ready = self.probes.ready(current.id) and self.probes.started(current.id)
        elif current.state == ContainerState.EXITED:
            restarting = _should_restart(policy, current) and waiting is not None
            if restarting and waiting is not None:
                run.last_exit = _terminated(current, runtime)
                run.waiting_reason, run.waiting_message = waiting
            else:
                run.started_at = _seconds_stamp(current.started_at) or \
                    _seconds_stamp(current.finished_at)
                run.finished_at = _seconds_stamp(current.finished_at)
                run.exit_code = current.exit_code
                run.ready = bool(current.annotations.get(ANN_INIT)) and current.exit_code == 0
        else:
            run.waiting_reason = waiting[0] if waiting else "ContainerCreating"
            run.waiting_message = waiting[1] if waiting else ""
        return run

    async def _status(self, sandbox: PodSandboxStatus | None,
                      containers: list[ContainerStatus], *, volumes_ready: bool = True,
                      terminating: bool = False) -> Obj:
        spec = self.pod.get("spec") or {}
        policy = "Never" if terminating else str(spec.get("restartPolicy") or "Always")
        inits = spec.get("initContainers") or []
        # containerID is <runtime name>://<id>, as upstream's (containerd://…).
        runtime, _ = await self.ctx.runtime.version()
        init_runs = [self._run_of(c, containers, policy, "PodInitializing", runtime)
                     for c in inits]
        init_pending = any(r.exit_code != 0 for r in init_runs)
        runs = [self._run_of(c, containers, policy,
                             "PodInitializing" if init_pending else "ContainerCreating",
                             runtime)
                for c in spec.get("containers") or []]
        if terminating:
            for run in [*init_runs, *runs]:
                run.ready = False
        status = st.pod_status(
            self.pod, init_runs, runs, host_ip=self.ctx.node_ip,
            pod_ip=self._pod_ip(sandbox) if sandbox else "",
            sandbox_ready=bool(sandbox and sandbox.state == SandboxState.READY
                               and volumes_ready))
        by_id = {f"{runtime}://{c.id}": c for c in containers}
        for entry in [*(status.get("initContainerStatuses") or []),
                      *(status.get("containerStatuses") or [])]:
            runtime_status = by_id.get(entry.get("containerID", ""))
            if runtime_status is not None:
                entry["imageID"] = runtime_status.annotations.get(ANN_IMAGE_ID, "")
                entry["image"] = st.normalize_image(runtime_status.image)
                if runtime_status.state == ContainerState.RUNNING:
                    entry["started"] = self.probes.started(runtime_status.id)
                terminated = (entry.get("state") or {}).get("terminated")
                if terminated and runtime_status.reason:
                    terminated["reason"] = runtime_status.reason
                    if runtime_status.message and runtime_status.reason != "Completed":
                        terminated["message"] = runtime_status.message
        if terminating and status["phase"] not in ("Succeeded", "Failed"):
            status["phase"] = "Failed"
        return status

    async def _write_status(self, status: Obj) -> None:
        await self._flush_events()
        current = self.pod.get("status") or {}
        if status == current or status == self._written:
            return
        for attempt in range(2):
            updated = dict(self.pod)
            updated["status"] = status
            try:
                written = await self.ctx.client.update_status("pods", updated)
            except StatusError as err:
                if err.code == 409 and attempt == 0:
                    self.pod = await self.ctx.client.get("pods", self.name, self.namespace)
                    continue
                if err.code == 404:
                    return
                raise
            self.pod = written
            self._written = status
            return


def _desired(pod: Obj) -> Obj:
    meta = {k: v for k, v in (pod.get("metadata") or {}).items()
            if k not in ("resourceVersion", "managedFields")}
    return {"metadata": meta, "spec": pod.get("spec")}


def _terminated(container: ContainerStatus, runtime: str) -> Obj:
    return st.terminated_state(container.exit_code,
                               _seconds_stamp(container.started_at)
                               or _seconds_stamp(container.finished_at) or "",
                               _seconds_stamp(container.finished_at) or "",
                               f"{runtime}://{container.id}", container.reason or None)


def _duration(seconds: float) -> str:
    """Go's time.Duration text for whole seconds: 10s, 1m20s, 5m0s."""
    total = int(seconds)
    if total < 60:
        return f"{total}s"
    return f"{total // 60}m{total % 60}s"


def _resources(container: Obj) -> Resources:
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    result = Resources()
    cpu_request = requests.get("cpu", limits.get("cpu"))
    with contextlib.suppress(ValueError):
        if cpu_request is not None:
            result.cpu_shares = max(2, math.floor(parse_quantity(cpu_request) * 1024))
        if limits.get("cpu") is not None:
            result.cpu_period = 100_000
            result.cpu_quota = max(1000, math.ceil(parse_quantity(limits["cpu"]) * 100_000))
        if limits.get("memory") is not None:
            result.memory_limit = math.ceil(parse_quantity(limits["memory"]))
    return result


def _security(pod: Obj, container: Obj) -> Security:
    pod_context = (pod.get("spec") or {}).get("securityContext") or {}
    context = container.get("securityContext") or {}

    def pick(key: str) -> Any:
        return context.get(key, pod_context.get(key))

    capabilities = context.get("capabilities") or {}
    return Security(
        run_as_user=pick("runAsUser"), run_as_group=pick("runAsGroup"),
        privileged=bool(context.get("privileged")),
        capabilities_add=[str(c) for c in capabilities.get("add") or []],
        capabilities_drop=[str(c) for c in capabilities.get("drop") or []],
        read_only_root_filesystem=bool(context.get("readOnlyRootFilesystem")),
        no_new_privileges=context.get("allowPrivilegeEscalation") is False)
