"""Simulated nodes: Node objects whose pods "run" without containers (what KWOK does).

A `SimulatedNodes` pool registers its nodes, keeps each one's Lease renewed and its status
reported as a kubelet does, and moves the pods bound to them through their lives: Pending
-> Running (init containers completing first) -> Succeeded/Failed for run-to-completion
pods, restarts with back-off for failing OnFailure/Always pods, and graceful deletion.

Scale: the whole pool shares one node informer and one pod informer (indexed by
spec.nodeName) and a fixed number of workers, so thousands of nodes cost dictionaries,
not tasks. Each `SimulatedNode` can be stopped and started on its own (a dead kubelet).

Pod annotations steer the simulation:
- `kubi.dev/simulate-exit-code: "N"`: containers exit with N (after the run duration),
- `kubi.dev/simulate-duration: "S"`: containers run S seconds (`"inf"`: forever); the
  default is forever for restartPolicy Always, `job_duration` otherwise,
- `kubi.dev/simulate-not-ready: "true"`: containers run but never become ready.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import random
import zlib
from dataclasses import dataclass, field
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.client.informer import Informer, key_of
from kubi.client.rest import Client
from kubi.client.workqueue import ShutDown, WorkQueue
from kubi.kubelet import status as st
from kubi.kubelet.heartbeat import post_node_status, renew_node_lease
from kubi.util.aio import cancel_and_wait

log = logging.getLogger("kubi.kubelet.simulated")

Obj = dict[str, Any]

SIMULATED_ANNOTATION = "kubi.dev/simulated"
EXIT_CODE_ANNOTATION = "kubi.dev/simulate-exit-code"
DURATION_ANNOTATION = "kubi.dev/simulate-duration"
NOT_READY_ANNOTATION = "kubi.dev/simulate-not-ready"
INSTANCE_TYPE = "kubi-simulated"
NODE_LEASE_NAMESPACE = "kube-node-lease"
RUNTIME = "kubi-simulated"
KILLED_EXIT_CODE = 137  # SIGKILL after the grace period
NODE_IP_BASE = ipaddress.IPv4Address("10.254.0.0")


@dataclass
class SimulationOptions:
    cpu: str = "32"
    memory: str = "256Gi"
    pods: int = 110
    heartbeat: float = 10.0  # Lease renewal period (upstream: leaseDuration / 4)
    lease_duration: int = 40
    # Many nodes in one process: renewals are spread so that at most this many happen a
    # second, stretching the period up to half the lease duration (never beyond it).
    max_lease_renewals_per_second: float = 100.0
    status_report_interval: float = 300.0  # upstream nodeStatusReportFrequency
    pod_startup: float = 0.0
    job_duration: float = 1.0
    restart_backoff: float = 10.0  # upstream's container restart back-off, doubling
    max_restart_backoff: float = 300.0
    pod_workers: int = 32
    node_workers: int = 16


def node_address(index: int) -> str:
    """The InternalIP of simulated node `index` (data only: nothing is ever contacted)."""
    return str(NODE_IP_BASE + 1 + index)


def pod_cidr(base: str, index: int, count: int) -> str:
    """Node `index`'s pod range: a /24 from `base` while `count` of them fit, else the
    largest equal slice that does (upstream's node IPAM would run out instead)."""
    network = ipaddress.ip_network(base, strict=False)
    prefix = 24 if network.prefixlen <= 24 else network.prefixlen
    if count > 2 ** (prefix - network.prefixlen):
        prefix = min(network.prefixlen + math.ceil(math.log2(max(count, 2))),
                     network.max_prefixlen - 2)
    size = 2 ** (network.max_prefixlen - prefix)
    start = int(network.network_address) + (index * size) % network.num_addresses
    return f"{ipaddress.ip_address(start)}/{prefix}"


class PodIPs:
    """Addresses of one node's pod range: handed out in turn, skipping those in use."""

    def __init__(self, cidr: str) -> None:
        network = ipaddress.ip_network(cidr, strict=False)
        first = int(network.network_address) + (2 if network.prefixlen <= 24 else 1)
        self._first = first
        self._last = int(network.broadcast_address) - 1
        self._next = first
        self.used: set[str] = set()

    def allocate(self) -> str | None:
        span = self._last - self._first + 1
        for _ in range(span):
            candidate = str(ipaddress.ip_address(self._next))
            self._next = self._first + (self._next - self._first + 1) % span
            if candidate not in self.used:
                self.used.add(candidate)
                return candidate
        return None

    def reserve(self, ip: str) -> None:
        self.used.add(ip)

    def release(self, ip: str) -> None:
        self.used.discard(ip)


def _annotation(pod: Obj, key: str) -> str | None:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(key)
    return None if value is None else str(value)


def run_duration(pod: Obj, job_duration: float) -> float:
    """Seconds each container runs before exiting; inf for long-running pods."""
    raw = _annotation(pod, DURATION_ANNOTATION)
    if raw is not None:
        try:
            value = float(raw)
        except ValueError:
            log.warning("pod %s: ignoring %s=%r (not a number)", key_of(pod),
                        DURATION_ANNOTATION, raw)
        else:
            return math.inf if value < 0 or math.isnan(value) else value
    policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
    if policy == "Always" and _annotation(pod, EXIT_CODE_ANNOTATION) is None:
        return math.inf
    return job_duration


def exit_code(pod: Obj) -> int:
    raw = _annotation(pod, EXIT_CODE_ANNOTATION)
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError:
        log.warning("pod %s: ignoring %s=%r (not an integer)", key_of(pod),
                    EXIT_CODE_ANNOTATION, raw)
        return 0


@dataclass
class _Container:
    run: st.ContainerRun
    started_mono: float = 0.0
    restart_at: float | None = None  # waiting out a back-off until then


@dataclass
class _PodRun:
    """What the simulated runtime did with one pod (in memory; rebuilt from status)."""

    uid: str
    accepted: float
    pod_ip: str = ""
    start_time: str = ""
    started: bool = False
    init: list[_Container] = field(default_factory=list)
    containers: list[_Container] = field(default_factory=list)
    written: Obj | None = None  # the last status we wrote and its resourceVersion
    written_rv: str = ""


class SimulatedNode:
    """One simulated node: registration, heartbeats and its pods. `stop()` makes it a dead
    kubelet (no Lease renewals, status or pod updates); `start()` brings it back."""

    def __init__(self, pool: SimulatedNodes, name: str, index: int, pod_cidr: str) -> None:
        self.pool = pool
        self.name = name
        self.index = index
        self.pod_cidr = pod_cidr
        options = pool.options
        self.facts = st.NodeFacts(
            name=name, internal_ip=node_address(index), cpu=options.cpu,
            memory=options.memory, pods=options.pods, kernel_version="simulated",
            os_image="Kubi simulated node", container_runtime_version=f"{RUNTIME}://0.1.0",
            kube_proxy_version="", kubelet_version="v1.32.0",
            machine_id=f"{zlib.crc32(name.encode()):08x}" * 4,
            system_uuid=m.new_uid(), boot_id=m.new_uid())
        self.ips = PodIPs(pod_cidr)
        self.running = False
        self.registered = False
        self.uid = ""
        self.lease: Obj | None = None
        self.next_lease = 0.0
        self.next_status = 0.0
        self.status_dirty = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Run (again): heartbeats resume at once and every pod is looked at afresh."""
        self.running = True
        self.next_lease = self.next_status = 0.0
        self.pool.nodes_queue.add(self.name)
        for pod in self.pool.pods_on(self.name):
            run = self.pool.runs.get((pod.get("metadata") or {}).get("uid", ""))
            if run is not None:
                run.written = None  # compare with the server's status again
            self.pool.pod_queue.add(key_of(pod))

    def stop(self) -> None:
        """Stop heartbeats and pod handling, as when the kubelet dies."""
        self.running = False

    def set_ready(self, ready: bool, message: str = "container runtime is down") -> None:
        """Report Ready=False (KubeletNotReady with `message`) or Ready=True again."""
        self.facts.not_ready_reason = "" if ready else message
        self.next_status = 0.0
        self.pool.nodes_queue.add(self.name)

    # -- objects ---------------------------------------------------------------------------

    def node_object(self) -> Obj:
        labels = st.node_labels(self.facts)
        labels["node.kubernetes.io/instance-type"] = INSTANCE_TYPE
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": {
                SIMULATED_ANNOTATION: "true",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
            "spec": {"podCIDR": self.pod_cidr, "podCIDRs": [self.pod_cidr]},
            "status": st.node_status(self.facts),
        }

    # -- work --------------------------------------------------------------------------------

    async def sync(self) -> float | None:
        """Register, renew the Lease, report status when due; seconds until next due."""
        if not self.running:
            return None
        client = self.pool.client
        loop = asyncio.get_running_loop()
        if not self.registered:
            await self._register()
            # Leases come after every node is registered: requeue at the back.
            self.pool.nodes_queue.add(self.name)
            return None
        now = loop.time()
        if now >= self.next_status or self.status_dirty:
            self.status_dirty = False
            await self._report_status()
            self.next_status = now + self.pool.options.status_report_interval
        if now >= self.next_lease:
            await self._renew_lease(client)
            # A little jitter keeps thousands of nodes from renewing in lockstep.
            self.next_lease = now + self.pool.lease_period() * (1 - 0.04 * random.random())
        return max(0.0, min(self.next_lease, self.next_status) - loop.time())

    async def _register(self) -> None:
        client = self.pool.client
        try:
            created = await client.create("nodes", self.node_object())
        except StatusError as err:
            if err.code != 409:
                raise
            created = await client.get("nodes", self.name)
            spec = created.get("spec") or {}
            if spec.get("podCIDR"):
                self.pod_cidr = str(spec["podCIDR"])
                self.ips = PodIPs(self.pod_cidr)
            else:
                created = await client.patch("nodes", self.name, {"spec": {
                    "podCIDR": self.pod_cidr, "podCIDRs": [self.pod_cidr]}})
            self.next_status = 0.0  # a kubelet (re)starting posts its status
            for pod in self.pool.pods_on(self.name):
                ip = (pod.get("status") or {}).get("podIP")
                if ip and not (pod.get("spec") or {}).get("hostNetwork"):
                    self.ips.reserve(str(ip))
        else:
            self.next_status = asyncio.get_running_loop().time() + \
                self.pool.options.status_report_interval
        self.uid = str(created["metadata"].get("uid", ""))
        self.registered = True
        for pod in self.pool.pods_on(self.name):
            self.pool.pod_queue.add(key_of(pod))

    async def _report_status(self) -> None:
        await post_node_status(self.pool.client, self.name, self.facts,
                               self.pool.node_informer.cache.get(self.name))

    async def _renew_lease(self, client: Client) -> None:
        self.lease = await renew_node_lease(client, self.name, self.uid,
                                            self.pool.options.lease_duration, self.lease)


def _node_name_index(pod: Obj) -> list[str]:
    name = (pod.get("spec") or {}).get("nodeName")
    return [str(name)] if name else []


class SimulatedNodes:
    """A pool of simulated nodes sharing informers and workers."""

    def __init__(self, client: Client, options: SimulationOptions | None = None, *,
                 pod_field_selector: str = "spec.nodeName!=",
                 node_field_selector: str = "") -> None:
        self.client = client
        self.options = options or SimulationOptions()
        self.nodes: dict[str, SimulatedNode] = {}
        self.runs: dict[str, _PodRun] = {}
        self.deleted: set[str] = set()  # pods we deleted with grace 0 (uids)
        self.nodes_queue = WorkQueue()
        self.pod_queue = WorkQueue()
        self.node_informer = Informer(client, "nodes", field_selector=node_field_selector)
        self.pod_informer = Informer(client, "pods", field_selector=pod_field_selector)
        self.pod_informer.cache.add_indexer("nodeName", _node_name_index)
        self.pod_informer.add_handlers(self._pod_changed, lambda _old, new: self._pod_changed(new),
                                       self._pod_deleted)
        self.node_informer.add_handlers(on_update=self._node_changed,
                                        on_delete=self._node_deleted)

    def add_node(self, name: str, index: int, pod_cidr: str) -> SimulatedNode:
        node = SimulatedNode(self, name, index, pod_cidr)
        self.nodes[name] = node
        return node

    def lease_period(self) -> float:
        options = self.options
        spread = len(self.nodes) / max(options.max_lease_renewals_per_second, 1e-9)
        return max(options.heartbeat, min(spread, options.lease_duration / 2))

    def pods_on(self, node_name: str) -> list[Obj]:
        return self.pod_informer.cache.by_index("nodeName", node_name)

    # -- informer handlers -------------------------------------------------------------------

    def _pod_changed(self, pod: Obj) -> None:
        node = self.nodes.get(str((pod.get("spec") or {}).get("nodeName") or ""))
        if node is not None and node.running:
            self.pod_queue.add(key_of(pod))

    def _pod_deleted(self, pod: Obj) -> None:
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        self.deleted.discard(uid)
        run = self.runs.pop(uid, None)
        node = self.nodes.get(str((pod.get("spec") or {}).get("nodeName") or ""))
        if run is not None and node is not None and run.pod_ip:
            node.ips.release(run.pod_ip)

    def _node_changed(self, _old: Obj, new: Obj) -> None:
        node = self.nodes.get(str((new.get("metadata") or {}).get("name")))
        if node is not None and node.running and node.registered:
            current = new.get("status") or {}
            if st.node_status_changed(current, st.node_status(node.facts, current)):
                # Someone else changed our status (the node controller's Unknown): post ours.
                node.status_dirty = True
                self.nodes_queue.add(node.name)

    def _node_deleted(self, obj: Obj) -> None:
        node = self.nodes.get(str((obj.get("metadata") or {}).get("name")))
        if node is not None and node.registered:
            log.warning("simulated node %s was deleted; it stops", node.name)
            node.stop()
            node.registered = False
            node.lease = None

    # -- pods ------------------------------------------------------------------------------

    def _new_run(self, pod: Obj, node: SimulatedNode, now: float) -> _PodRun:
        """A run record; for a pod this node already started, rebuilt from its status."""
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        run = _PodRun(uid=str(meta.get("uid", "")), accepted=now)
        if any("running" in (cs.get("state") or {}) or "terminated" in (cs.get("state") or {})
               for cs in status.get("containerStatuses") or []):
            run.started = True
            run.start_time = str(status["startTime"])
            run.pod_ip = str(status.get("podIP") or "")
            if run.pod_ip and not (pod.get("spec") or {}).get("hostNetwork"):
                node.ips.reserve(run.pod_ip)
            wall = m.now()
            for group, target in (("initContainerStatuses", run.init),
                                  ("containerStatuses", run.containers)):
                for cs in status.get(group) or []:
                    target.append(self._container_from_status(cs, now, wall))
        return run

    @staticmethod
    def _container_from_status(cs: Obj, now: float, wall: Any) -> _Container:
        state = cs.get("state") or {}
        run = st.ContainerRun(name=str(cs.get("name")), ready=bool(cs.get("ready")),
                              restart_count=int(cs.get("restartCount") or 0),
                              container_id=str(cs.get("containerID") or ""),
                              last_exit=(cs.get("lastState") or {}).get("terminated"))
        started_mono = now
        if "running" in state:
            run.started_at = str(state["running"].get("startedAt"))
            began = st.parse_time(run.started_at)
            if began is not None:
                started_mono = now - max(0.0, (wall - began).total_seconds())
        elif "terminated" in state:
            term = state["terminated"]
            run.started_at = str(term.get("startedAt"))
            run.finished_at = str(term.get("finishedAt"))
            run.exit_code = int(term.get("exitCode") or 0)
        else:
            run.waiting_reason = str((state.get("waiting") or {}).get("reason") or "")
        return _Container(run, started_mono, None if run.started_at else now)

    def _start(self, pod: Obj, node: SimulatedNode, run: _PodRun) -> bool:
        """Sandbox up, init containers run to completion, containers start."""
        spec = pod.get("spec") or {}
        if spec.get("hostNetwork"):
            run.pod_ip = node.facts.internal_ip
        elif not run.pod_ip:
            allocated = node.ips.allocate()
            if allocated is None:
                log.warning("node %s: no pod IP left in %s for %s", node.name, node.pod_cidr,
                            key_of(pod))
                return False
            run.pod_ip = allocated
        loop_now = asyncio.get_running_loop().time()
        wall = st.now_time()
        run.start_time = run.start_time or wall
        not_ready = _annotation(pod, NOT_READY_ANNOTATION) == "true"
        for container in spec.get("initContainers") or []:
            name = str(container.get("name"))
            cid = st.container_id(RUNTIME, run.uid, name, 0)
            if container.get("restartPolicy") == "Always":  # a sidecar keeps running
                cr = st.ContainerRun(name, started_at=wall, ready=not not_ready,
                                     container_id=cid)
            else:
                cr = st.ContainerRun(name, started_at=wall, finished_at=wall, exit_code=0,
                                     ready=True, container_id=cid)
            run.init.append(_Container(cr, loop_now))
        for container in spec.get("containers") or []:
            name = str(container.get("name"))
            run.containers.append(_Container(st.ContainerRun(
                name, started_at=wall, ready=not not_ready,
                container_id=st.container_id(RUNTIME, run.uid, name, 0)), loop_now))
        run.started = True
        return True

    def _advance(self, pod: Obj, run: _PodRun, now: float) -> float | None:
        """Move containers along to `now`; seconds until the next change, or None."""
        policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
        duration = run_duration(pod, self.options.job_duration)
        code = exit_code(pod)
        not_ready = _annotation(pod, NOT_READY_ANNOTATION) == "true"
        wall = st.now_time()
        wake: float | None = None
        for container in run.containers:
            cr = container.run
            if cr.exit_code is None and cr.started_at:
                cr.ready = not not_ready
                ends = container.started_mono + duration
                if now < ends:
                    wake = ends if wake is None else min(wake, ends)
                    continue
                cr.exit_code, cr.finished_at, cr.ready = code, wall, False
            if cr.exit_code is not None and cr.started_at and container.restart_at is None:
                if policy == "Never" or (policy == "OnFailure" and cr.exit_code == 0):
                    continue
                # Restart: the first one at once, then upstream's doubling back-off.
                delay = 0.0 if cr.restart_count == 0 else min(
                    self.options.restart_backoff * 2 ** (cr.restart_count - 1),
                    self.options.max_restart_backoff)
                cr.last_exit = st.terminated_state(cr.exit_code, cr.started_at,
                                                   cr.finished_at or wall, cr.container_id)
                cr.restart_count += 1
                cr.exit_code = cr.started_at = cr.finished_at = None
                cr.ready = False
                container.restart_at = now + delay
                cr.waiting_reason = "CrashLoopBackOff"
                cr.waiting_message = (
                    f"back-off {int(delay)}s restarting failed container={cr.name} "
                    f"pod={pod['metadata']['name']}_{pod['metadata'].get('namespace', '')}"
                    f"({run.uid})")
            if container.restart_at is not None:
                if now >= container.restart_at:
                    container.restart_at = None
                    cr.started_at = wall
                    cr.ready = not not_ready
                    cr.waiting_message = ""
                    cr.container_id = st.container_id(RUNTIME, run.uid, cr.name,
                                                      cr.restart_count)
                    container.started_mono = now
                    ends = now + duration
                else:
                    ends = container.restart_at
                if ends != math.inf:
                    wake = ends if wake is None else min(wake, ends)
        return None if wake is None else max(0.0, wake - now)

    def _status(self, pod: Obj, node: SimulatedNode, run: _PodRun) -> Obj:
        return st.pod_status(pod, [c.run for c in run.init], [c.run for c in run.containers],
                             host_ip=node.facts.internal_ip, pod_ip=run.pod_ip,
                             start_time=run.start_time)

    async def _write_status(self, pod: Obj, run: _PodRun, status: Obj) -> bool:
        current = pod.get("status") or {}
        rv = str(pod["metadata"].get("resourceVersion", ""))
        if status == run.written and (rv == run.written_rv or status == current):
            return True
        if status == current:
            run.written, run.written_rv = status, rv
            return True
        updated = dict(pod)
        updated["status"] = status
        try:
            written = await self.client.update_status("pods", updated)
        except StatusError as err:
            if err.code in (404, 409):
                return False  # gone, or a newer pod is on its way through the informer
            raise
        run.written = status
        run.written_rv = str(written["metadata"].get("resourceVersion", ""))
        return True

    async def _finish_deleted(self, pod: Obj, node: SimulatedNode, run: _PodRun | None
                              ) -> float | None:
        """Stop a deleted pod after its grace period, then remove it as the kubelet does."""
        meta = pod["metadata"]
        phase = (pod.get("status") or {}).get("phase")
        deadline = st.parse_time(meta.get("deletionTimestamp"))
        ran = run is not None and run.started and phase not in ("Succeeded", "Failed")
        if ran and deadline is not None and meta.get("deletionGracePeriodSeconds"):
            remaining = (deadline - m.now()).total_seconds()
            if remaining > 0:
                return remaining
        if ran and run is not None:
            wall = st.now_time()
            for container in run.containers + run.init:
                cr = container.run
                if cr.exit_code is None:
                    if cr.started_at:
                        cr.exit_code, cr.finished_at = KILLED_EXIT_CODE, wall
                    container.restart_at = None
            status = self._status(pod, node, run)
            if status["phase"] not in ("Succeeded", "Failed"):
                status["phase"] = "Failed"
            await self._write_status(pod, run, status)
        uid = str(meta.get("uid", ""))
        if uid in self.deleted:
            return None  # finalizers hold it; our delete is done
        try:
            await self.client.delete("pods", meta["name"], meta.get("namespace", ""),
                                     grace_period=0, uid=uid)
        except StatusError as err:
            if err.code not in (404, 409):
                raise
        self.deleted.add(uid)
        return None

    async def sync_pod(self, key: str) -> float | None:
        pod = self.pod_informer.cache.get(key)
        if pod is None:
            return None
        node = self.nodes.get(str((pod.get("spec") or {}).get("nodeName") or ""))
        if node is None or not node.running or not node.registered:
            return None
        uid = str(pod["metadata"].get("uid", ""))
        loop_now = asyncio.get_running_loop().time()
        run = self.runs.get(uid)
        if pod["metadata"].get("deletionTimestamp"):
            return await self._finish_deleted(pod, node, run)
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            if run is not None and run.pod_ip and not (pod.get("spec") or {}).get("hostNetwork"):
                node.ips.release(run.pod_ip)
                run.pod_ip = ""
            return None
        if run is None:
            run = self.runs[uid] = self._new_run(pod, node, loop_now)
        if not run.started:
            ready_at = run.accepted + self.options.pod_startup
            if loop_now < ready_at:
                await self._write_creating(pod, node, run)
                return ready_at - loop_now
            if not self._start(pod, node, run):
                return 5.0
        wake = self._advance(pod, run, loop_now)
        status = self._status(pod, node, run)
        if status["phase"] in ("Succeeded", "Failed") and run.pod_ip:
            node.ips.release(run.pod_ip)
        if not await self._write_status(pod, run, status):
            return None
        return wake

    async def _write_creating(self, pod: Obj, node: SimulatedNode, run: _PodRun) -> None:
        """Pending with containers being created, as the kubelet reports a starting pod."""
        if run.written is not None:
            return
        spec = pod.get("spec") or {}
        inits = [st.ContainerRun(str(c.get("name")), waiting_reason="PodInitializing")
                 for c in spec.get("initContainers") or []]
        waiting_reason = "PodInitializing" if inits else "ContainerCreating"
        runs = [st.ContainerRun(str(c.get("name")), waiting_reason=waiting_reason)
                for c in spec.get("containers") or []]
        run.start_time = st.now_time()
        status = st.pod_status(pod, inits, runs, host_ip=node.facts.internal_ip, pod_ip="",
                               start_time=run.start_time, sandbox_ready=False)
        await self._write_status(pod, run, status)

    # -- running ----------------------------------------------------------------------------

    async def _work(self, queue: WorkQueue, sync: Any) -> None:
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            try:
                again = await sync(key)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.log(logging.DEBUG if isinstance(err, StatusError) and err.code == 409
                        else logging.WARNING, "simulated kubelet: syncing %s failed: %s",
                        key, err, exc_info=not isinstance(err, StatusError))
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
                if again is not None:
                    queue.add_after(key, again)
            finally:
                queue.done(key)

    async def _sync_node(self, name: str) -> float | None:
        node = self.nodes.get(name)
        return None if node is None else await node.sync()

    async def run(self) -> None:
        """Run every node until cancelled."""
        self.node_informer.start()
        self.pod_informer.start()
        await asyncio.gather(self.node_informer.wait_synced(), self.pod_informer.wait_synced())
        for node in self.nodes.values():
            if not node.running:
                node.start()
        tasks = [asyncio.create_task(self._work(self.nodes_queue, self._sync_node))
                 for _ in range(self.options.node_workers)]
        tasks += [asyncio.create_task(self._work(self.pod_queue, self.sync_pod))
                  for _ in range(self.options.pod_workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            self.nodes_queue.shutdown()
            self.pod_queue.shutdown()
            await cancel_and_wait(tasks)
            await self.pod_informer.stop()
            await self.node_informer.stop()


DEFAULT_POD_CIDR_BASE = "10.42.0.0/16"  # k3s's cluster CIDR: 256 nodes of a /24 each
LARGE_POOL_POD_CIDR_BASE = "100.64.0.0/10"  # room for 16,384 nodes of a /24 each


def default_pod_cidr_base(count: int) -> str:
    """The default pod network for `count` nodes: k3s's while every node gets a /24 from
    it, else a larger one, so that a node can hold its `pods` capacity (a /29 slice of
    the /16 would run out of addresses after six pods)."""
    return DEFAULT_POD_CIDR_BASE if count <= 256 else LARGE_POOL_POD_CIDR_BASE


def simulated_pool(client: Client, count: int, *, name_prefix: str = "kubi-sim-",
                   cpu: str = "32", memory: str = "256Gi", pods: int = 110,
                   heartbeat: float = 10.0, pod_startup: float = 0.0,
                   job_duration: float = 1.0, pod_cidr_base: str | None = None,
                   **extra: Any) -> SimulatedNodes:
    """A pool of `count` nodes named `<prefix>0`…; `run()` it. Extra keywords set
    `SimulationOptions` fields (lease_duration, restart_backoff, pod_workers…)."""
    options = SimulationOptions(cpu=cpu, memory=memory, pods=pods, heartbeat=heartbeat,
                                pod_startup=pod_startup, job_duration=job_duration, **extra)
    pool = SimulatedNodes(client, options)
    base = pod_cidr_base or default_pod_cidr_base(count)
    for index in range(count):
        pool.add_node(f"{name_prefix}{index}", index, pod_cidr(base, index, count))
    return pool


async def run_simulated_nodes(client: Client, count: int, *, name_prefix: str = "kubi-sim-",
                              cpu: str = "32", memory: str = "256Gi", pods: int = 110,
                              heartbeat: float = 10.0, pod_startup: float = 0.0,
                              job_duration: float = 1.0,
                              pod_cidr_base: str | None = None) -> None:
    """Register `count` simulated nodes and run them until cancelled."""
    await simulated_pool(client, count, name_prefix=name_prefix, cpu=cpu, memory=memory,
                         pods=pods, heartbeat=heartbeat, pod_startup=pod_startup,
                         job_duration=job_duration, pod_cidr_base=pod_cidr_base).run()


def node_slot(name: str, slots: int = 256) -> int:
    """A stable index for a node known only by name (a lone agent picks its range)."""
    return zlib.crc32(name.encode()) % slots


async def run_simulated_node(client: Client, name: str, *, index: int | None = None,
                             pod_cidr_base: str = "10.42.0.0/16",
                             options: SimulationOptions | None = None) -> None:
    """One simulated node on its own (`kubi agent --runtime simulated`): it watches only
    its own Node and the pods bound to it."""
    slot = node_slot(name) if index is None else index
    pool = SimulatedNodes(client, options, pod_field_selector=f"spec.nodeName={name}",
                          node_field_selector=f"metadata.name={name}")
    pool.add_node(name, slot, pod_cidr(pod_cidr_base, slot, 256))
    await pool.run()


