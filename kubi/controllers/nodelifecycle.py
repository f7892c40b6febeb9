"""Node lifecycle: upstream's pkg/controller/nodelifecycle plus the taint-eviction controller.

- Health: a node's heartbeat is its kube-node-lease Lease renewTime or its Ready
  condition's lastHeartbeatTime, timed on this controller's clock when either changes.
  Silent longer than `node_monitor_grace_period` -> Ready, MemoryPressure, DiskPressure,
  PIDPressure become Unknown ("Kubelet stopped posting node status."), a NodeNotReady
  event is recorded and the node's pods get Ready=False.
- Taints: NoSchedule taints mirror conditions (not-ready, unreachable, memory/disk/pid
  pressure, network-unavailable) and spec.unschedulable; NoExecute not-ready/unreachable
  follow Ready=False/Unknown, added at upstream's per-zone rate (none at all when every
  zone is fully disrupted), removed as soon as the node is Ready again.
- Taint eviction: a pod on a node with NoExecute taints it does not tolerate is deleted at
  once; one tolerating them for tolerationSeconds is deleted that long after the taint
  was first seen, unless the taints go away first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.api.taints import tolerates
from kubi.client.events import NORMAL, WARNING, EventRecorder
from kubi.client.informer import key_of, split_key
from kubi.controllers.base import Controller, ControllerContext

log = logging.getLogger("kubi.controllers.nodelifecycle")

Obj = dict[str, Any]

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
NODE_LEASE_NAMESPACE = "kube-node-lease"
EXCLUDE_DISRUPTION_LABEL = "node.kubernetes.io/exclude-disruption"
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
POD_PREFIX = "pod:"

# Upstream kube-controller-manager defaults.
NODE_MONITOR_PERIOD = 5.0
EVICTION_RATE = 0.1  # --node-eviction-rate: nodes tainted per second per zone
SECONDARY_EVICTION_RATE = 0.01
LARGE_CLUSTER_THRESHOLD = 50
UNHEALTHY_ZONE_THRESHOLD = 0.55

CONDITION_TAINTS: dict[str, dict[str, str]] = {
    "Ready": {"False": NOT_READY, "Unknown": UNREACHABLE},
    "MemoryPressure": {"True": "node.kubernetes.io/memory-pressure"},
    "DiskPressure": {"True": "node.kubernetes.io/disk-pressure"},
    "NetworkUnavailable": {"True": "node.kubernetes.io/network-unavailable"},
    "PIDPressure": {"True": "node.kubernetes.io/pid-pressure"},
}
CONDITION_TAINT_KEYS = {key for taints in CONDITION_TAINTS.values() for key in taints.values()}
KUBELET_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")

NORMAL_ZONE, PARTIAL, FULL = "Normal", "PartialDisruption", "FullDisruption"


# -- pure helpers ----------------------------------------------------------------------------


def get_condition(node: Obj, condition_type: str) -> Obj | None:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == condition_type:
            return condition
    return None


def ready_status(node: Obj) -> str:
    condition = get_condition(node, "Ready")
    return str(condition.get("status")) if condition else "Unknown"


def matching_tolerations(taints: list[Obj], tolerations: list[Obj]) -> tuple[bool, list[Obj]]:
    """(all taints tolerated, the toleration used for each)."""
    used = []
    for taint in taints:
        found = next((t for t in tolerations if isinstance(t, dict) and tolerates(t, taint)),
                     None)
        if found is None:
            return False, []
        used.append(found)
    return True, used


def min_toleration_seconds(used: list[Obj]) -> float:
    """The shortest tolerationSeconds; -1 when every one tolerates forever."""
    if not used:
        return 0.0
    shortest: float | None = None
    for toleration in used:
        seconds = toleration.get("tolerationSeconds")
        if seconds is None:
            continue
        if seconds <= 0:
            return 0.0
        shortest = seconds if shortest is None else min(shortest, seconds)
    return -1.0 if shortest is None else float(shortest)


def no_schedule_taints(node: Obj) -> list[Obj]:
    """The NoSchedule taints the node's conditions and spec.unschedulable call for."""
    wanted = []
    for condition in (node.get("status") or {}).get("conditions") or []:
        key = CONDITION_TAINTS.get(str(condition.get("type")), {}).get(
            str(condition.get("status")))
        if key:
            wanted.append({"key": key, "effect": "NoSchedule"})
    if (node.get("spec") or {}).get("unschedulable"):
        wanted.append({"key": UNSCHEDULABLE, "effect": "NoSchedule"})
    return wanted


