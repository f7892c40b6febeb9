"""PodTopologySpread: DoNotSchedule constraints filter (skew of matching pods across
domains may not exceed maxSkew); ScheduleAnyway constraints score (weight 2).

Kubi applies no system-default constraints (upstream spreads Service/ReplicaSet pods
by default); only the pod's own constraints count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from kubi.api.taints import tolerated
from kubi.scheduler.framework import (
    ASSIGNED_POD_ADD,
    ASSIGNED_POD_DELETE,
    ASSIGNED_POD_UPDATE,
    LABEL_HOSTNAME,
    MAX_NODE_SCORE,
    NODE_ADD,
    NODE_DELETE,
    NODE_LABEL,
    NODE_TAINT,
    CycleState,
    NodeCheck,
    NodeInfo,
    Plugin,
    PodInfo,
    ScoreSpec,
    Status,
    compile_selector,
    required_node_matcher,
    unresolvable,
    unschedulable,
)

ERR_REASON_CONSTRAINTS = "node(s) didn't match pod topology spread constraints"
ERR_REASON_NODE_LABEL = ERR_REASON_CONSTRAINTS + " (missing required label)"


class Constraint:
    __slots__ = ("honor_affinity", "honor_taints", "max_skew", "min_domains", "selector",
                 "topology_key")

    def __init__(self, raw: dict[str, Any], pod: PodInfo) -> None:
        self.topology_key: str = raw.get("topologyKey") or ""
        self.max_skew = int(raw.get("maxSkew") or 1)
        self.min_domains = int(raw.get("minDomains") or 1)
        extra = [(key, "In", [pod.labels[key]]) for key in raw.get("matchLabelKeys") or []
                 if key in pod.labels and raw.get("labelSelector") is not None]
        self.selector = compile_selector(raw.get("labelSelector"), extra=extra)
        self.honor_affinity = (raw.get("nodeAffinityPolicy") or "Honor") == "Honor"
        self.honor_taints = (raw.get("nodeTaintsPolicy") or "Ignore") == "Honor"


def constraints_of(pod: PodInfo, action: str) -> list[Constraint]:
    return [Constraint(c, pod) for c in pod.spec.get("topologySpreadConstraints") or []
            if c.get("whenUnsatisfiable", "DoNotSchedule") == action]


def _node_included(constraint: Constraint, node: NodeInfo, pod: PodInfo,
                   affinity: Callable[[NodeInfo], bool] | None) -> bool:
    if constraint.honor_affinity and affinity is not None and not affinity(node):
        return False
    return not (constraint.honor_taints and any(
        not tolerated(pod.tolerations, t) for t in node.hard_taints))


def _has_all_keys(labels: Mapping[str, str], constraints: list[Constraint]) -> bool:
    return all(c.topology_key in labels for c in constraints)


def _matching_pods_per_node(pod: PodInfo, constraint: Constraint,
                            pods: list[PodInfo]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for other in pods:
        if not other.terminating and constraint.selector(other.labels):
            counts[other.node_name] = counts.get(other.node_name, 0) + 1
    return counts


class PodTopologySpread(Plugin):
    name = "PodTopologySpread"
    weight = 2
    events = frozenset({NODE_ADD, NODE_DELETE, NODE_LABEL, NODE_TAINT, ASSIGNED_POD_ADD,
                        ASSIGNED_POD_UPDATE, ASSIGNED_POD_DELETE})

    def pre_filter(self, state: CycleState, pod: PodInfo) -> NodeCheck | Status | None:
        constraints = constraints_of(pod, "DoNotSchedule")
        if not constraints:
            return None
        affinity = required_node_matcher(pod.spec)
        namespace_pods = list(self.cluster.pods_in_namespace(pod.namespace))
        # Per constraint: matching pods per topology value over eligible nodes.
        value_counts: list[dict[str, int]] = [{} for _ in constraints]
        per_node = [_matching_pods_per_node(pod, c, namespace_pods) for c in constraints]
        for node in self.cluster.node_list():
            if not _has_all_keys(node.labels, constraints):
                continue
            for index, constraint in enumerate(constraints):
                if not _node_included(constraint, node, pod, affinity):
                    continue
                value = node.labels[constraint.topology_key]
                counts = value_counts[index]
                counts[value] = counts.get(value, 0) + per_node[index].get(node.name, 0)
        minimums = []
        for index, constraint in enumerate(constraints):
            counts = value_counts[index]
            lowest = min(counts.values()) if counts else math.inf
            if len(counts) < constraint.min_domains:
                lowest = 0
            minimums.append(lowest)
        self_match = [1 if c.selector(pod.labels) else 0 for c in constraints]
        missing_label = unresolvable(ERR_REASON_NODE_LABEL)
        violated = unschedulable(ERR_REASON_CONSTRAINTS)
        missing_label.plugin = violated.plugin = self.name

        def check(node: NodeInfo) -> Status | None:
            labels = node.labels
            for index, constraint in enumerate(constraints):
                value = labels.get(constraint.topology_key)
                if value is None:
                    return missing_label
                matched = value_counts[index].get(value, 0)
                if matched + self_match[index] - minimums[index] > constraint.max_skew:
                    return violated
            return None

        return NodeCheck(per_node=check)

    def pre_score(self, state: CycleState, pod: PodInfo,
                  nodes: list[NodeInfo]) -> ScoreSpec | None:
        constraints = constraints_of(pod, "ScheduleAnyway")
        if not constraints:
            return None
        ignored = {n.name for n in nodes if not _has_all_keys(n.labels, constraints)}
        domains: list[set[str]] = [set() for _ in constraints]
        for node in nodes:
            if node.name in ignored:
                continue
            for index, constraint in enumerate(constraints):
                if constraint.topology_key != LABEL_HOSTNAME:
                    domains[index].add(node.labels[constraint.topology_key])
        weights = []
        for index, constraint in enumerate(constraints):
            size = (len(nodes) - len(ignored) if constraint.topology_key == LABEL_HOSTNAME
                    else len(domains[index]))
            weights.append(math.log(size + 2))
        namespace_pods = list(self.cluster.pods_in_namespace(pod.namespace))
        per_node = [_matching_pods_per_node(pod, c, namespace_pods) for c in constraints]
        affinity = required_node_matcher(pod.spec)
        value_counts: list[dict[str, int]] = [dict.fromkeys(d, 0) for d in domains]
        for node in self.cluster.node_list():
            if not _has_all_keys(node.labels, constraints):
                continue
            for index, constraint in enumerate(constraints):
                if constraint.topology_key == LABEL_HOSTNAME:
                    continue
                if not _node_included(constraint, node, pod, affinity):
                    continue
                value = node.labels[constraint.topology_key]
                if value in value_counts[index]:
                    value_counts[index][value] += per_node[index].get(node.name, 0)
        raw: list[int | None] = []
        for node in nodes:
            if node.name in ignored:
                raw.append(None)
                continue
            score = 0.0
            for index, constraint in enumerate(constraints):
                if constraint.topology_key == LABEL_HOSTNAME:
                    count = per_node[index].get(node.name, 0)
                else:
                    count = value_counts[index][node.labels[constraint.topology_key]]
                score += count * weights[index] + (constraint.max_skew - 1)
            raw.append(math.floor(score + 0.5))  # Go's math.Round
        valid = [s for s in raw if s is not None]
        lowest = min(valid, default=0)
        highest = max(valid, default=0)
        scores = []
        for raw_score in raw:
            if raw_score is None:
                scores.append(0)
            elif highest == 0:
                scores.append(MAX_NODE_SCORE)
            else:
                scores.append(MAX_NODE_SCORE * (highest + lowest - raw_score) // highest)
        return ScoreSpec(scores=scores)
