"""NodeUnschedulable: cordoned nodes (spec.unschedulable) take only pods tolerating
the node.kubernetes.io/unschedulable:NoSchedule taint."""

from __future__ import annotations

from kubi.api.taints import tolerated
from kubi.scheduler.framework import (
    NODE_ADD,
    NODE_TAINT,
    TAINT_UNSCHEDULABLE,
    CycleState,
    NodeCheck,
    Plugin,
    PodInfo,
    Status,
    unresolvable,
)

ERR_REASON = "node(s) were unschedulable"
_UNSCHEDULABLE_TAINT = {"key": TAINT_UNSCHEDULABLE, "effect": "NoSchedule"}


class NodeUnschedulable(Plugin):
    name = "NodeUnschedulable"
    events = frozenset({NODE_ADD, NODE_TAINT})

    def pre_filter(self, state: CycleState, pod: PodInfo) -> NodeCheck | Status | None:
        cordoned = self.cluster.unschedulable_nodes()
        if not cordoned or tolerated(pod.tolerations, _UNSCHEDULABLE_TAINT):
            return None
        status = unresolvable(ERR_REASON)
        status.plugin = self.name
        return NodeCheck(rejected={node.name: status for node in cordoned})
