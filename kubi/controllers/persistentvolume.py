"""The PersistentVolume binder: claims meet volumes, released volumes are reclaimed.

As upstream's pkg/controller/volume/persistentvolume (pv_controller.go, index.go):
- an unbound claim gets the smallest Available volume that fits (access modes a
  superset, preferring the fewest modes; capacity >= request; same class; label
  selector; volumeMode), or the volume it or the volume pre-binds;
- binding writes PV.spec.claimRef (+ pv.kubernetes.io/bound-by-controller) and
  phase Bound, then PVC.spec.volumeName (+ bind-completed) and phase Bound with
  the volume's capacity and access modes;
- a claim without a class gets the default StorageClass retroactively; one whose
  class has a provisioner is annotated for it (the provisioner is separate);
- WaitForFirstConsumer classes wait for a pod to be scheduled (the claim's
  volume.kubernetes.io/selected-node annotation), then bind on that node;
- when a bound claim goes, the volume is Released and its reclaim policy runs:
  Retain keeps it, Delete deletes a dynamically provisioned volume.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.api.labels import InvalidSelector, label_selector_matches, requirement_holds
from kubi.client.events import NORMAL, WARNING
from kubi.client.informer import Informer, key_of
from kubi.controllers.base import Controller, ControllerContext

log = logging.getLogger("kubi.controllers.persistentvolume")

Obj = dict[str, Any]

ANN_BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
ANN_BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
ANN_DYNAMICALLY_PROVISIONED = "pv.kubernetes.io/provisioned-by"
ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node"
ANN_STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
ANN_BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
ANN_BETA_STORAGE_CLASS = "volume.beta.kubernetes.io/storage-class"
DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                             "storageclass.beta.kubernetes.io/is-default-class")
# Upstream re-syncs every claim and volume this often; pending claims retry on it.
RESYNC_SECONDS = 15.0
STORAGE_CLASSES = "storageclasses.storage.k8s.io"

# -- quantities, selectors, affinity ------------------------------------------------------

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL: dict[str, Fraction] = {
    "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18)}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")


def parse_quantity(value: Any) -> Fraction | None:
    """A resource.Quantity as an exact number; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Fraction(value)
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return None
    number, suffix = match.group(1), match.group(2) or ""
    try:
        amount = Fraction(number)
    except ValueError:
        return None
    if suffix in _BINARY:
        return amount * _BINARY[suffix]
    if suffix in _DECIMAL:
        return amount * _DECIMAL[suffix]
    return amount * Fraction(10) ** int(suffix[1:])


def storage_of(obj: Obj, *path: str) -> Fraction:
    node: Any = obj
    for step in path:
        node = (node or {}).get(step) if isinstance(node, dict) else None
    return parse_quantity((node or {}).get("storage", 0) if isinstance(node, dict) else 0) \
        or Fraction(0)


def _expression_matches(expression: Obj, value: str | None) -> bool:
    values = [str(v) for v in expression.get("values") or []]
    return requirement_holds(str(expression.get("operator")), value, values)


def _selects(selector: Obj, volume: Obj) -> bool:
    try:
        return label_selector_matches(selector, (volume.get("metadata") or {}).get("labels"))
    except InvalidSelector:  # the API validates claims; an invalid one matches nothing
        return False


def node_affinity_matches(volume: Obj, node: Obj) -> bool:
    """A volume's required node affinity (ORed terms of ANDed requirements)."""
    required = (((volume.get("spec") or {}).get("nodeAffinity") or {}).get("required"))
    if not required:
        return True
    labels = (node.get("metadata") or {}).get("labels") or {}
    fields = {"metadata.name": m.name_of(node)}
    for term in required.get("nodeSelectorTerms") or []:
        expressions = term.get("matchExpressions") or []
        field_expressions = term.get("matchFields") or []
        if not expressions and not field_expressions:
            continue  # an empty term matches nothing
        if (all(_expression_matches(e, labels.get(str(e.get("key")))) for e in expressions)
                and all(_expression_matches(e, fields.get(str(e.get("key"))))
                        for e in field_expressions)):
            return True
    return False


