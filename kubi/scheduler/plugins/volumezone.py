"""VolumeZone (basic): a bound volume labelled with a zone or region only fits nodes
in that zone or region (a label value may list several, separated by `__`)."""

from __future__ import annotations

from kubi.scheduler.framework import (
    NODE_ADD,
    NODE_LABEL,
    PV_CHANGE,
    PVC_CHANGE,
    CycleState,
    NodeCheck,
    NodeInfo,
    Plugin,
    PodInfo,
    Status,
    unresolvable,
)
from kubi.scheduler.plugins.volumebinding import pod_claim_names

ERR_REASON = "node(s) had no available volume zone"
TOPOLOGY_LABELS = ("topology.kubernetes.io/zone", "topology.kubernetes.io/region",
                   "failure-domain.beta.kubernetes.io/zone",
                   "failure-domain.beta.kubernetes.io/region")


class VolumeZone(Plugin):
    name = "VolumeZone"
    events = frozenset({NODE_ADD, NODE_LABEL, PV_CHANGE, PVC_CHANGE})

    def pre_filter(self, state: CycleState, pod: PodInfo) -> NodeCheck | Status | None:
        names = pod_claim_names(pod)
        if not names:
            return None
        claims_of = self.cluster.lister("persistentvolumeclaims")
        volumes_of = self.cluster.lister("persistentvolumes")
        wanted: list[tuple[str, frozenset[str]]] = []
        for claim_name, _ephemeral in names:
            pvc = claims_of(f"{pod.namespace}/{claim_name}")
            volume_name = ((pvc or {}).get("spec") or {}).get("volumeName")
            pv = volumes_of(volume_name) if volume_name else None
            if pv is None:
                continue  # unbound or missing: VolumeBinding's business
            labels = (pv.get("metadata") or {}).get("labels") or {}
            for key in TOPOLOGY_LABELS:
                if key in labels:
                    wanted.append((key, frozenset(labels[key].split("__"))))
        if not wanted:
            return None
        status = unresolvable(ERR_REASON)
        status.plugin = self.name

        def check(node: NodeInfo) -> Status | None:
            for key, values in wanted:
                if node.labels.get(key) not in values:
                    return status
            return None

        return NodeCheck(per_node=check)
