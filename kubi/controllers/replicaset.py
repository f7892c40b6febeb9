"""ReplicaSet and ReplicationController controllers: keep `spec.replicas` pods alive.

As upstream's pkg/controller/replicaset (which also runs ReplicationControllers):
claim matching pods (adopting orphans, releasing pods whose labels moved away),
create missing pods in slow-start batches, delete the surplus in deletion-rank
order, and report counts through the status subresource. Expectations keep a
stale pod cache from causing double creation or deletion.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any, ClassVar

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.api.labels import (
    InvalidSelector,
    label_selector_matches,
    selector_is_empty,
    selector_is_valid,
    selector_to_string,
)
from kubi.client.events import NORMAL, WARNING
from kubi.client.informer import key_of
from kubi.controllers._pods import (
    SLOW_START_INITIAL_BATCH,
    Expectations,
    adopt_patch,
    claim_candidates,
    claim_pods,
    controller_ref,
    index_by_controller,
    index_by_labels,
    is_pod_active,
    is_pod_available,
    is_pod_ready,
    pod_deletion_rank,
    pod_from_template,
    release_patch,
    seconds_until_available,
    selected_by,
    slow_start_batch,
)
from kubi.controllers.base import Controller, ControllerContext

log = logging.getLogger("kubi.controllers.replicaset")

Obj = dict[str, Any]

BURST_REPLICAS = 500  # upstream BurstReplicas: most pods created or deleted in one sync
STATUS_UPDATE_RETRIES = 1
REPLICA_FAILURE = "ReplicaFailure"
CONTROLLER_UID_INDEX = "replicaset-controller:controller-uid"


def _controller_uid(obj: Obj) -> list[str]:
    ref = controller_ref(obj)
    return [str(ref["uid"])] if ref and ref.get("uid") else []


def _error_text(err: Exception) -> str:
    return err.message if isinstance(err, StatusError) else str(err)


def _is_namespace_terminating(err: Exception) -> bool:
    return isinstance(err, StatusError) and any(
        c.type == "NamespaceTerminating" for c in err.causes)


def desired_replicas(owner: Obj) -> int:
    replicas = (owner.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def calculate_status(owner: Obj, pods: list[Obj], manage_error: Exception | None,
                     now: datetime.datetime) -> Obj:
    """The status a sync reports: counts of claimed active pods, and a ReplicaFailure
    condition while creating or deleting fails (upstream calculateStatus)."""
    spec = owner.get("spec") or {}
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get(
        "labels") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    fully_labeled = ready = available = 0
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if all(labels.get(k) == v for k, v in template_labels.items()):
            fully_labeled += 1
        if is_pod_ready(pod):
            ready += 1
            if is_pod_available(pod, min_ready, now):
                available += 1
    conditions = [dict(c) for c in (owner.get("status") or {}).get("conditions") or []]
    failure = next((c for c in conditions if c.get("type") == REPLICA_FAILURE), None)
    if manage_error is not None and failure is None:
        diff = len(pods) - desired_replicas(owner)
        reason = "FailedCreate" if diff < 0 else "FailedDelete" if diff > 0 else ""
        conditions.append({"type": REPLICA_FAILURE, "status": "True",
                           "lastTransitionTime": m.rfc3339(now), "reason": reason,
                           "message": _error_text(manage_error)})
    elif manage_error is None and failure is not None:
        conditions = [c for c in conditions if c.get("type") != REPLICA_FAILURE]
    # Zero counts are omitted on the wire, as Go's omitempty does.
    status: Obj = {"replicas": len(pods)}
    for field_name, value in (("fullyLabeledReplicas", fully_labeled),
                              ("readyReplicas", ready), ("availableReplicas", available)):
        if value:
            status[field_name] = value
    generation = owner["metadata"].get("generation")
    if generation:
        status["observedGeneration"] = generation
    if conditions:
        status["conditions"] = conditions
    return status


class _ReplicaController(Controller):
    """The logic ReplicaSets and ReplicationControllers share."""

    resource: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    event_component: ClassVar[str] = ""

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder(self.event_component)
        self.expectations = Expectations()
        self.owners = ctx.informers.informer(self.resource)
        self.pods = ctx.informers.informer("pods")
        self.owners.cache.add_indexer(CONTROLLER_UID_INDEX, _controller_uid)
        # A sync reads its own pods (and orphans) rather than scanning the namespace.
        index_by_controller(self.pods.cache)
        index_by_labels(self.pods.cache)
        self.owners.add_handlers(self.enqueue, lambda old, new: self.enqueue(new),
                                 self._owner_deleted)
        self.pods.add_handlers(self._pod_added, self._pod_updated, self._pod_deleted)

    # -- what differs between the two kinds -------------------------------------------

    def selector_of(self, owner: Obj) -> Obj | None:
        raise NotImplementedError

    # -- mapping events to owners ------------------------------------------------------------

    def _owner_deleted(self, owner: Obj) -> None:
        key = key_of(owner)
        self.expectations.delete(key)
        self.enqueue_key(key)

    def _resolve(self, namespace: str, ref: Obj | None) -> Obj | None:
        """The owner a controller ref points at, if it is one of ours and still the same."""
        if ref is None or ref.get("kind") != self.kind:
            return None
        owner = self.owners.cache.get_by_name(namespace, str(ref.get("name", "")))
        if owner is None or (owner.get("metadata") or {}).get("uid") != ref.get("uid"):
            return None
        return owner

    def _owners_selecting(self, pod: Obj) -> list[Obj]:
        """Our owners whose selector matches an orphan pod (an empty selector matches none)."""
        labels = (pod.get("metadata") or {}).get("labels") or {}
        found = []
        for owner in self.owners.cache.list(m.namespace_of(pod)):
            selector = self.selector_of(owner)
            if selector is None or selector_is_empty(selector):
                continue
            try:
                if label_selector_matches(selector, labels):
                    found.append(owner)
            except InvalidSelector:
                continue
        return found

    def _pod_added(self, pod: Obj) -> None:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            # Seen for the first time already terminating (e.g. after a restart).
            self._pod_deleted(pod)
            return
        ref = controller_ref(pod)
        if ref is not None:
            owner = self._resolve(m.namespace_of(pod), ref)
            if owner is not None:
                key = key_of(owner)
                self.expectations.creation_observed(key)
                self.enqueue_key(key)
            return
        for owner in self._owners_selecting(pod):
            self.enqueue(owner)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
        if old_meta.get("resourceVersion") == new_meta.get("resourceVersion"):
            return  # a resync: nothing changed
        labels_changed = old_meta.get("labels") != new_meta.get("labels")
        if new_meta.get("deletionTimestamp"):
            # Graceful deletion: count it as gone now so a replacement starts at once.
            self._pod_deleted(new)
            if labels_changed:
                self._pod_deleted(old)
            return
        old_ref, new_ref = controller_ref(old), controller_ref(new)
        ref_changed = (old_ref or {}).get("uid") != (new_ref or {}).get("uid")
        namespace = m.namespace_of(new)
        if ref_changed and old_ref is not None:
            previous = self._resolve(namespace, old_ref)
            if previous is not None:
                self.enqueue(previous)
        if new_ref is not None:
            owner = self._resolve(namespace, new_ref)
            if owner is None:
                return
            self.enqueue(owner)
            min_ready = int((owner.get("spec") or {}).get("minReadySeconds") or 0)
            if min_ready > 0 and not is_pod_ready(old) and is_pod_ready(new):
                self.queue.add_after(key_of(owner), min_ready + 1)
            return
        if labels_changed or ref_changed:
            for owner in self._owners_selecting(new):
                self.enqueue(owner)

    def _pod_deleted(self, pod: Obj) -> None:
        owner = self._resolve(m.namespace_of(pod), controller_ref(pod))
        if owner is None:
            return
        key = key_of(owner)
        self.expectations.deletion_observed(key, key_of(pod))
        self.enqueue_key(key)

    # -- the sync ---------------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        cached = self.owners.cache.get(key)
        if cached is None:
            self.expectations.delete(key)
            return None
        owner = m.deep_copy(cached)
        needs_sync = self.expectations.satisfied(key)
        selector = self.selector_of(owner)
        try:
            selector_to_string(selector)  # rejects an invalid selector up front
        except InvalidSelector as err:
            log.warning("%s %s has an invalid selector: %s", self.kind, key, err)
            return None
        active = [p for p in claim_candidates(self.pods.cache, owner) if is_pod_active(p)]
        pods = await self._claim(owner, selector, active)

        manage_error: Exception | None = None
        if needs_sync and not owner["metadata"].get("deletionTimestamp"):
            try:
                await self._manage_replicas(key, owner, pods)
            except Exception as err:  # reported in status, then retried with back-off
                manage_error = err
        now = m.now()
        status = calculate_status(owner, pods, manage_error, now)
        updated = await self._update_status(owner, status)
        if manage_error is not None:
            raise manage_error
        return self._next_availability_check(updated, pods, now)

    async def _claim(self, owner: Obj, selector: Obj | None, pods: list[Obj]) -> list[Obj]:
        adopt, release, owned = claim_pods(owner, selector, pods)
        claimed = list(owned)
        if adopt and await self._can_adopt(owner):
            for pod in adopt:
                try:
                    claimed.append(await self.client.patch(
                        "pods", m.name_of(pod), adopt_patch(owner, pod), m.namespace_of(pod),
                        patch_type="strategic"))
                except StatusError as err:
                    if err.code != 404:
                        raise
        for pod in release:
            try:
                await self.client.patch("pods", m.name_of(pod), release_patch(owner, pod),
                                        m.namespace_of(pod), patch_type="strategic")
            except StatusError as err:
                if err.code not in (404, 422):  # gone, or no longer ours
                    raise
        return claimed

    async def _can_adopt(self, owner: Obj) -> bool:
        """Re-read the owner: a stale cache must not adopt for a deleted or replaced owner."""
        try:
            fresh = await self.client.get(self.resource, m.name_of(owner), m.namespace_of(owner))
        except StatusError as err:
            if err.code == 404:
                return False
            raise
        fresh_meta = fresh.get("metadata") or {}
        return (fresh_meta.get("uid") == owner["metadata"].get("uid")
                and not fresh_meta.get("deletionTimestamp"))

    async def _manage_replicas(self, key: str, owner: Obj, pods: list[Obj]) -> None:
        diff = len(pods) - desired_replicas(owner)
        if diff < 0:
            count = min(-diff, BURST_REPLICAS)
            self.expectations.expect_creations(key, count)
            successes, error = await slow_start_batch(
                count, SLOW_START_INITIAL_BATCH, lambda: self._create_pod(owner))
            skipped = count - successes
            if skipped > 0:
                # Never created, so the informer will never report them.
                self.expectations.lower(key, adds=skipped)
            if error is not None:
                raise error
        elif diff > 0:
            count = min(diff, BURST_REPLICAS)
            doomed = self._pods_to_delete(owner, pods, count)
            self.expectations.expect_deletions(key, [key_of(p) for p in doomed])
            results = await asyncio.gather(*(self._delete_pod(key, owner, p) for p in doomed),
                                           return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    def _pods_to_delete(self, owner: Obj, pods: list[Obj], count: int) -> list[Obj]:
        if count >= len(pods):
            return pods
        return pod_deletion_rank(pods, self._related_pods(owner), m.now())[:count]

    def _related_pods(self, owner: Obj) -> list[Obj]:
        """Pods of every owner sharing this owner's controller (a Deployment's ReplicaSets)."""
        ref = controller_ref(owner)
        if ref is None:
            return []
        seen: set[str] = set()
        related = []
        for sibling in self.owners.cache.by_index(CONTROLLER_UID_INDEX, str(ref.get("uid"))):
            selector = self.selector_of(sibling)
            if selector_is_valid(selector):
                for pod in selected_by(self.pods.cache, m.namespace_of(sibling), selector):
                    uid = (pod.get("metadata") or {}).get("uid", "")
                    if uid not in seen:
                        seen.add(uid)
                        related.append(pod)
                continue
            # An invalid selector stops at the first pod it cannot be evaluated on.
            for pod in self.pods.cache.list(m.namespace_of(sibling)):
                uid = (pod.get("metadata") or {}).get("uid", "")
                if uid in seen:
                    continue
                try:
                    if not label_selector_matches(selector, (pod.get("metadata") or {}).get(
                            "labels")):
                        continue
                except InvalidSelector:
                    break
                seen.add(uid)
                related.append(pod)
        return related

    async def _create_pod(self, owner: Obj) -> None:
        template = (owner.get("spec") or {}).get("template")
        if not template:
            raise ValueError(f"{self.kind} has no pod template")
        pod = pod_from_template(template, owner)
        if not (pod["metadata"].get("labels")):
            raise ValueError("unable to create pods, no labels")
        try:
            created = await self.client.create("pods", pod, m.namespace_of(owner))
        except StatusError as err:
            if _is_namespace_terminating(err):
                return  # every create would fail; the namespace is going away
            await self.recorder.event(owner, WARNING, "FailedCreate",
                                      f"Error creating: {_error_text(err)}")
            raise
        await self.recorder.event(owner, NORMAL, "SuccessfulCreate",
                                  f"Created pod: {m.name_of(created)}")

    async def _delete_pod(self, key: str, owner: Obj, pod: Obj) -> None:
        try:
            await self.client.delete("pods", m.name_of(pod), m.namespace_of(pod))
        except StatusError as err:
            # The informer will not see this deletion: stop waiting for it.
            self.expectations.deletion_observed(key, key_of(pod))
            if err.code == 404:
                return
            await self.recorder.event(owner, WARNING, "FailedDelete",
                                      f"Error deleting: {_error_text(err)}")
            raise
        await self.recorder.event(owner, NORMAL, "SuccessfulDelete",
                                  f"Deleted pod: {m.name_of(pod)}")

    # -- status ----------------------------------------------------------------------------

    async def _update_status(self, owner: Obj, status: Obj) -> Obj:
        def meaningful(value: Obj) -> Obj:
            return {k: v for k, v in value.items() if v not in (0, None, [])}

        if meaningful(owner.get("status") or {}) == meaningful(status):
            return owner
        target = owner
        for attempt in range(STATUS_UPDATE_RETRIES + 1):
            target["status"] = status
            try:
                updated: Obj = await self.client.update_status(self.resource, target)
                return updated
            except StatusError as err:
                if attempt >= STATUS_UPDATE_RETRIES or err.code not in (409,):
                    raise
            target = await self.client.get(self.resource, m.name_of(owner),
                                           m.namespace_of(owner))
            if (target.get("metadata") or {}).get("uid") != owner["metadata"].get("uid"):
                return owner  # replaced meanwhile; its own sync will report
            generation = target["metadata"].get("generation")
            if generation:
                status["observedGeneration"] = generation
        return owner

    def _next_availability_check(self, owner: Obj, pods: list[Obj],
                                 now: datetime.datetime) -> float | None:
        """When a ready pod will have been ready for minReadySeconds: count it then."""
        min_ready = int((owner.get("spec") or {}).get("minReadySeconds") or 0)
        if min_ready <= 0:
            return None
        waits = [w for p in pods
                 if (w := seconds_until_available(p, min_ready, now)) is not None]
        return min(waits) + 1.0 if waits else None


class ReplicaSetController(_ReplicaController):
    name = "replicaset"
    resource = "replicasets.apps"
    kind = "ReplicaSet"
    event_component = "replicaset-controller"

    def selector_of(self, owner: Obj) -> Obj | None:
        selector = (owner.get("spec") or {}).get("selector")
        return selector if isinstance(selector, dict) else None


class ReplicationControllerController(_ReplicaController):
    name = "replicationcontroller"
    resource = "replicationcontrollers"
    kind = "ReplicationController"
    event_component = "replication-controller"

    def selector_of(self, owner: Obj) -> Obj | None:
        # An RC's selector is a plain label map (defaulted from the template's labels).
        spec = owner.get("spec") or {}
        selector = spec.get("selector")
        if not selector:
            selector = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
        return {"matchLabels": dict(selector)} if selector else None