# -- storage helpers (upstream's storage/util helpers) -------------------------------------


def claim_class(claim: Obj) -> str:
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    if ANN_BETA_STORAGE_CLASS in annotations:
        return str(annotations[ANN_BETA_STORAGE_CLASS])
    return str((claim.get("spec") or {}).get("storageClassName") or "")


def claim_has_class(claim: Obj) -> bool:
    """An explicit class, even "" (which asks for volumes without one)."""
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    return (ANN_BETA_STORAGE_CLASS in annotations
            or (claim.get("spec") or {}).get("storageClassName") is not None)


def volume_class(volume: Obj) -> str:
    annotations = (volume.get("metadata") or {}).get("annotations") or {}
    if ANN_BETA_STORAGE_CLASS in annotations:
        return str(annotations[ANN_BETA_STORAGE_CLASS])
    return str((volume.get("spec") or {}).get("storageClassName") or "")


def volume_mode_mismatch(claim: Obj, volume: Obj) -> bool:
    wanted = (claim.get("spec") or {}).get("volumeMode") or "Filesystem"
    offered = (volume.get("spec") or {}).get("volumeMode") or "Filesystem"
    return bool(wanted != offered)


def access_modes_ok(claim: Obj, volume: Obj) -> bool:
    offered = set((volume.get("spec") or {}).get("accessModes") or [])
    return set((claim.get("spec") or {}).get("accessModes") or []) <= offered


def volume_bound_to_claim(volume: Obj, claim: Obj) -> bool:
    ref = (volume.get("spec") or {}).get("claimRef")
    if not ref:
        return False
    meta = claim.get("metadata") or {}
    return (ref.get("name") == meta.get("name") and ref.get("namespace") == meta.get("namespace")
            and (not ref.get("uid") or ref.get("uid") == meta.get("uid")))


def has_annotation(obj: Obj, name: str) -> bool:
    return name in ((obj.get("metadata") or {}).get("annotations") or {})


def default_class(classes: list[Obj]) -> Obj | None:
    """The newest class marked default (upstream picks the newest when several are)."""
    defaults = [c for c in classes
                if any(((c.get("metadata") or {}).get("annotations") or {}).get(a) == "true"
                       for a in DEFAULT_CLASS_ANNOTATIONS)]
    if not defaults:
        return None
    defaults.sort(key=lambda c: (c["metadata"].get("creationTimestamp") or "",
                                 m.name_of(c)), reverse=True)
    return defaults[0]


def check_volume_satisfies_claim(volume: Obj, claim: Obj) -> str | None:
    """Why a volume the claim asked for by name cannot serve it, or None."""
    if (volume.get("metadata") or {}).get("deletionTimestamp"):
        return f'the volume is marked for deletion "{m.name_of(volume)}"'
    if storage_of(volume, "spec", "capacity") < storage_of(claim, "spec", "resources",
                                                           "requests"):
        return "requested PV is too small"
    if volume_class(volume) != claim_class(claim):
        return "storageClassName does not match"
    if volume_mode_mismatch(claim, volume):
        return "incompatible volumeMode"
    if not access_modes_ok(claim, volume):
        return "incompatible accessMode"
    return None


def find_matching_volume(claim: Obj, volumes: list[Obj], node: Obj | None,
                         delay_binding: bool) -> Obj | None:
    """Upstream's FindMatchingVolume over one access-mode group of volumes."""
    requested = storage_of(claim, "spec", "resources", "requests")
    requested_class = claim_class(claim)
    selector = (claim.get("spec") or {}).get("selector")
    smallest: Obj | None = None
    smallest_size = Fraction(0)
    for volume in volumes:
        if (volume.get("spec") or {}).get("claimRef") and not volume_bound_to_claim(volume,
                                                                                    claim):
            continue
        size = storage_of(volume, "spec", "capacity")
        if size < requested or volume_mode_mismatch(claim, volume):
            continue
        if (volume.get("metadata") or {}).get("deletionTimestamp"):
            continue
        affinity_ok = node is None or node_affinity_matches(volume, node)
        if volume_bound_to_claim(volume, claim):
            return volume if affinity_ok else None
        if node is None and delay_binding:
            continue  # binding waits for the pod's node
        if (volume.get("status") or {}).get("phase") != "Available":
            continue
        if selector and not _selects(selector, volume):
            continue
        if volume_class(volume) != requested_class or not affinity_ok:
            continue
        if node is not None and not access_modes_ok(claim, volume):
            continue
        if smallest is None or size < smallest_size:
            smallest, smallest_size = volume, size
    return smallest


