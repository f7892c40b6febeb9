"""VolumeBinding (basic): a pod's PersistentVolumeClaims must exist; bound claims'
volumes must allow the node; unbound claims are fine only with WaitForFirstConsumer,
and then PreBind records the chosen node on the claim
(volume.kubernetes.io/selected-node) for the provisioner, or reserves a matching
static volume by setting its claimRef.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubi.scheduler.framework import (
    NODE_ADD,
    NODE_LABEL,
    PV_CHANGE,
    PVC_CHANGE,
    STORAGE_CLASS_CHANGE,
    CycleState,
    NodeCheck,
    NodeInfo,
    Obj,
    Plugin,
    PodInfo,
    Status,
    compile_node_selector_term,
    parse_quantity,
    unresolvable,
    unschedulable,
)

ERR_UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
ERR_NODE_CONFLICT = "node(s) had volume node affinity conflict"
ERR_BIND_CONFLICT = "node(s) didn't find available persistent volumes to bind"
ERR_PV_MISSING = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
NO_PROVISIONER = "kubernetes.io/no-provisioner"
STATE_KEY = "VolumeBinding"


def pod_claim_names(pod: PodInfo) -> list[tuple[str, bool]]:
    """(claim name, is generic ephemeral) for each claim-backed volume of the pod."""
    names = []
    for volume in pod.spec.get("volumes") or []:
        claim = volume.get("persistentVolumeClaim")
        if claim is not None:
            names.append((claim.get("claimName") or "", False))
        elif volume.get("ephemeral") is not None:
            names.append((f"{pod.name}-{volume.get('name', '')}", True))
    return names


def volume_allows_node(pv: Obj, node: NodeInfo) -> bool:
    required = (((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required"))
    if not required:
        return True
    terms = [compile_node_selector_term(t) for t in required.get("nodeSelectorTerms") or []]
    return any(term is not None and term(node) for term in terms)


def _claim_request(pvc: Obj) -> Any:
    storage = (((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get(
        "storage")
    return parse_quantity(storage) if storage is not None else 0


def static_volume_for(pvc: Obj, volumes: list[Obj], node: NodeInfo) -> Obj | None:
    """The smallest available volume of the claim's class that fits it and the node."""
    spec = pvc.get("spec") or {}
    wanted_class = spec.get("storageClassName") or ""
    wanted_modes = set(spec.get("accessModes") or [])
    wanted_size = _claim_request(pvc)
    meta = pvc.get("metadata") or {}
    best: tuple[Any, Obj] | None = None
    for pv in volumes:
        pv_spec = pv.get("spec") or {}
        claim_ref = pv_spec.get("claimRef")
        if claim_ref and (claim_ref.get("name") != meta.get("name")
                          or claim_ref.get("namespace") != meta.get("namespace")):
            continue
        if (pv.get("status") or {}).get("phase", "Available") != "Available" and not claim_ref:
            continue
        if (pv_spec.get("storageClassName") or "") != wanted_class:
            continue
        if not wanted_modes <= set(pv_spec.get("accessModes") or []):
            continue
        size = parse_quantity((pv_spec.get("capacity") or {}).get("storage") or 0)
        if size < wanted_size or not volume_allows_node(pv, node):
            continue
        if best is None or size < best[0]:
            best = (size, pv)
    return best[1] if best else None


@dataclass
class _Claims:
    bound: list[Obj] = field(default_factory=list)  # their PersistentVolumes
    to_provision: list[Obj] = field(default_factory=list)
    static: list[Obj] = field(default_factory=list)  # claims waiting for a static volume
    chosen_volumes: dict[str, Obj] = field(default_factory=dict)  # node/claim -> volume


class VolumeBinding(Plugin):
    name = "VolumeBinding"
    events = frozenset({NODE_ADD, NODE_LABEL, PVC_CHANGE, PV_CHANGE, STORAGE_CLASS_CHANGE})

    def pre_filter(self, state: CycleState, pod: PodInfo) -> NodeCheck | Status | None:
        names = pod_claim_names(pod)
        if not names:
            return None
        claims_of = self.cluster.lister("persistentvolumeclaims")
        volumes_of = self.cluster.lister("persistentvolumes")
        classes_of = self.cluster.lister("storageclasses")
        claims = _Claims()
        for claim_name, ephemeral in names:
            pvc = claims_of(f"{pod.namespace}/{claim_name}")
            if pvc is None:
                if ephemeral:
                    return unresolvable(f"waiting for ephemeral volume controller to create "
                                        f'the persistentvolumeclaim "{claim_name}"')
                return unresolvable(f'persistentvolumeclaim "{claim_name}" not found')
            if "deletionTimestamp" in (pvc.get("metadata") or {}):
                return unresolvable(f'persistentvolumeclaim "{claim_name}" is being deleted')
            volume_name = (pvc.get("spec") or {}).get("volumeName")
            if volume_name:
                pv = volumes_of(volume_name)
                if pv is None:
                    status = unresolvable(ERR_PV_MISSING)
                    status.plugin = self.name
                    return status
                claims.bound.append(pv)
                continue
            class_name = (pvc.get("spec") or {}).get("storageClassName") or ""
            storage_class = classes_of(class_name) if class_name else None
            if storage_class is None or storage_class.get(
                    "volumeBindingMode") != "WaitForFirstConsumer":
                return unresolvable(ERR_UNBOUND_IMMEDIATE)
            if storage_class.get("provisioner") == NO_PROVISIONER:
                claims.static.append(pvc)
            else:
                claims.to_provision.append(pvc)
        state[STATE_KEY] = claims
        list_volumes = self.cluster.list_objects
        conflict = unschedulable(ERR_NODE_CONFLICT)
        bind_conflict = unschedulable(ERR_BIND_CONFLICT)
        conflict.plugin = bind_conflict.plugin = self.name

        def check(node: NodeInfo) -> Status | None:
            for pv in claims.bound:
                if not volume_allows_node(pv, node):
                    return conflict
            if claims.static:
                volumes = list_volumes("persistentvolumes")
                taken: set[str] = set()
                for pvc in claims.static:
                    choice = static_volume_for(
                        pvc, [v for v in volumes if v["metadata"]["name"] not in taken], node)
                    if choice is None:
                        return bind_conflict
                    taken.add(choice["metadata"]["name"])
            return None

        return NodeCheck(per_node=check)

    async def pre_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        claims: _Claims | None = state.get(STATE_KEY)
        if claims is None or self.client is None:
            return
        for pvc in claims.to_provision:
            meta = pvc["metadata"]
            await self.client.patch("persistentvolumeclaims", meta["name"], {
                "metadata": {"annotations": {SELECTED_NODE: node_name}}}, meta["namespace"])
        if claims.static:
            node = self.cluster.node(node_name)
            volumes = self.cluster.list_objects("persistentvolumes")
            taken: set[str] = set()
            for pvc in claims.static:
                if node is None:
                    break
                choice = static_volume_for(
                    pvc, [v for v in volumes if v["metadata"]["name"] not in taken], node)
                if choice is None:
                    continue
                taken.add(choice["metadata"]["name"])
                meta = pvc["metadata"]
                await self.client.patch("persistentvolumes", choice["metadata"]["name"], {
                    "spec": {"claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                                          "namespace": meta["namespace"], "name": meta["name"],
                                          "uid": meta.get("uid", "")}}})
