"""A dynamic provisioner for node-local directories, like Rancher's local-path-provisioner.

At start it makes the default StorageClass `local-path` (provisioner rancher.io/local-path,
WaitForFirstConsumer, reclaim Delete) when absent. Each claim of a class with that
provisioner gets a PersistentVolume once the scheduler has picked a node
(volume.kubernetes.io/selected-node): a hostPath `DATA_DIR/storage/<pvc uid>_<ns>_<name>`
(DirectoryOrCreate: the node agent creates it on first mount) pinned to that node by
required node affinity, pre-bound to the claim so the binder completes the binding.
Reclaim: the binder deletes a Released volume; the agent on its node removes the
directory (kubi/kubelet/agent.py).

Where DATA_DIR is: ControllerOptions.extra["local_path_dir"] (the storage directory
itself) or extra["data_dir"] + /storage, else /var/lib/kubi/storage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.client.events import NORMAL
from kubi.controllers.base import Controller, ControllerContext

log = logging.getLogger("kubi.controllers.localpath")

Obj = dict[str, Any]

PROVISIONER = "rancher.io/local-path"
CLASS_NAME = "local-path"
STORAGE_CLASSES = "storageclasses.storage.k8s.io"
ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node"
ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
ANN_DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
ANN_BETA_CLASS = "volume.beta.kubernetes.io/storage-class"
DEFAULT_DATA_DIR = "/var/lib/kubi"


def default_storage_class() -> Obj:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": CLASS_NAME, "annotations": {ANN_DEFAULT_CLASS: "true"}},
            "provisioner": PROVISIONER, "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete"}


def volume_path(storage_dir: Path, claim: Obj) -> Path:
    meta = claim["metadata"]
    return storage_dir / f"{meta['uid']}_{meta.get('namespace')}_{meta['name']}"


def volume_for(claim: Obj, storage_class: Obj, node: str, storage_dir: Path) -> Obj:
    """The PersistentVolume provisioned for `claim` on `node`."""
    meta = claim["metadata"]
    spec = claim.get("spec") or {}
    request = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "0")
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{meta['uid']}",
                     "annotations": {ANN_PROVISIONED_BY: PROVISIONER,
                                     "local.path.provisioner/selected-node": node}},
        "spec": {
            "capacity": {"storage": request},
            "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
            "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy") or "Delete",
            "storageClassName": m.name_of(storage_class),
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": str(volume_path(storage_dir, claim)),
                         "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
            "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                         "namespace": meta.get("namespace"), "name": meta["name"],
                         "uid": meta["uid"],
                         "resourceVersion": meta.get("resourceVersion", "")},
        },
    }


class LocalPathProvisioner(Controller):
    name = "local-path-provisioner"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        extra = ctx.options.extra
        if extra.get("local_path_dir"):
            self.storage_dir = Path(str(extra["local_path_dir"]))
        else:
            self.storage_dir = Path(str(extra.get("data_dir") or DEFAULT_DATA_DIR)) / "storage"
        self.claims = ctx.informers.informer("persistentvolumeclaims")
        self.classes = ctx.informers.informer(STORAGE_CLASSES)
        self.volumes = ctx.informers.informer("persistentvolumes")
        self.claims.add_handlers(on_add=self.enqueue,
                                 on_update=lambda _old, new: self.enqueue(new))
        self.classes.add_handlers(on_add=lambda _c: self._enqueue_all(),
                                  on_update=lambda _o, _n: self._enqueue_all())

    def _enqueue_all(self) -> None:
        for claim in self.claims.cache.list():
            self.enqueue(claim)

    async def ensure_storage_class(self) -> None:
        try:
            await self.client.create(STORAGE_CLASSES, default_storage_class())
            log.info("created the default StorageClass %s", CLASS_NAME)
        except StatusError as err:
            if err.code != 409:
                raise

    async def run(self) -> None:
        await self.ensure_storage_class()
        await super().run()

    def _class_of(self, claim: Obj) -> Obj | None:
        spec = claim.get("spec") or {}
        name = spec.get("storageClassName") or \
            ((claim["metadata"].get("annotations") or {}).get(ANN_BETA_CLASS))
        if not name:
            return None
        return self.classes.cache.get(str(name))

    async def reconcile(self, key: str) -> float | None:
        claim = self.claims.cache.get(key)
        if claim is None or claim["metadata"].get("deletionTimestamp"):
            return None
        if (claim.get("spec") or {}).get("volumeName"):
            return None
        storage_class = self._class_of(claim)
        if storage_class is None or storage_class.get("provisioner") != PROVISIONER:
            return None
        node = (claim["metadata"].get("annotations") or {}).get(ANN_SELECTED_NODE)
        if not node:
            return None  # WaitForFirstConsumer: the scheduler picks the node first
        name = f"pvc-{claim['metadata']['uid']}"
        if self.volumes.cache.get(name) is not None:
            return None
        await self.recorder.event(claim, NORMAL, "Provisioning",
                                  f'External provisioner is provisioning volume for claim '
                                  f'"{key}"')
        try:
            await self.client.create("persistentvolumes",
                                     volume_for(claim, storage_class, str(node),
                                                self.storage_dir))
        except StatusError as err:
            if err.code != 409:
                raise
            return None
        await self.recorder.event(claim, NORMAL, "ProvisioningSucceeded",
                                  f"Successfully provisioned volume {name}")
        return None
