"""NodeResourcesFit (filter + LeastAllocated score, weight 1) and
NodeResourcesBalancedAllocation (score, weight 1).

Both depend only on the node's resource state and the pod's requests, so the
framework memoises them per (node state, pod requests).
"""

from __future__ import annotations

import math

from kubi.scheduler.framework import (
    ASSIGNED_POD_DELETE,
    ASSIGNED_POD_UPDATE,
    MAX_NODE_SCORE,
    NODE_ADD,
    NODE_ALLOCATABLE,
    CycleState,
    NodeCheck,
    NodeInfo,
    Plugin,
    PodInfo,
    ScoreSpec,
    Status,
    unschedulable,
)


def fit_reasons(pod: PodInfo, node: NodeInfo) -> list[str]:
    """Upstream fitsRequest: every resource the node lacks, in upstream's order."""
    reasons: list[str] = []
    allocatable = node.allocatable
    requested = node.requested
    if len(node.pods) + 1 > allocatable.pods:
        reasons.append("Too many pods")
    want = pod.requests
    if not (want.cpu or want.memory or want.ephemeral or want.scalars):
        return reasons
    if want.cpu > 0 and want.cpu > allocatable.cpu - requested.cpu:
        reasons.append("Insufficient cpu")
    if want.memory > 0 and want.memory > allocatable.memory - requested.memory:
        reasons.append("Insufficient memory")
    if want.ephemeral > 0 and want.ephemeral > allocatable.ephemeral - requested.ephemeral:
        reasons.append("Insufficient ephemeral-storage")
    for name, amount in sorted(want.scalars.items()):
        if amount and amount > (allocatable.scalars.get(name, 0)
                                - requested.scalars.get(name, 0)):
            reasons.append(f"Insufficient {name}")
    return reasons


def least_requested_score(requested: int, capacity: int) -> int:
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * MAX_NODE_SCORE // capacity


def least_allocated(pod: PodInfo, node: NodeInfo) -> int:
    """LeastAllocated over cpu and memory (weights 1), with non-zero request defaults."""
    total = weights = 0
    for capacity, requested in (
            (node.allocatable.cpu, node.non_zero.cpu + pod.non_zero.cpu),
            (node.allocatable.memory, node.non_zero.memory + pod.non_zero.memory)):
        if capacity == 0:
            continue
        total += least_requested_score(requested, capacity)
        weights += 1
    return total // weights if weights else 0


def balanced_allocation(pod: PodInfo, node: NodeInfo) -> int:
    """1 - the standard deviation of the cpu and memory fractions, times 100."""
    fractions = []
    for capacity, requested in (
            (node.allocatable.cpu, node.requested.cpu + pod.requests.cpu),
            (node.allocatable.memory, node.requested.memory + pod.requests.memory)):
        if capacity == 0:
            continue
        fractions.append(min(requested / capacity, 1.0))
    deviation = 0.0
    if len(fractions) == 2:
        deviation = abs((fractions[0] - fractions[1]) / 2)
    elif len(fractions) > 2:
        mean = sum(fractions) / len(fractions)
        deviation = math.sqrt(sum((f - mean) ** 2 for f in fractions) / len(fractions))
    return int((1 - deviation) * MAX_NODE_SCORE)


class NodeResourcesFit(Plugin):
    name = "NodeResourcesFit"
    weight = 1
    events = frozenset({NODE_ADD, NODE_ALLOCATABLE, ASSIGNED_POD_DELETE, ASSIGNED_POD_UPDATE})

    def pre_filter(self, state: CycleState, pod: PodInfo) -> NodeCheck | Status | None:
        plugin = self.name

        def judge(node: NodeInfo) -> Status | None:
            reasons = fit_reasons(pod, node)
            if not reasons:
                return None
            status = unschedulable(*reasons)
            status.plugin = plugin
            return status

        return NodeCheck(by_state=judge, state_key=pod.request_signature)

    def pre_score(self, state: CycleState, pod: PodInfo,
                  nodes: list[NodeInfo]) -> ScoreSpec | None:
        return ScoreSpec(by_state=lambda node: least_allocated(pod, node),
                         state_key=pod.request_signature)


class NodeResourcesBalancedAllocation(Plugin):
    name = "NodeResourcesBalancedAllocation"
    weight = 1
    events = frozenset({NODE_ADD, NODE_ALLOCATABLE, ASSIGNED_POD_DELETE, ASSIGNED_POD_UPDATE})

    def pre_score(self, state: CycleState, pod: PodInfo,
                  nodes: list[NodeInfo]) -> ScoreSpec | None:
        return ScoreSpec(by_state=lambda node: balanced_allocation(pod, node),
                         state_key=pod.request_signature)
