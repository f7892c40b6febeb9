"""NodePorts: a pod's host ports must be free on the node (0.0.0.0 conflicts with any IP)."""

from __future__ import annotations

from kubi.scheduler.framework import (
    ASSIGNED_POD_DELETE,
    NODE_ADD,
    CycleState,
    NodeCheck,
    NodeInfo,
    Plugin,
    PodInfo,
    Status,
    unschedulable,
)

ERR_REASON = "node(s) didn't have free ports for the requested pod ports"
ANY_IP = "0.0.0.0"


class NodePorts(Plugin):
    name = "NodePorts"
    events = frozenset({NODE_ADD, ASSIGNED_POD_DELETE})

    def pre_filter(self, state: CycleState, pod: PodInfo) -> NodeCheck | Status | None:
        wanted = pod.host_ports
        if not wanted:
            return None
        status = unschedulable(ERR_REASON)
        status.plugin = self.name

        def check(node: NodeInfo) -> Status | None:
            used_ports = node.used_ports
            if not used_ports:
                return None
            for ip, protocol, port in wanted:
                used = used_ports.get((protocol, port))
                if used and (ip == ANY_IP or ANY_IP in used or ip in used):
                    return status
            return None

        return NodeCheck(per_node=check)
