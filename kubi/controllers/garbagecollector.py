"""The garbage collector: objects whose owners are gone are deleted, and the
`foregroundDeletion` and `orphan` finalizers are carried out.

As upstream's pkg/controller/garbagecollector: informers over every resource that
can own or be owned feed a graph of owner references by uid. An object is looked
at again when its owners may have gone. Its owners are then classified with live
reads (a cache may lag): an object with a live owner keeps it and loses the
references to absent ones; one whose every owner is absent is deleted; one whose
owners are waiting for it (foreground deletion) is deleted too, in the
foreground itself when it has dependents of its own. An owner being deleted in
the foreground keeps its finalizer until its blocking dependents are gone; an
owner being deleted with `orphan` has the references to it removed from its
dependents first.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from kubi.api.errors import StatusError
from kubi.api.resources import CATALOGUE, ResourceInfo
from kubi.client.events import WARNING
from kubi.client.rest import resource
from kubi.controllers.base import Controller, ControllerContext

log = logging.getLogger("kubi.controllers.garbagecollector")

Obj = dict[str, Any]

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
ABSENT_CACHE_SIZE = 500
FINALIZER_RETRIES = 5

# Resources whose objects commonly own or are owned by others. Upstream watches
# every deletable resource; these are the ones Kubi's components use.
WATCHED = (
    "pods", "replicationcontrollers", "podtemplates", "services", "endpoints", "configmaps",
    "secrets", "serviceaccounts", "persistentvolumeclaims", "persistentvolumes", "events",
    "nodes", "limitranges", "resourcequotas",
    "replicasets.apps", "deployments.apps", "statefulsets.apps", "daemonsets.apps",
    "controllerrevisions.apps", "jobs.batch", "cronjobs.batch",
    "endpointslices.discovery.k8s.io", "leases.coordination.k8s.io",
    "poddisruptionbudgets.policy", "horizontalpodautoscalers.autoscaling",
    "ingresses.networking.k8s.io", "networkpolicies.networking.k8s.io",
    "roles.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io",
)


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _owner_refs(obj: Obj) -> list[Obj]:
    return [r for r in _meta(obj).get("ownerReferences") or [] if r.get("uid")]


def _finalizers(obj: Obj) -> list[str]:
    return list(_meta(obj).get("finalizers") or [])


def _is_deleting(obj: Obj) -> bool:
    return bool(_meta(obj).get("deletionTimestamp"))


def _is_deleting_dependents(obj: Obj) -> bool:
    return _is_deleting(obj) and FOREGROUND in _finalizers(obj)


def resolve_kind(api_version: str, kind: str) -> ResourceInfo | None:
    """The served resource for an ownerReference's apiVersion and kind; another
    version of the same group is accepted, as owners are identified by uid."""
    found = CATALOGUE.by_kind(api_version, kind)
    if found is not None:
        return found
    group = api_version.rpartition("/")[0]
    for info in CATALOGUE.resources:
        if info.group == group and info.kind == kind and info.storage_group is None:
            return info
    return None


def remove_owner_refs_patch(obj: Obj, owner_uids: list[str]) -> Obj:
    """Strategic merge patch deleting the references to `owner_uids`; the object's own
    uid guards against patching a replacement with the same name."""
    return {"metadata": {
        "ownerReferences": [{"$patch": "delete", "uid": uid} for uid in owner_uids],
        "uid": _meta(obj).get("uid")}}


@dataclass
class Node:
    """One observed object: where it lives and its latest state (never mutated)."""

    info: ResourceInfo
    obj: Obj

    @property
    def uid(self) -> str:
        return str(_meta(self.obj).get("uid", ""))

    @property
    def name(self) -> str:
        return str(_meta(self.obj).get("name", ""))

    @property
    def namespace(self) -> str:
        return str(_meta(self.obj).get("namespace", ""))


@dataclass
class Graph:
    """Observed objects by uid and, for every owner uid (observed or not), its dependents."""

    nodes: dict[str, Node] = field(default_factory=dict)
    dependents: dict[str, set[str]] = field(default_factory=dict)

    def upsert(self, info: ResourceInfo, obj: Obj) -> tuple[set[str], set[str]]:
        """Record `obj`; returns (owner uids added, owner uids removed)."""
        uid = str(_meta(obj).get("uid", ""))
        old = self.nodes.get(uid)
        before = {r["uid"] for r in _owner_refs(old.obj)} if old else set()
        after = {r["uid"] for r in _owner_refs(obj)}
        self.nodes[uid] = Node(info, obj)
        for owner in after - before:
            self.dependents.setdefault(owner, set()).add(uid)
        for owner in before - after:
            self._unlink(owner, uid)
        return after - before, before - after

    def remove(self, obj: Obj) -> Node | None:
        uid = str(_meta(obj).get("uid", ""))
        node = self.nodes.pop(uid, None)
        for ref in _owner_refs(obj):
            self._unlink(ref["uid"], uid)
        return node

    def _unlink(self, owner: str, dependent: str) -> None:
        bucket = self.dependents.get(owner)
        if bucket is not None:
            bucket.discard(dependent)
            if not bucket:
                del self.dependents[owner]

    def dependents_of(self, uid: str) -> list[Node]:
        return [self.nodes[d] for d in self.dependents.get(uid, ()) if d in self.nodes]


class GarbageCollector(Controller):
    name = "garbagecollector"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder("garbage-collector-controller")
        self.graph = Graph()
        # Owners known to be gone, by uid (uids are never reused).
        self.absent: OrderedDict[str, None] = OrderedDict()
        for name in WATCHED:
            try:
                info = resource(name)
            except KeyError:
                continue
            informer = ctx.informers.informer(info)
            informer.add_handlers(functools.partial(self._observed, info),
                                  functools.partial(self._updated, info), self._deleted)

    # -- graph maintenance from informer events --------------------------------------------

    def _observed(self, info: ResourceInfo, obj: Obj) -> None:
        uid = str(_meta(obj).get("uid", ""))
        if not uid:
            return
        added, removed = self.graph.upsert(info, obj)
        if _is_deleting(obj) and {FOREGROUND, ORPHAN} & set(_finalizers(obj)):
            self.queue.add(uid)
            if FOREGROUND in _finalizers(obj):
                for dependent in self.graph.dependents_of(uid):
                    self.queue.add(dependent.uid)
        for owner_uid in added:
            owner = self.graph.nodes.get(owner_uid)
            if owner is None or _is_deleting(owner.obj):
                self.queue.add(uid)  # its owner may never have existed, or be going
        for owner_uid in removed:
            self._wake_deleting_owner(owner_uid)

    def _updated(self, info: ResourceInfo, old: Obj, new: Obj) -> None:
        self._observed(info, new)

    def _deleted(self, obj: Obj) -> None:
        uid = str(_meta(obj).get("uid", ""))
        if not uid:
            return
        self.graph.remove(obj)
        self._remember_absent(uid)
        for dependent in self.graph.dependents.get(uid, set()).copy():
            self.queue.add(dependent)
        for ref in _owner_refs(obj):
            self._wake_deleting_owner(ref["uid"])

    def _wake_deleting_owner(self, owner_uid: str) -> None:
        owner = self.graph.nodes.get(owner_uid)
        if owner is not None and _is_deleting_dependents(owner.obj):
            self.queue.add(owner_uid)

    def _remember_absent(self, uid: str) -> None:
        self.absent[uid] = None
        self.absent.move_to_end(uid)
        while len(self.absent) > ABSENT_CACHE_SIZE:
            self.absent.popitem(last=False)

    # -- work ------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        node = self.graph.nodes.get(key)
        if node is None:
            return None
        obj = node.obj
        if _is_deleting(obj):
            if ORPHAN in _finalizers(obj):
                await self._orphan_dependents(node)
            elif FOREGROUND in _finalizers(obj):
                await self._process_deleting_dependents(node)
            return None  # otherwise its deletion is someone else's business
        if _owner_refs(obj):
            await self._attempt_to_delete(node)
        return None

    async def _orphan_dependents(self, owner: Node) -> None:
        for dependent in self.graph.dependents_of(owner.uid):
            try:
                await self.client.patch(
                    dependent.info, dependent.name,
                    remove_owner_refs_patch(dependent.obj, [owner.uid]),
                    dependent.namespace, patch_type="strategic")
            except StatusError as err:
                if err.code not in (404, 409, 422):  # gone, replaced, or no longer refers
                    raise
        await self._remove_finalizer(owner, ORPHAN)

    async def _process_deleting_dependents(self, owner: Node) -> None:
        blocking = []
        for dependent in self.graph.dependents_of(owner.uid):
            refs = [r for r in _owner_refs(dependent.obj) if r["uid"] == owner.uid]
            if any(r.get("blockOwnerDeletion") for r in refs):
                blocking.append(dependent)
            if not _is_deleting(dependent.obj):
                self.queue.add(dependent.uid)
        if not blocking:
            await self._remove_finalizer(owner, FOREGROUND)

    async def _attempt_to_delete(self, node: Node) -> None:
        try:
            latest = await self.client.get(node.info, node.name, node.namespace)
        except StatusError as err:
            if err.code == 404:
                return  # already gone: the informer brings the deletion
            raise
        if _meta(latest).get("uid") != node.uid or _is_deleting(latest):
            return
        refs = _owner_refs(latest)
        if not refs:
            return
        solid, dangling, waiting = await self._classify_owners(node, latest, refs)
        if solid:
            stale = [r["uid"] for r in dangling + waiting]
            if stale:
                log.info("removing dangling owner references %s from %s %s", stale,
                         node.info.kind, node.name)
                await self._patch_ignoring_gone(node, remove_owner_refs_patch(latest, stale))
            return
        if waiting and self.graph.dependents_of(node.uid):
            # Owners wait for this object; it has dependents of its own to wait for.
            await self._delete(node, "Foreground")
            return
        finalizers = _finalizers(latest)
        policy = ("Orphan" if ORPHAN in finalizers
                  else "Foreground" if FOREGROUND in finalizers else "Background")
        await self._delete(node, policy)

    async def _classify_owners(self, node: Node, latest: Obj, refs: list[Obj]
                               ) -> tuple[list[Obj], list[Obj], list[Obj]]:
        """Split owner references into (live, absent, live but deleting in the foreground)."""
        solid: list[Obj] = []
        dangling: list[Obj] = []
        waiting: list[Obj] = []
        for ref in refs:
            owner_uid = ref["uid"]
            if owner_uid in self.absent:
                dangling.append(ref)
                continue
            info = resolve_kind(str(ref.get("apiVersion", "")), str(ref.get("kind", "")))
            if info is None:
                # Unknown kind: never collect on a guess.
                log.warning("%s %s/%s: owner kind %s %s is not served", node.info.kind,
                            node.namespace, node.name, ref.get("apiVersion"), ref.get("kind"))
                solid.append(ref)
                continue
            if info.namespaced and not node.namespace:
                # A cluster-scoped object cannot be owned by a namespaced one.
                await self.recorder.event(
                    latest, WARNING, "OwnerRefInvalidNamespace",
                    f"ownerRef [{ref.get('apiVersion')}/{ref.get('kind')}, namespace: , "
                    f"name: {ref.get('name')}, uid: {owner_uid}] does not exist in "
                    f'namespace ""')
                dangling.append(ref)
                continue
            namespace = node.namespace if info.namespaced else ""
            try:
                owner = await self.client.get(info, str(ref.get("name", "")), namespace)
            except StatusError as err:
                if err.code != 404:
                    raise
                self._remember_absent(owner_uid)
                dangling.append(ref)
                continue
            if _meta(owner).get("uid") != owner_uid:
                self._remember_absent(owner_uid)
                dangling.append(ref)
            elif _is_deleting_dependents(owner):
                waiting.append(ref)
            else:
                solid.append(ref)
        return solid, dangling, waiting

    # -- writes ----------------------------------------------------------------------------

    async def _delete(self, node: Node, policy: str) -> None:
        log.info("deleting %s %s/%s (propagation %s)", node.info.kind, node.namespace,
                 node.name, policy)
        try:
            await self.client.delete(node.info, node.name, node.namespace,
                                     propagation=policy, uid=node.uid)
        except StatusError as err:
            if err.code not in (404, 409):  # gone, or replaced by another object
                raise

    async def _patch_ignoring_gone(self, node: Node, patch: Obj) -> None:
        try:
            await self.client.patch(node.info, node.name, patch, node.namespace,
                                    patch_type="strategic")
        except StatusError as err:
            if err.code not in (404, 409, 422):
                raise

    async def _remove_finalizer(self, node: Node, finalizer: str) -> None:
        """Drop one finalizer, guarded by resourceVersion, retrying on conflicts."""
        for attempt in range(FINALIZER_RETRIES):
            try:
                latest = await self.client.get(node.info, node.name, node.namespace)
            except StatusError as err:
                if err.code == 404:
                    return
                raise
            if _meta(latest).get("uid") != node.uid:
                return
            finalizers = _finalizers(latest)
            if finalizer not in finalizers:
                return
            remaining = [f for f in finalizers if f != finalizer]
            patch = {"metadata": {"finalizers": remaining or None,
                                  "resourceVersion": _meta(latest).get("resourceVersion")}}
            try:
                await self.client.patch(node.info, node.name, patch, node.namespace)
                return
            except StatusError as err:
                if err.code == 404:
                    return
                if err.code != 409 or attempt == FINALIZER_RETRIES - 1:
                    raise

