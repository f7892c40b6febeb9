"""NodeName: a pod that names its node fits only there."""

from __future__ import annotations

from kubi.scheduler.framework import (
    NODE_ADD,
    CycleState,
    NodeCheck,
    Plugin,
    PodInfo,
    Status,
    unresolvable,
)

ERR_REASON = "node(s) didn't match the requested node name"


class NodeName(Plugin):
    name = "NodeName"
    events = frozenset({NODE_ADD})

    def pre_filter(self, state: CycleState, pod: PodInfo) -> NodeCheck | Status | None:
        wanted = pod.spec.get("nodeName")
        if not wanted:
            return None
        status = unresolvable(ERR_REASON)
        status.plugin = self.name
        return NodeCheck(allowed={wanted}, outside=status)