def find_best_match(claim: Obj, volumes: list[Obj], node: Obj | None,
                    delay_binding: bool) -> Obj | None:
    """Volumes grouped by access modes; groups offering all the claim's modes are tried
    from the fewest modes up, so a claim does not take a more capable volume needlessly."""
    wanted = set((claim.get("spec") or {}).get("accessModes") or [])
    groups: dict[frozenset[str], list[Obj]] = {}
    for volume in volumes:
        modes = frozenset((volume.get("spec") or {}).get("accessModes") or [])
        groups.setdefault(modes, []).append(volume)
    for modes in sorted((g for g in groups if wanted <= g), key=lambda g: (len(g), sorted(g))):
        found = find_matching_volume(claim, groups[modes], node, delay_binding)
        if found is not None:
            return found
    return None


def claim_reference(claim: Obj) -> Obj:
    meta = claim.get("metadata") or {}
    return {"kind": "PersistentVolumeClaim", "namespace": meta.get("namespace", ""),
            "name": meta.get("name", ""), "uid": meta.get("uid", ""), "apiVersion": "v1",
            "resourceVersion": meta.get("resourceVersion", "")}


def _claim_names_of_pod(pod: Obj) -> list[str]:
    return [str(v["persistentVolumeClaim"]["claimName"])
            for v in (pod.get("spec") or {}).get("volumes") or []
            if (v.get("persistentVolumeClaim") or {}).get("claimName")]


class _Overlay:
    """An informer's cache plus what this controller just wrote, newest winning.

    Upstream keeps its own cache updated with every write so a second claim does not
    pick a volume the informer has not yet seen bound.
    """

    def __init__(self, informer: Informer) -> None:
        self.informer = informer
        self.written: dict[str, Obj] = {}

    def remember(self, obj: Obj) -> None:
        self.written[key_of(obj)] = obj

    def get(self, key: str) -> Obj | None:
        cached = self.informer.cache.get(key)
        mine = self.written.get(key)
        if mine is None:
            return cached
        if cached is None:
            # Deleted (or not yet seen): trust the cache once it has caught up.
            return None if _rv(mine) <= self.informer_rv() else mine
        if _rv(cached) >= _rv(mine):
            del self.written[key]
            return cached
        return mine

    def informer_rv(self) -> int:
        value = self.informer.last_resource_version
        return int(value) if value.isdigit() else 0

    def list(self) -> list[Obj]:
        keys = set(self.informer.cache.keys()) | set(self.written)
        return [obj for obj in (self.get(k) for k in sorted(keys)) if obj is not None]

    def forget(self, key: str) -> None:
        self.written.pop(key, None)


def _rv(obj: Obj) -> int:
    value = str((obj.get("metadata") or {}).get("resourceVersion") or "0")
    return int(value) if value.isdigit() else 0