def zone_of(node: Obj) -> str:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return f"{labels.get(REGION_LABEL, '')}:\x00:{labels.get(ZONE_LABEL, '')}"


def zone_state(ready_statuses: list[str]) -> str:
    """Upstream's ComputeZoneState."""
    ready = sum(1 for s in ready_statuses if s == "True")
    not_ready = len(ready_statuses) - ready
    if ready == 0 and not_ready > 0:
        return FULL
    if not_ready > 2 and not_ready / len(ready_statuses) >= UNHEALTHY_ZONE_THRESHOLD:
        return PARTIAL
    return NORMAL_ZONE


def mark_unknown(node: Obj, now: str) -> Obj | None:
    """The node's status with the kubelet's conditions Unknown, or None if already so."""
    status = m.deep_copy(node.get("status") or {})
    conditions: list[Obj] = status.setdefault("conditions", [])
    changed = False
    created = str((node.get("metadata") or {}).get("creationTimestamp") or now)
    for condition_type in KUBELET_CONDITIONS:
        condition = next((c for c in conditions if c.get("type") == condition_type), None)
        if condition is None:
            conditions.append({"type": condition_type, "status": "Unknown",
                               "reason": "NodeStatusNeverUpdated",
                               "message": "Kubelet never posted node status.",
                               "lastHeartbeatTime": created, "lastTransitionTime": now})
            changed = True
        elif condition.get("status") != "Unknown":
            condition.update({"status": "Unknown", "reason": "NodeStatusUnknown",
                              "message": "Kubelet stopped posting node status.",
                              "lastTransitionTime": now})
            changed = True
    return status if changed else None


def pod_not_ready_status(pod: Obj, now: str) -> Obj | None:
    """MarkPodsNotReady for one pod: its status with Ready=False, or None if no change."""
    status = m.deep_copy(pod.get("status") or {})
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            if condition.get("status") == "False":
                return None
            condition["status"] = "False"
            condition["lastTransitionTime"] = now
            return status
    return None


