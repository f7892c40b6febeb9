"""The scheduler's view of the cluster: nodes and the pods on them, bound or assumed.

Assume-then-bind: once a node is chosen the pod is added to that node here at once
(assumed), so the next pod sees the reservation while the Binding is in flight; the
informer's update confirms it, a failed Binding forgets it. Indexes (cordoned,
tainted, by label, by namespace, images) let plugins avoid scanning every node.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubi.scheduler.framework import (
    NODE_ADD,
    NODE_ALLOCATABLE,
    NODE_CONDITION,
    NODE_IMAGES,
    NODE_LABEL,
    NODE_TAINT,
    NodeInfo,
    Obj,
    PodInfo,
)

ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
REGION_LABELS = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")


def zone_key(labels: Mapping[str, str]) -> str:
    """Upstream utilnode.GetZoneKey: nodes are listed round-robin across zones."""
    zone = next((labels[k] for k in ZONE_LABELS if labels.get(k)), "")
    region = next((labels[k] for k in REGION_LABELS if labels.get(k)), "")
    return f"{region}:\x00:{zone}" if zone or region else ""


_VIEW_EVENTS = (NODE_LABEL, NODE_TAINT, NODE_ALLOCATABLE, NODE_CONDITION, NODE_IMAGES)


def _scheduling_view(info: NodeInfo) -> tuple[Any, ...]:
    """What of a node matters to scheduling, in _VIEW_EVENTS order."""
    return (info.labels, (info.taints, info.unschedulable), info.allocatable.signature(),
            info.ready, info.images)


class Cache:
    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self._zones: dict[str, list[str]] = {}
        self._zone_of: dict[str, str] = {}
        self._ordered: list[NodeInfo] | None = None
        self.pods: dict[str, PodInfo] = {}
        self.assumed: set[str] = set()
        self._by_namespace: dict[str, dict[str, PodInfo]] = {}
        self._cordoned: set[str] = set()
        self._tainted: set[str] = set()
        self._prefer_tainted: set[str] = set()
        self._by_label: dict[tuple[str, str], set[str]] = {}
        self._affinity_nodes: set[str] = set()
        self._anti_affinity_nodes: set[str] = set()
        self._image_nodes: dict[str, set[str]] = {}
        self._generation = 0
        self.namespaces: dict[str, Mapping[str, str]] = {}
        self.listers: dict[str, Callable[[str], Obj | None]] = {}
        self.lists: dict[str, Callable[[], builtins.list[Obj]]] = {}

    # -- the Cluster protocol (what plugins read) ------------------------------------------

    def node_list(self) -> list[NodeInfo]:
        """Nodes with a Node object, interleaved across zones as upstream's node tree."""
        if self._ordered is None:
            zones = [names for names in self._zones.values() if names]
            ordered: list[NodeInfo] = []
            for index in range(max((len(z) for z in zones), default=0)):
                for names in zones:
                    if index < len(names):
                        ordered.append(self.nodes[names[index]])
            self._ordered = ordered
        return self._ordered

    def node(self, name: str) -> NodeInfo | None:
        info = self.nodes.get(name)
        return info if info is not None and info.node is not None else None

    def namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        return self.namespaces.get(namespace)

    def pods_in_namespace(self, namespace: str) -> Iterable[PodInfo]:
        return self._by_namespace.get(namespace, {}).values()

    def all_namespaces(self) -> builtins.list[str]:
        return builtins.list(self._by_namespace)

    def nodes_with_affinity_pods(self) -> Iterable[NodeInfo]:
        return [self.nodes[n] for n in self._affinity_nodes if self.nodes[n].node is not None]

    def nodes_with_anti_affinity_pods(self) -> Iterable[NodeInfo]:
        return [self.nodes[n] for n in self._anti_affinity_nodes
                if self.nodes[n].node is not None]

    def unschedulable_nodes(self) -> Iterable[NodeInfo]:
        return [self.nodes[n] for n in self._cordoned]

    def tainted_nodes(self) -> Iterable[NodeInfo]:
        return [self.nodes[n] for n in self._tainted]

    def prefer_tainted_nodes(self) -> set[str]:
        return self._prefer_tainted

    def nodes_with_label(self, key: str, value: str) -> set[str]:
        return self._by_label.get((key, value), set())

    def image_node_count(self, image: str) -> int:
        return len(self._image_nodes.get(image, ()))

    def generation(self) -> int:
        return self._generation

    def lister(self, resource: str) -> Callable[[str], Obj | None]:
        return self.listers.get(resource, lambda _key: None)

    def list_objects(self, resource: str) -> builtins.list[Obj]:
        found = self.lists.get(resource)
        return found() if found is not None else []

    # -- nodes -----------------------------------------------------------------------------

    def _index_node(self, info: NodeInfo, present: bool) -> None:
        name = info.name
        for sets, member in ((self._cordoned, info.unschedulable),
                             (self._tainted, bool(info.hard_taints)),
                             (self._prefer_tainted, bool(info.prefer_taints))):
            if present and member:
                sets.add(name)
            else:
                sets.discard(name)
        for pair in info.labels.items():
            if present:
                self._by_label.setdefault(pair, set()).add(name)
            else:
                bucket = self._by_label.get(pair)
                if bucket is not None:
                    bucket.discard(name)
                    if not bucket:
                        del self._by_label[pair]
        for image in info.images:
            if present:
                self._image_nodes.setdefault(image, set()).add(name)
            else:
                holders = self._image_nodes.get(image)
                if holders is not None:
                    holders.discard(name)
                    if not holders:
                        del self._image_nodes[image]

    def set_node(self, node: Obj) -> set[str]:
        """Add or update a node; returns the cluster events the change amounts to."""
        name = node["metadata"]["name"]
        info = self.nodes.get(name)
        if info is None:
            info = self.nodes[name] = NodeInfo(name)
        before = _scheduling_view(info) if info.node is not None else None
        if info.node is not None:
            self._index_node(info, False)
        info.set_node(node)
        self._index_node(info, True)
        zone = zone_key(info.labels)
        if self._zone_of.get(name) != zone:
            self._remove_from_zone(name)
            self._zones.setdefault(zone, []).append(name)
            self._zone_of[name] = zone
            self._ordered = None
        if before is None:
            self._generation += 1
            return {NODE_ADD}
        after = _scheduling_view(info)
        events = {event for event, old, new in zip(_VIEW_EVENTS, before, after, strict=True)
                  if old != new}
        if events - {NODE_ALLOCATABLE, NODE_IMAGES}:
            self._generation += 1  # labels, taints or readiness: plugins' node memos expire
        return events

    def _remove_from_zone(self, name: str) -> None:
        zone = self._zone_of.pop(name, None)
        if zone is not None:
            self._zones[zone].remove(name)
            if not self._zones[zone]:
                del self._zones[zone]
            self._ordered = None

    def remove_node(self, name: str) -> None:
        info = self.nodes.get(name)
        if info is None:
            return
        self._index_node(info, False)
        self._remove_from_zone(name)
        self._generation += 1
        if info.pods:
            # Pods still point at it; keep the accounting until they go (upstream does too).
            info.node = None
        else:
            del self.nodes[name]

    # -- pods ------------------------------------------------------------------------------

    def _place(self, pod: PodInfo) -> None:
        info = self.nodes.get(pod.node_name)
        if info is None:
            info = self.nodes[pod.node_name] = NodeInfo(pod.node_name)
        info.add_pod(pod)
        self.pods[pod.key] = pod
        self._by_namespace.setdefault(pod.namespace, {})[pod.key] = pod
        if info.affinity_pods:
            self._affinity_nodes.add(info.name)
        if info.anti_affinity_pods:
            self._anti_affinity_nodes.add(info.name)

    def _unplace(self, key: str) -> PodInfo | None:
        pod = self.pods.pop(key, None)
        if pod is None:
            return None
        namespace_pods = self._by_namespace.get(pod.namespace)
        if namespace_pods is not None:
            namespace_pods.pop(key, None)
            if not namespace_pods:
                del self._by_namespace[pod.namespace]
        info = self.nodes.get(pod.node_name)
        if info is not None:
            info.remove_pod(key)
            if not info.affinity_pods:
                self._affinity_nodes.discard(info.name)
            if not info.anti_affinity_pods:
                self._anti_affinity_nodes.discard(info.name)
            if info.node is None and not info.pods:
                del self.nodes[info.name]
        return pod

    def assume_pod(self, pod: PodInfo, node_name: str) -> None:
        """Reserve `node_name` for `pod` before the Binding is written."""
        if pod.key in self.pods:
            raise ValueError(f"pod {pod.key} is already in the cache")
        pod.node_name = node_name
        self._place(pod)
        self.assumed.add(pod.key)

    def forget_pod(self, key: str) -> None:
        """The Binding failed: release the reservation."""
        if key in self.assumed:
            self.assumed.discard(key)
            self._unplace(key)

    def is_assumed(self, key: str) -> bool:
        return key in self.assumed

    def add_pod(self, obj: Obj) -> PodInfo:
        """A bound pod from the informer (confirms an assumed one)."""
        pod = PodInfo(obj)
        self.assumed.discard(pod.key)
        self._unplace(pod.key)
        self._place(pod)
        return pod

    def confirm_pod(self, obj: Obj) -> bool:
        """The informer shows an assumed pod bound where we put it: keep its accounting."""
        meta = obj.get("metadata") or {}
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        pod = self.pods.get(key)
        if (pod is None or key not in self.assumed
                or pod.node_name != (obj.get("spec") or {}).get("nodeName")
                or pod.uid != meta.get("uid") or pod.labels != (meta.get("labels") or {})):
            return False
        self.assumed.discard(key)
        pod.obj = obj
        pod.spec = obj.get("spec") or {}
        return True

    def remove_pod(self, key: str) -> PodInfo | None:
        self.assumed.discard(key)
        return self._unplace(key)

    def stats(self) -> dict[str, Any]:
        return {"nodes": len(self.node_list()), "pods": len(self.pods),
                "assumed": len(self.assumed)}