class PersistentVolumeBinder(Controller):
    name = "persistentvolume-binder"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder("persistentvolume-controller")
        # One worker: binding decisions must see each other's results.
        self.workers = 1
        volumes = ctx.informers.informer("persistentvolumes")
        claims = ctx.informers.informer("persistentvolumeclaims")
        self.classes = ctx.informers.informer(STORAGE_CLASSES)
        self.pods = ctx.informers.informer("pods")
        self.nodes = ctx.informers.informer("nodes")
        self.pods.cache.add_indexer("claim", lambda pod: [
            f"{m.namespace_of(pod)}/{name}" for name in _claim_names_of_pod(pod)])
        self.volumes = _Overlay(volumes)
        self.claims = _Overlay(claims)
        volumes.add_handlers(on_add=self._on_volume,
                             on_update=lambda _old, new: self._on_volume(new),
                             on_delete=self._on_volume_deleted)
        claims.add_handlers(on_add=self._on_claim, on_update=lambda _old, new: self._on_claim(new),
                            on_delete=self._on_claim_deleted)
        self.classes.add_handlers(on_add=lambda _c: self._requeue_pending_claims(),
                                  on_update=lambda _o, _n: self._requeue_pending_claims())

    # -- event handlers ---------------------------------------------------------------

    def _on_volume(self, volume: Obj) -> None:
        self.enqueue_key("pv:" + m.name_of(volume))
        if (volume.get("status") or {}).get("phase") == "Available":
            self._requeue_pending_claims()  # a new candidate for waiting claims

    def _on_volume_deleted(self, volume: Obj) -> None:
        self.volumes.forget(m.name_of(volume))
        ref = (volume.get("spec") or {}).get("claimRef")
        if ref:
            self.enqueue_key(f"pvc:{ref.get('namespace')}/{ref.get('name')}")

    def _on_claim(self, claim: Obj) -> None:
        self.enqueue_key("pvc:" + key_of(claim))

    def _on_claim_deleted(self, claim: Obj) -> None:
        self.claims.forget(key_of(claim))
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if volume_name:
            self.enqueue_key("pv:" + volume_name)

    def _requeue_pending_claims(self) -> None:
        for claim in self.claims.informer.cache.list():
            if not has_annotation(claim, ANN_BIND_COMPLETED):
                self.enqueue_key("pvc:" + key_of(claim))

    async def reconcile(self, key: str) -> float | None:
        kind, _, name = key.partition(":")
        if kind == "pv":
            volume = self.volumes.get(name)
            return None if volume is None else await self.sync_volume(volume)
        claim = self.claims.get(name)
        if claim is None:
            return None
        if not has_annotation(claim, ANN_BIND_COMPLETED):
            return await self.sync_unbound_claim(claim)
        await self.sync_bound_claim(claim)
        return None

    # -- claims -----------------------------------------------------------------------

    def _delay_binding(self, claim: Obj) -> bool:
        name = claim_class(claim)
        if not name:
            return False
        found = self.classes.cache.get(name)
        return bool(found and found.get("volumeBindingMode") == "WaitForFirstConsumer")

    async def sync_unbound_claim(self, claim: Obj) -> float | None:
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if volume_name:
            await self._sync_claim_with_volume_name(claim, volume_name)
            return None if has_annotation(claim, ANN_BIND_COMPLETED) else RESYNC_SECONDS
        delay = self._delay_binding(claim)
        selected = ((claim.get("metadata") or {}).get("annotations") or {}).get(
            ANN_SELECTED_NODE)
        node = self.nodes.cache.get(selected) if delay and selected else None
        volume = find_best_match(claim, self.volumes.list(), node, delay)
        if volume is not None:
            await self.bind(volume, claim)
            return None
        if await self._assign_default_class(claim):
            return None  # the update brings the claim back with its class
        if delay and not selected:
            await self._wait_for_first_consumer(claim)
        elif claim_class(claim):
            await self._provision(claim)
            return RESYNC_SECONDS
        else:
            await self.recorder.event(claim, NORMAL, "FailedBinding",
                                      "no persistent volumes available for this claim and no "
                                      "storage class is set")
        await self._update_claim_status(claim, "Pending", None)
        return RESYNC_SECONDS

    async def _sync_claim_with_volume_name(self, claim: Obj, volume_name: str) -> None:
        """The user asked for a specific volume."""
        volume = self.volumes.get(volume_name)
        if volume is None:
            await self._update_claim_status(claim, "Pending", None)
            return
        if not (volume.get("spec") or {}).get("claimRef"):
            problem = check_volume_satisfies_claim(volume, claim)
            if problem:
                await self.recorder.event(claim, WARNING, "VolumeMismatch",
                                          f'Cannot bind to requested volume '
                                          f'"{volume_name}": {problem}')
                await self._update_claim_status(claim, "Pending", None)
                return
            await self.bind(volume, claim)
            return
        if volume_bound_to_claim(volume, claim):
            await self.bind(volume, claim)
            return
        message = f'volume "{volume_name}" already bound to a different claim.'
        await self.recorder.event(claim, WARNING, "FailedBinding", message)
        if has_annotation(claim, ANN_BOUND_BY_CONTROLLER):
            ref = volume["spec"]["claimRef"]
            raise RuntimeError(f'invalid binding of claim "{key_of(claim)}" to volume '
                               f'"{volume_name}": volume already claimed by '
                               f'"{ref.get("namespace")}/{ref.get("name")}"')
        await self._update_claim_status(claim, "Pending", None)

    async def sync_bound_claim(self, claim: Obj) -> None:
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if not volume_name:
            await self._claim_lost(claim, "ClaimLost", "Bound claim has lost reference to "
                                   "PersistentVolume. Data on the volume is lost!")
            return
        volume = self.volumes.get(volume_name)
        if volume is None:
            await self._claim_lost(claim, "ClaimLost",
                                   "Bound claim has lost its PersistentVolume. Data on the "
                                   "volume is lost!")
            return
        ref = (volume.get("spec") or {}).get("claimRef")
        if not ref or ref.get("uid") == claim["metadata"].get("uid"):
            await self.bind(volume, claim)  # (re)complete both sides
            return
        await self._claim_lost(claim, "ClaimMisbound",
                               "Two claims are bound to the same volume, this one is bound "
                               "incorrectly")

    async def _claim_lost(self, claim: Obj, reason: str, message: str) -> None:
        if (claim.get("status") or {}).get("phase") == "Lost":
            return
        updated = await self._update_claim_status(claim, "Lost", None)
        await self.recorder.event(updated, WARNING, reason, message)

    async def _assign_default_class(self, claim: Obj) -> bool:
        """Since 1.28 a claim created before any default class existed gets it later."""
        if claim_has_class(claim):
            return False
        found = default_class(self.classes.cache.list())
        if found is None:
            return False
        updated = m.deep_copy(claim)
        updated["spec"]["storageClassName"] = m.name_of(found)
        self.claims.remember(await self.client.update("persistentvolumeclaims", updated))
        return True

    async def _wait_for_first_consumer(self, claim: Obj) -> None:
        waiting = sorted(m.name_of(p) for p in self.pods.cache.by_index("claim", key_of(claim))
                         if not (p.get("spec") or {}).get("nodeName"))
        reason, message = "WaitForFirstConsumer", \
            "waiting for first consumer to be created before binding"
        if len(waiting) == 1:
            reason, message = "WaitForPodScheduled", f"waiting for pod {waiting[0]} to be scheduled"
        elif waiting:
            reason, message = "WaitForPodScheduled", \
                f"waiting for pods {','.join(waiting)} to be scheduled"
        await self.recorder.event(claim, NORMAL, reason, message)

    async def _provision(self, claim: Obj) -> None:
        """Hand the claim to its class's provisioner, as upstream does for external ones."""
        class_name = claim_class(claim)
        storage_class = self.classes.cache.get(class_name)
        if storage_class is None:
            await self.recorder.event(claim, WARNING, "ProvisioningFailed",
                                      f'storageclass.storage.k8s.io "{class_name}" not found')
            return
        provisioner = str(storage_class.get("provisioner") or "")
        if provisioner.startswith("kubernetes.io/"):
            # In-tree plugins are gone; no-provisioner classes serve static volumes.
            await self.recorder.event(claim, WARNING, "ProvisioningFailed",
                                      f"no volume plugin matched name: {provisioner}")
            return
        annotations = (claim.get("metadata") or {}).get("annotations") or {}
        if (annotations.get(ANN_STORAGE_PROVISIONER) != provisioner
                or annotations.get(ANN_BETA_STORAGE_PROVISIONER) != provisioner):
            updated = m.deep_copy(claim)
            wanted = updated["metadata"].setdefault("annotations", {})
            wanted[ANN_STORAGE_PROVISIONER] = provisioner
            wanted[ANN_BETA_STORAGE_PROVISIONER] = provisioner
            claim = await self.client.update("persistentvolumeclaims", updated)
            self.claims.remember(claim)
        await self.recorder.event(
            claim, NORMAL, "ExternalProvisioning",
            f"Waiting for a volume to be created either by the external provisioner "
            f"'{provisioner}' or manually by the system administrator. If volume creation is "
            f"delayed, please verify that the provisioner is running and correctly registered.")

    # -- binding ----------------------------------------------------------------------

    async def bind(self, volume: Obj, claim: Obj) -> None:
        volume = await self._bind_volume_to_claim(volume, claim)
        volume = await self._update_volume_phase(volume, "Bound", "")
        claim = await self._bind_claim_to_volume(claim, volume)
        await self._update_claim_status(claim, "Bound", volume)

    async def _bind_volume_to_claim(self, volume: Obj, claim: Obj) -> Obj:
        set_by_controller = not volume_bound_to_claim(volume, claim)
        updated = m.deep_copy(volume)
        dirty = False
        ref = (volume.get("spec") or {}).get("claimRef") or {}
        meta = claim["metadata"]
        if (ref.get("name"), ref.get("namespace"), ref.get("uid")) != (
                meta.get("name"), meta.get("namespace"), meta.get("uid")):
            updated["spec"]["claimRef"] = claim_reference(claim)
            dirty = True
        if set_by_controller and not has_annotation(updated, ANN_BOUND_BY_CONTROLLER):
            updated["metadata"].setdefault("annotations", {})[ANN_BOUND_BY_CONTROLLER] = "yes"
            dirty = True
        if not dirty:
            return volume
        written = await self.client.update("persistentvolumes", updated)
        self.volumes.remember(written)
        return written

    async def _bind_claim_to_volume(self, claim: Obj, volume: Obj) -> Obj:
        updated = m.deep_copy(claim)
        annotations = updated["metadata"].setdefault("annotations", {})
        dirty = False
        if (claim.get("spec") or {}).get("volumeName") != m.name_of(volume):
            updated["spec"]["volumeName"] = m.name_of(volume)
            annotations.setdefault(ANN_BOUND_BY_CONTROLLER, "yes")
            dirty = True
        if ANN_BIND_COMPLETED not in annotations:
            annotations[ANN_BIND_COMPLETED] = "yes"
            dirty = True
        if not dirty:
            return claim
        written = await self.client.update("persistentvolumeclaims", updated)
        self.claims.remember(written)
        return written

    async def _update_claim_status(self, claim: Obj, phase: str, volume: Obj | None) -> Obj:
        updated = m.deep_copy(claim)
        status = updated.setdefault("status", {})
        status["phase"] = phase
        if volume is None:
            status.pop("accessModes", None)
            status.pop("capacity", None)
        else:
            status["accessModes"] = list(volume["spec"].get("accessModes") or [])
            capacity = (volume.get("spec") or {}).get("capacity") or {}
            if "storage" not in capacity:
                raise RuntimeError(f'PersistentVolume "{m.name_of(volume)}" is without a '
                                   f"storage capacity")
            current = parse_quantity(((claim.get("status") or {}).get("capacity") or {})
                                     .get("storage", ""))
            if current != parse_quantity(capacity["storage"]):
                status["capacity"] = dict(capacity)
        if updated.get("status") == claim.get("status"):
            return claim
        written = await self.client.update_status("persistentvolumeclaims", updated)
        self.claims.remember(written)
        return written

    # -- volumes ----------------------------------------------------------------------

    async def _update_volume_phase(self, volume: Obj, phase: str, message: str) -> Obj:
        if (volume.get("status") or {}).get("phase") == phase:
            return volume
        updated = m.deep_copy(volume)
        status = updated.setdefault("status", {})
        status["phase"] = phase
        if message:
            status["message"] = message
        else:
            status.pop("message", None)
        status["lastPhaseTransitionTime"] = m.rfc3339(m.now())
        written = await self.client.update_status("persistentvolumes", updated)
        self.volumes.remember(written)
        return written

    async def sync_volume(self, volume: Obj) -> float | None:
        ref = (volume.get("spec") or {}).get("claimRef")
        if not ref or not ref.get("uid"):
            # Unused, or reserved for a claim that has not bound yet.
            await self._update_volume_phase(volume, "Available", "")
            return None
        claim_key = f"{ref.get('namespace')}/{ref.get('name')}"
        claim = self.claims.get(claim_key)
        if claim is None and (volume.get("status") or {}).get("phase") not in ("Released",
                                                                               "Failed"):
            # A claim created a moment ago may not be in the cache yet: ask the server.
            try:
                claim = await self.client.get("persistentvolumeclaims", ref.get("name", ""),
                                              ref.get("namespace", ""))
            except StatusError as err:
                if err.code != 404:
                    raise
        if claim is not None and claim["metadata"].get("uid") != ref.get("uid"):
            claim = None  # deleted and recreated with the same name
        if claim is None:
            if (volume.get("status") or {}).get("phase") not in ("Released", "Failed"):
                volume = await self._update_volume_phase(volume, "Released", "")
            await self.reclaim(volume)
            return None
        claim_volume = (claim.get("spec") or {}).get("volumeName")
        if not claim_volume:
            # Bound on our side only; the claim's sync finishes it.
            self.enqueue_key("pvc:" + key_of(claim))
            return None
        if claim_volume == m.name_of(volume):
            await self._update_volume_phase(volume, "Bound", "")
            return None
        # The claim went to another volume.
        if (has_annotation(volume, ANN_DYNAMICALLY_PROVISIONED)
                and volume["spec"].get("persistentVolumeReclaimPolicy") == "Delete"):
            if (volume.get("status") or {}).get("phase") not in ("Released", "Failed"):
                volume = await self._update_volume_phase(volume, "Released", "")
            await self.reclaim(volume)
            return None
        await self._unbind_volume(volume)
        return None

    async def _unbind_volume(self, volume: Obj) -> None:
        updated = m.deep_copy(volume)
        if has_annotation(volume, ANN_BOUND_BY_CONTROLLER):
            updated["spec"].pop("claimRef", None)
            annotations = updated["metadata"].get("annotations") or {}
            annotations.pop(ANN_BOUND_BY_CONTROLLER, None)
            if not annotations:
                updated["metadata"].pop("annotations", None)
        else:
            updated["spec"]["claimRef"].pop("uid", None)  # stays pre-bound by its user
        written = await self.client.update("persistentvolumes", updated)
        self.volumes.remember(written)
        await self._update_volume_phase(written, "Available", "")

    async def reclaim(self, volume: Obj) -> None:
        policy = (volume.get("spec") or {}).get("persistentVolumeReclaimPolicy") or "Retain"
        if policy == "Retain":
            return
        if policy == "Delete":
            if (volume.get("metadata") or {}).get("deletionTimestamp"):
                return
            if not has_annotation(volume, ANN_DYNAMICALLY_PROVISIONED):
                # No in-tree deleter exists for a volume nobody provisioned.
                await self._fail_volume(volume, "VolumeFailedDelete",
                                        f'error getting deleter volume plugin for volume '
                                        f'"{m.name_of(volume)}": no deletable volume plugin '
                                        f"matched")
                return
            try:
                await self.client.delete("persistentvolumes", m.name_of(volume),
                                         uid=volume["metadata"].get("uid"))
            except StatusError as err:
                if err.code not in (404, 409):
                    raise
            return
        if policy == "Recycle":
            await self._fail_volume(volume, "VolumeFailedRecycle",
                                    "No recycler plugin found for the volume!")
            return
        await self._fail_volume(volume, "VolumeUnknownReclaimPolicy",
                                "Volume has unrecognized PersistentVolumeReclaimPolicy")

    async def _fail_volume(self, volume: Obj, reason: str, message: str) -> None:
        if (volume.get("status") or {}).get("phase") == "Failed":
            return
        updated = await self._update_volume_phase(volume, "Failed", message)
        await self.recorder.event(updated, WARNING, reason, message)