class TokenBucket:
    """client-go's token-bucket rate limiter (burst 1): may we act now?"""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = 1.0
        self.stamp = time.monotonic()

    def set_rate(self, rate: float) -> None:
        self._refill()
        self.rate = rate

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(1.0, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def try_take(self) -> bool:
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_time(self) -> float:
        self._refill()
        return NODE_MONITOR_PERIOD if self.rate <= 0 else (1.0 - self.tokens) / self.rate


@dataclass
class NodeHealth:
    probe: float  # controller clock when a heartbeat was last seen
    heartbeat: str = ""  # Ready.lastHeartbeatTime seen last
    ready: str = ""  # Ready.status seen last
    renew_time: str = ""  # Lease renewTime seen last
    pods_to_mark: bool = False  # MarkPodsNotReady still owed


@dataclass
class ScheduledEviction:
    uid: str
    created: float
    fire_at: float = 0.0


@dataclass
class _Zones:
    states: dict[str, str] = field(default_factory=dict)
    limiters: dict[str, TokenBucket] = field(default_factory=dict)


def _node_name_index(pod: Obj) -> list[str]:
    name = (pod.get("spec") or {}).get("nodeName")
    return [str(name)] if name else []


class NodeLifecycleController(Controller):
    name = "nodelifecycle"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.grace = float(ctx.options.node_monitor_grace_period)
        self.monitor_period = min(NODE_MONITOR_PERIOD, max(self.grace / 4, 0.1))
        self.nodes = ctx.informers.informer("nodes")
        self.leases = ctx.informers.informer("leases.coordination.k8s.io",
                                             NODE_LEASE_NAMESPACE)
        self.pods = ctx.informers.informer("pods")
        self.pods.cache.add_indexer("nodelifecycle:nodeName", _node_name_index)
        self.node_recorder = EventRecorder(self.client, "node-controller")
        self.taint_recorder = EventRecorder(self.client, "taint-eviction-controller")
        self.health: dict[str, NodeHealth] = {}
        self.evictions: dict[str, ScheduledEviction] = {}
        self.zones = _Zones()
        self.nodes.add_handlers(self._node_added, self._node_updated, self._node_deleted)
        self.leases.add_handlers(self._lease_changed, lambda _old, new: self._lease_changed(new))
        self.pods.add_handlers(self._pod_changed, self._pod_updated, self._pod_deleted)

    # -- informer handlers ------------------------------------------------------------------

    def _now(self) -> float:
        return time.monotonic()

    def _observe(self, node: Obj) -> NodeHealth:
        """Move the probe time when the Ready heartbeat changed (upstream's nodeHealthMap)."""
        name = str(node["metadata"]["name"])
        ready = get_condition(node, "Ready") or {}
        heartbeat = str(ready.get("lastHeartbeatTime") or "")
        status = str(ready.get("status") or "")
        health = self.health.get(name)
        if health is None:
            health = self.health[name] = NodeHealth(self._now(), heartbeat, status)
        elif heartbeat != health.heartbeat or status != health.ready:
            # The controller's own Unknown keeps the old heartbeat: no probe update then.
            if heartbeat != health.heartbeat:
                health.probe = self._now()
            health.heartbeat, health.ready = heartbeat, status
        return health

    def _node_added(self, node: Obj) -> None:
        self._observe(node)
        self.enqueue(node)

    def _node_updated(self, old: Obj, new: Obj) -> None:
        self._observe(new)
        self.enqueue(new)
        if self._no_execute(old) != self._no_execute(new):
            for pod in self.pods.cache.by_index("nodelifecycle:nodeName",
                                                new["metadata"]["name"]):
                self.queue.add(POD_PREFIX + key_of(pod))

    def _node_deleted(self, node: Obj) -> None:
        name = str(node["metadata"]["name"])
        self.health.pop(name, None)
        for pod in self.pods.cache.by_index("nodelifecycle:nodeName", name):
            self.queue.add(POD_PREFIX + key_of(pod))

    def _lease_changed(self, lease: Obj) -> None:
        name = str(lease["metadata"]["name"])
        renew = str((lease.get("spec") or {}).get("renewTime") or "")
        health = self.health.get(name)
        if health is None:
            node = self.nodes.cache.get(name)
            if node is None:
                return
            health = self._observe(node)
        if renew and renew > health.renew_time:  # RFC 3339 in UTC sorts by time
            health.renew_time = renew
            health.probe = self._now()
            if self._needs_attention(name):
                self.queue.add(name)

    def _needs_attention(self, name: str) -> bool:
        node = self.nodes.cache.get(name)
        return node is not None and (ready_status(node) != "True" or bool(self._no_execute(node)))

    def _pod_changed(self, pod: Obj) -> None:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            return
        node = self.nodes.cache.get(str(node_name))
        if key_of(pod) in self.evictions or (node is not None and self._no_execute(node)):
            self.queue.add(POD_PREFIX + key_of(pod))

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
        if old_spec.get("nodeName") != new_spec.get("nodeName") or \
                old_spec.get("tolerations") != new_spec.get("tolerations") or \
                key_of(new) in self.evictions:
            self._pod_changed(new)

    def _pod_deleted(self, pod: Obj) -> None:
        self.evictions.pop(key_of(pod), None)

    @staticmethod
    def _no_execute(node: Obj) -> list[Obj]:
        return [t for t in (node.get("spec") or {}).get("taints") or []
                if isinstance(t, dict) and t.get("effect") == "NoExecute"]

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        monitor = asyncio.create_task(self._monitor_zones())
        try:
            await super().run()
        finally:
            monitor.cancel()

    async def _monitor_zones(self) -> None:
        """Upstream's handleDisruption: zone states decide the NoExecute tainting rate."""
        await self.ctx.informers.wait_synced()
        while True:
            self._update_zones()
            await asyncio.sleep(self.monitor_period)

    def _update_zones(self) -> None:
        by_zone: dict[str, list[str]] = {}
        for node in self.nodes.cache.list():
            labels = (node.get("metadata") or {}).get("labels") or {}
            if EXCLUDE_DISRUPTION_LABEL in labels:
                continue
            by_zone.setdefault(zone_of(node), []).append(ready_status(node))
        states = {zone: zone_state(statuses) for zone, statuses in by_zone.items()}
        all_full = bool(states) and all(s == FULL for s in states.values())
        for zone, state in states.items():
            limiter = self.zones.limiters.setdefault(zone, TokenBucket(EVICTION_RATE))
            if all_full:
                limiter.set_rate(0.0)
            elif state == PARTIAL:
                large = len(by_zone[zone]) > LARGE_CLUSTER_THRESHOLD
                limiter.set_rate(SECONDARY_EVICTION_RATE if large else 0.0)
            else:
                limiter.set_rate(EVICTION_RATE)
        changed = states != self.zones.states
        self.zones.states = states
        if changed:
            for node in self.nodes.cache.list():
                self.enqueue(node)

    def _all_zones_fully_disrupted(self) -> bool:
        states = self.zones.states
        return bool(states) and all(s == FULL for s in states.values())

    async def reconcile(self, key: str) -> float | None:
        if key.startswith(POD_PREFIX):
            return await self._reconcile_pod(key[len(POD_PREFIX):])
        return await self._reconcile_node(key)

    # -- nodes --------------------------------------------------------------------------------

    async def _reconcile_node(self, name: str) -> float | None:
        node = self.nodes.cache.get(name)
        if node is None:
            self.health.pop(name, None)
            return None
        health = self._observe(node)
        observed_ready = ready_status(node) if get_condition(node, "Ready") else ""
        stamp = m.rfc3339(m.now())
        silent_for = self._now() - health.probe
        if silent_for > self.grace:
            unknown = mark_unknown(node, stamp)
            if unknown is not None:
                updated = m.deep_copy(node)
                updated["status"] = unknown
                node = await self.client.update_status("nodes", updated)
                health.ready = "Unknown"
                if observed_ready == "True":
                    await self.node_recorder.event(
                        node, NORMAL, "NodeNotReady", f"Node {name} status is now: NodeNotReady")
                    health.pods_to_mark = True
        current_ready = ready_status(node)
        if current_ready == "True":
            health.pods_to_mark = False
        elif health.pods_to_mark:
            health.pods_to_mark = not await self._mark_pods_not_ready(name)

        wait = await self._reconcile_taints(node, current_ready)
        if current_ready == "True" or silent_for <= self.grace:
            until_stale = self.grace - silent_for + 0.01
            wait = until_stale if wait is None else min(wait, until_stale)
        if health.pods_to_mark:
            wait = self.monitor_period if wait is None else min(wait, self.monitor_period)
        return max(wait, 0.01) if wait is not None else None

    async def _mark_pods_not_ready(self, node_name: str) -> bool:
        stamp = m.rfc3339(m.now())
        done = True
        for pod in self.pods.cache.by_index("nodelifecycle:nodeName", node_name):
            status = pod_not_ready_status(pod, stamp)
            if status is None:
                continue
            updated = dict(pod)
            updated["status"] = status
            try:
                await self.client.update_status("pods", updated)
            except StatusError as err:
                if err.code != 404:
                    done = False
                continue
            await self.node_recorder.event(pod, WARNING, "NodeNotReady", "Node is not ready")
        return done

    async def _reconcile_taints(self, node: Obj, ready: str) -> float | None:
        """Both tainting passes in one write; seconds until a rate-limited taint may go on."""
        taints = [dict(t) for t in (node.get("spec") or {}).get("taints") or []
                  if isinstance(t, dict)]
        stamp = m.rfc3339(m.now())
        retry: float | None = None

        def has(key: str, effect: str) -> bool:
            return any(t.get("key") == key and t.get("effect") == effect for t in taints)

        # NoSchedule: exactly the condition- and cordon-derived set.
        wanted = no_schedule_taints(node)
        wanted_keys = {t["key"] for t in wanted}
        managed = CONDITION_TAINT_KEYS | {UNSCHEDULABLE}
        new_taints = [t for t in taints if not (
            t.get("effect") == "NoSchedule" and t.get("key") in managed
            and t.get("key") not in wanted_keys)]
        for taint in wanted:
            if not has(taint["key"], "NoSchedule"):
                new_taints.append({**taint, "timeAdded": stamp})

        # NoExecute: follows Ready, added at the zone's rate, removed at once.
        target = {"False": NOT_READY, "Unknown": UNREACHABLE}.get(ready)
        present = [t.get("key") for t in new_taints
                   if t.get("effect") == "NoExecute" and t.get("key") in (NOT_READY, UNREACHABLE)]
        if target is None or self._all_zones_fully_disrupted():
            new_taints = [t for t in new_taints if not (
                t.get("effect") == "NoExecute" and t.get("key") in (NOT_READY, UNREACHABLE))]
        elif target not in present:
            # Swapping one NoExecute taint for the other is immediate, as upstream.
            limiter = self.zones.limiters.setdefault(zone_of(node), TokenBucket(EVICTION_RATE))
            if present or limiter.try_take():
                new_taints = [t for t in new_taints if not (
                    t.get("effect") == "NoExecute" and t.get("key") in (NOT_READY, UNREACHABLE))]
                new_taints.append({"key": target, "effect": "NoExecute", "timeAdded": stamp})
            else:
                retry = limiter.wait_time()

        if new_taints != taints:
            updated = m.deep_copy(node)
            updated.setdefault("spec", {})["taints"] = new_taints
            if not new_taints:
                updated["spec"].pop("taints")
            await self.client.update("nodes", updated)
        return retry

    # -- taint eviction ------------------------------------------------------------------------

    def _cancel(self, key: str) -> ScheduledEviction | None:
        return self.evictions.pop(key, None)

    async def _reconcile_pod(self, key: str) -> float | None:
        pod = self.pods.cache.get(key)
        node_name = str(((pod or {}).get("spec") or {}).get("nodeName") or "")
        node = self.nodes.cache.get(node_name) if node_name else None
        if pod is None or node is None or pod["metadata"].get("deletionTimestamp"):
            self._cancel(key)
            return None
        uid = str(pod["metadata"].get("uid", ""))
        scheduled = self.evictions.get(key)
        if scheduled is not None and scheduled.uid != uid:
            self._cancel(key)
            scheduled = None
        taints = self._no_execute(node)
        if not taints:
            if self._cancel(key) is not None:
                await self._cancelled_event(pod)
            return None
        tolerations = (pod.get("spec") or {}).get("tolerations") or []
        all_tolerated, used = matching_tolerations(taints, tolerations)
        now = self._now()
        if all_tolerated:
            seconds = min_toleration_seconds(used)
            if seconds < 0:
                if self._cancel(key) is not None:
                    await self._cancelled_event(pod)
                return None
            created = scheduled.created if scheduled is not None else now
            fire_at = created + seconds
            if now < fire_at:
                self.evictions[key] = ScheduledEviction(uid, created, fire_at)
                return fire_at - now
        await self._evict(pod)
        self._cancel(key)
        return None

    async def _cancelled_event(self, pod: Obj) -> None:
        await self.taint_recorder.event(pod, NORMAL, "TaintManagerEviction",
                                        f"Cancelling deletion of Pod {key_of(pod)}")

    async def _evict(self, pod: Obj) -> None:
        """Upstream's addConditionAndDeletePod: DisruptionTarget, then delete."""
        namespace, name = split_key(key_of(pod))
        await self.taint_recorder.event(pod, NORMAL, "TaintManagerEviction",
                                        f"Marking for deletion Pod {key_of(pod)}")
        conditions = [c for c in (pod.get("status") or {}).get("conditions") or []
                      if c.get("type") != "DisruptionTarget"]
        conditions.append({"type": "DisruptionTarget", "status": "True",
                           "lastProbeTime": None, "lastTransitionTime": m.rfc3339(m.now()),
                           "reason": "DeletionByTaintManager",
                           "message": "Taint manager: deleting due to NoExecute taint"})
        try:
            await self.client.patch("pods", name, {"status": {"conditions": conditions}},
                                    namespace, subresource="status")
            await self.client.delete("pods", name, namespace)
        except StatusError as err:
            if err.code not in (404, 409):
                raise
