"""The StatefulSet controller: pods `<set>-<ordinal>` with stable identity and storage.

As upstream's pkg/controller/statefulset: OrderedReady sets create the next pod
only once every lower one is Running and Ready and remove pods from the highest
ordinal down, one at a time; Parallel sets do both at once. Each pod's
PersistentVolumeClaims come from `volumeClaimTemplates` and are created before
it, and keep or lose owner references as `persistentVolumeClaimRetentionPolicy`
says so the garbage collector removes them when asked. Templates are recorded as
ControllerRevisions; RollingUpdate replaces pods from the highest ordinal down to
`partition`, OnDelete waits for the user to delete them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.api.labels import InvalidSelector, label_selector_matches
from kubi.client.events import NORMAL, WARNING
from kubi.client.informer import key_of
from kubi.controllers._history import (
    History,
    apply_revision,
    equal_revision,
    find_equal_revisions,
    new_revision,
    next_revision,
    revisions_to_truncate,
    sort_revisions,
    template_patch,
)
from kubi.controllers._pods import (
    adopt_patch,
    cached_controller,
    claim_candidates,
    claim_pods,
    controller_ref,
    index_by_controller,
    is_pod_available,
    is_pod_ready,
    owner_reference,
    owners_selecting,
    pod_from_template,
    release_patch,
    seconds_until_available,
)
from kubi.controllers.base import Controller, ControllerContext

Obj = dict[str, Any]

STATEFULSETS = "statefulsets.apps"
PODS = "pods"
CLAIMS = "persistentvolumeclaims"
KIND = "StatefulSet"
API_VERSION = "apps/v1"

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
REVISION_LABEL = "controller-revision-hash"
MAX_BATCH = 500
STATUS_RETRIES = 10

_ORDINAL_RE = re.compile(r"^(.*)-([0-9]+)$")


# -- identity -----------------------------------------------------------------------------


def parent_and_ordinal(pod: Obj) -> tuple[str, int]:
    """(`<set>`, ordinal) from a pod named `<set>-<ordinal>`; ("", -1) otherwise."""
    found = _ORDINAL_RE.match((pod.get("metadata") or {}).get("name", ""))
    if found is None:
        return "", -1
    ordinal = int(found.group(2))
    return found.group(1), ordinal if ordinal < 2 ** 31 else -1


def ordinal_of(pod: Obj) -> int:
    return parent_and_ordinal(pod)[1]


def is_member_of(sts: Obj, pod: Obj) -> bool:
    return parent_and_ordinal(pod)[0] == (sts.get("metadata") or {}).get("name")


def start_ordinal(sts: Obj) -> int:
    return int(((sts.get("spec") or {}).get("ordinals") or {}).get("start") or 0)


def replica_count(sts: Obj) -> int:
    replicas = (sts.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def in_ordinal_range(pod: Obj, sts: Obj) -> bool:
    ordinal = ordinal_of(pod)
    return start_ordinal(sts) <= ordinal < start_ordinal(sts) + replica_count(sts)


def pod_name(sts: Obj, ordinal: int) -> str:
    return f"{sts['metadata']['name']}-{ordinal}"


def claim_name(sts: Obj, template_name: str, ordinal: int) -> str:
    return f"{template_name}-{sts['metadata']['name']}-{ordinal}"


def pod_revision(pod: Obj) -> str:
    return str(((pod.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL, ""))


def claim_templates(sts: Obj) -> list[Obj]:
    return [t for t in (sts.get("spec") or {}).get("volumeClaimTemplates") or []
            if isinstance(t, dict)]


def retention_policy(sts: Obj) -> tuple[str, str]:
    """(whenDeleted, whenScaled); Retain when unset."""
    policy = (sts.get("spec") or {}).get("persistentVolumeClaimRetentionPolicy") or {}
    return policy.get("whenDeleted") or "Retain", policy.get("whenScaled") or "Retain"


def update_strategy(sts: Obj) -> Obj:
    strategy = (sts.get("spec") or {}).get("updateStrategy") or {}
    return strategy if isinstance(strategy, dict) else {}


def pod_claims(sts: Obj, pod: Obj) -> dict[str, Obj]:
    """Template name -> the claim the pod's ordinal gets (getPersistentVolumeClaims)."""
    ordinal = ordinal_of(pod)
    selector_labels = ((sts.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    claims: dict[str, Obj] = {}
    for template in claim_templates(sts):
        claim = m.deep_copy(template)
        claim.pop("status", None)
        template_name = (template.get("metadata") or {}).get("name", "")
        metadata = claim.setdefault("metadata", {})
        for system_field in ("uid", "resourceVersion", "creationTimestamp", "generation"):
            metadata.pop(system_field, None)
        metadata["name"] = claim_name(sts, template_name, ordinal)
        metadata["namespace"] = sts["metadata"].get("namespace", "")
        metadata["labels"] = {**(metadata.get("labels") or {}), **selector_labels}
        claim["apiVersion"] = "v1"
        claim["kind"] = "PersistentVolumeClaim"
        claims[template_name] = claim
    return claims


def identity_matches(sts: Obj, pod: Obj) -> bool:
    parent, ordinal = parent_and_ordinal(pod)
    meta = pod.get("metadata") or {}
    return (ordinal >= 0 and parent == sts["metadata"]["name"]
            and meta.get("name") == pod_name(sts, ordinal)
            and meta.get("namespace") == sts["metadata"].get("namespace")
            and (meta.get("labels") or {}).get(POD_NAME_LABEL) == meta.get("name"))


def storage_matches(sts: Obj, pod: Obj) -> bool:
    ordinal = ordinal_of(pod)
    if ordinal < 0:
        return False
    volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
    for template in claim_templates(sts):
        template_name = (template.get("metadata") or {}).get("name", "")
        source = (volumes.get(template_name) or {}).get("persistentVolumeClaim") or {}
        if source.get("claimName") != claim_name(sts, template_name, ordinal):
            return False
    return True


def update_identity(sts: Obj, pod: Obj) -> None:
    ordinal = ordinal_of(pod)
    meta = pod.setdefault("metadata", {})
    meta["name"] = pod_name(sts, ordinal)
    meta["namespace"] = sts["metadata"].get("namespace", "")
    labels = meta.setdefault("labels", {})
    labels[POD_NAME_LABEL] = meta["name"]
    labels[POD_INDEX_LABEL] = str(ordinal)


def update_storage(sts: Obj, pod: Obj) -> None:
    """Point the pod's claim volumes at its own claims, replacing same-named volumes."""
    claims = pod_claims(sts, pod)
    volumes = [{"name": name, "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
               for name, claim in claims.items()]
    spec = pod.setdefault("spec", {})
    volumes += [v for v in spec.get("volumes") or [] if v.get("name") not in claims]
    if volumes:
        spec["volumes"] = volumes


def new_pod(sts: Obj, ordinal: int) -> Obj:
    """A pod for `ordinal` from the set's template (newStatefulSetPod)."""
    pod = pod_from_template((sts.get("spec") or {}).get("template") or {}, sts)
    pod["metadata"]["name"] = pod_name(sts, ordinal)
    update_identity(sts, pod)
    pod["spec"]["hostname"] = pod["metadata"]["name"]
    service = (sts.get("spec") or {}).get("serviceName")
    if service:
        pod["spec"]["subdomain"] = service
    update_storage(sts, pod)
    return pod


def new_versioned_pod(current_set: Obj, update_set: Obj, current_revision: str,
                      update_revision: str, ordinal: int) -> Obj:
    """A pod at the current revision below the partition, else at the update revision."""
    strategy = update_strategy(current_set)
    rolling = strategy.get("rollingUpdate")
    start = start_ordinal(current_set)
    current_replicas = int((current_set.get("status") or {}).get("currentReplicas") or 0)
    stays_current = (
        (strategy.get("type") == "RollingUpdate" and rolling is None
         and ordinal < start + current_replicas)
        or (rolling is not None and ordinal < start + int(rolling.get("partition") or 0)))
    if stays_current:
        pod = new_pod(current_set, ordinal)
        pod["metadata"]["labels"][REVISION_LABEL] = current_revision
        return pod
    pod = new_pod(update_set, ordinal)
    pod["metadata"]["labels"][REVISION_LABEL] = update_revision
    return pod


# -- pod state ----------------------------------------------------------------------------


def phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def is_created(pod: Obj) -> bool:
    return phase(pod) != ""


def is_terminating(pod: Obj) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def is_running_and_ready(pod: Obj) -> bool:
    return phase(pod) == "Running" and is_pod_ready(pod)


def is_running_and_available(pod: Obj, min_ready_seconds: int) -> bool:
    return is_pod_available(pod, min_ready_seconds)


def is_healthy(pod: Obj) -> bool:
    return is_running_and_ready(pod) and not is_terminating(pod)


# -- claim ownership under the retention policy ------------------------------------------------


def _uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def _matches_ref(ref: Obj, obj: Obj, api_version: str, kind: str) -> bool:
    return (ref.get("apiVersion") == api_version and ref.get("kind") == kind
            and ref.get("name") == (obj.get("metadata") or {}).get("name"))


def _refs(obj: Obj) -> list[Obj]:
    return list((obj.get("metadata") or {}).get("ownerReferences") or [])


def has_owner_ref(target: Obj, owner: Obj) -> bool:
    return any(ref.get("uid") == _uid(owner) for ref in _refs(target))


def has_stale_owner_ref(target: Obj, owner: Obj, api_version: str, kind: str) -> bool:
    """A reference to an object of this name and kind, but another (older) uid."""
    for ref in _refs(target):
        if _matches_ref(ref, owner, api_version, kind):
            return ref.get("uid") != _uid(owner)
    return False


def has_unexpected_controller(claim: Obj, sts: Obj, pod: Obj) -> bool:
    if retention_policy(sts) == ("Retain", "Retain"):
        return False  # under Retain other controllers may manage the claim
    for ref in _refs(claim):
        if _matches_ref(ref, sts, API_VERSION, KIND):
            if ref.get("uid") != _uid(sts):
                return True
            continue
        if _matches_ref(ref, pod, "v1", "Pod"):
            if ref.get("uid") != _uid(pod):
                return True
            continue
        if ref.get("controller"):
            return True
    return False


def has_non_controller_owner(claim: Obj, sts: Obj, pod: Obj) -> bool:
    return any(ref.get("uid") in (_uid(sts), _uid(pod)) and not ref.get("controller")
               for ref in _refs(claim))


def claim_owner_up_to_date(claim: Obj, sts: Obj, pod: Obj) -> bool:
    """Whether the claim's owners match the policy: the set owns it when deletion
    deletes, the pod owns it when scale-down deletes and the pod is condemned."""
    if (has_stale_owner_ref(claim, sts, API_VERSION, KIND)
            or has_stale_owner_ref(claim, pod, "v1", "Pod")):
        return True  # left by an earlier incarnation: not ours to touch
    if has_unexpected_controller(claim, sts, pod):
        return not (has_owner_ref(claim, sts) or has_owner_ref(claim, pod))
    if has_non_controller_owner(claim, sts, pod):
        return False
    when_deleted, when_scaled = retention_policy(sts)
    scaled_down = not in_ordinal_range(pod, sts)
    want_set = when_deleted == "Delete" and not (when_scaled == "Delete" and scaled_down)
    want_pod = when_scaled == "Delete" and scaled_down
    if (when_deleted, when_scaled) not in (("Retain", "Retain"), ("Delete", "Retain"),
                                           ("Retain", "Delete"), ("Delete", "Delete")):
        want_set = want_pod = False
    return has_owner_ref(claim, sts) == want_set and has_owner_ref(claim, pod) == want_pod


def update_claim_owner_refs(claim: Obj, sts: Obj, pod: Obj) -> None:
    """Rewrite the claim's references to the set and pod to follow the policy."""
    unexpected = has_unexpected_controller(claim, sts, pod)
    refs = [ref for ref in _refs(claim)
            if not (_matches_ref(ref, sts, API_VERSION, KIND)
                    or _matches_ref(ref, pod, "v1", "Pod"))]
    if not unexpected:
        when_deleted, when_scaled = retention_policy(sts)
        scaled_down = not in_ordinal_range(pod, sts)
        if when_scaled == "Delete" and scaled_down and when_deleted in ("Retain", "Delete"):
            refs.append(owner_reference(pod))
        elif when_deleted == "Delete" and when_scaled in ("Retain", "Delete"):
            refs.append(owner_reference(sts))
    claim.setdefault("metadata", {})["ownerReferences"] = refs


# -- status --------------------------------------------------------------------------------


@dataclass
class SetStatus:
    observed_generation: int = 0
    replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    current_replicas: int = 0
    updated_replicas: int = 0
    current_revision: str = ""
    update_revision: str = ""
    collision_count: int = 0

    def count(self, pod_lists: list[list[Obj]], min_ready_seconds: int) -> None:
        self.replicas = self.ready_replicas = self.available_replicas = 0
        self.current_replicas = self.updated_replicas = 0
        for pods in pod_lists:
            for pod in pods:
                if is_created(pod):
                    self.replicas += 1
                if is_running_and_ready(pod):
                    self.ready_replicas += 1
                    if is_running_and_available(pod, min_ready_seconds):
                        self.available_replicas += 1
                if is_created(pod) and not is_terminating(pod):
                    if pod_revision(pod) == self.current_revision:
                        self.current_replicas += 1
                    if pod_revision(pod) == self.update_revision:
                        self.updated_replicas += 1

    def as_dict(self, conditions: list[Obj] | None) -> Obj:
        """The wire form, leaving out what Go's omitempty leaves out."""
        status: Obj = {"replicas": self.replicas}
        optional = {"observedGeneration": self.observed_generation,
                    "readyReplicas": self.ready_replicas,
                    "currentReplicas": self.current_replicas,
                    "updatedReplicas": self.updated_replicas,
                    "currentRevision": self.current_revision,
                    "updateRevision": self.update_revision}
        status.update({k: v for k, v in optional.items() if v})
        status["collisionCount"] = self.collision_count
        status["availableReplicas"] = self.available_replicas
        if conditions:
            status["conditions"] = conditions
        return status


# -- the controller -----------------------------------------------------------------------------


class StatefulSetController(Controller):
    name = "statefulset"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.sets = ctx.informers.informer(STATEFULSETS)
        self.pods = ctx.informers.informer(PODS)
        index_by_controller(self.pods.cache)  # a sync reads its own pods and orphans
        self.claims = ctx.informers.informer(CLAIMS)
        self.history = History(self.client)
        self.sets.add_handlers(self.enqueue, lambda old, new: self.enqueue(new), self.enqueue)
        self.pods.add_handlers(self._pod_added, self._pod_updated, self._pod_deleted)

    # -- event handlers ---------------------------------------------------------------

    def _owner_of(self, pod: Obj) -> Obj | None:
        return cached_controller(self.sets.cache, pod, API_VERSION, KIND)

    def _sets_selecting(self, pod: Obj) -> list[Obj]:
        return owners_selecting(self.sets.cache, pod)

    def _pod_added(self, pod: Obj) -> None:
        owner = self._owner_of(pod)
        if owner is not None:
            self.enqueue(owner)
        elif controller_ref(pod) is None:
            for sts in self._sets_selecting(pod):
                self.enqueue(sts)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        old_owner = self._owner_of(old)
        new_owner = self._owner_of(new)
        if old_owner is not None and (new_owner is None or _uid(old_owner) != _uid(new_owner)):
            self.enqueue(old_owner)
        if new_owner is not None:
            self.enqueue(new_owner)
        elif controller_ref(new) is None:
            for sts in self._sets_selecting(new):
                self.enqueue(sts)

    def _pod_deleted(self, pod: Obj) -> None:
        owner = self._owner_of(pod)
        if owner is not None:
            self.enqueue(owner)

    # -- sync -------------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        cached = self.sets.cache.get(key)
        if cached is None:
            return None
        sts = m.deep_copy(cached)
        sts.setdefault("apiVersion", API_VERSION)
        sts.setdefault("kind", KIND)
        selector = (sts.get("spec") or {}).get("selector")
        try:
            label_selector_matches(selector, {})
        except InvalidSelector as err:
            await self.recorder.event(sts, WARNING, "InvalidSelector", str(err))
            return None
        revisions = await self._adopt_orphan_revisions(
            sts, await self.history.list_revisions(sts, selector))
        pods = await self._claim_pods(sts, selector)
        status = await self._sync(sts, pods, sort_revisions(revisions))
        min_ready = int((sts.get("spec") or {}).get("minReadySeconds") or 0)
        if min_ready > 0 and status is not None and \
                status.available_replicas != replica_count(sts):
            waits = [seconds_until_available(p, min_ready) for p in pods]
            pending = [w for w in waits if w is not None]
            return min(pending) + 0.05 if pending else float(min_ready)
        return None

    async def _can_adopt(self, sts: Obj) -> bool:
        """Re-read the set from the API: never adopt for a replaced or deleting set."""
        meta = sts["metadata"]
        try:
            fresh = await self.client.get(STATEFULSETS, meta["name"], meta.get("namespace", ""))
        except StatusError as err:
            if err.code == 404:
                return False
            raise
        fresh_meta = fresh.get("metadata") or {}
        return fresh_meta.get("uid") == meta.get("uid") and \
            not fresh_meta.get("deletionTimestamp")

    async def _adopt_orphan_revisions(self, sts: Obj, revisions: list[Obj]) -> list[Obj]:
        if all(controller_ref(r) is not None for r in revisions) or \
                not await self._can_adopt(sts):
            return revisions
        return [r if controller_ref(r) is not None else await self.history.adopt(sts, r)
                for r in revisions]

    async def _claim_pods(self, sts: Obj, selector: Obj | None) -> list[Obj]:
        namespace = sts["metadata"].get("namespace", "")
        candidates = claim_candidates(self.pods.cache, sts)
        adopt, release, owned = claim_pods(sts, selector, candidates,
                                           matches=lambda pod: is_member_of(sts, pod))
        pods = list(owned)
        if adopt and await self._can_adopt(sts):
            for pod in adopt:
                try:
                    pods.append(await self.client.patch(
                        PODS, pod["metadata"]["name"], adopt_patch(sts, pod), namespace,
                        patch_type="strategic"))
                except StatusError as err:
                    if err.code not in (404, 422):
                        raise
        for pod in release:
            try:
                await self.client.patch(PODS, pod["metadata"]["name"], release_patch(sts, pod),
                                        namespace, patch_type="strategic")
            except StatusError as err:
                if err.code not in (404, 422):
                    raise
        return pods

    async def _sync(self, sts: Obj, pods: list[Obj], revisions: list[Obj]) -> SetStatus | None:
        current, update, collision_count = await self._revisions(sts, revisions)
        try:
            status = await self._update_set(sts, current, update, collision_count, pods)
            if status is not None:
                await self._write_status(sts, status)
            return status
        finally:
            await self._truncate_history(sts, pods, revisions, current, update)

    async def _revisions(self, sts: Obj, revisions: list[Obj]) -> tuple[Obj, Obj, int]:
        """(current revision, update revision, collision count), recording the set's
        template as a new revision or renumbering an equal older one (a rollback)."""
        status = sts.get("status") or {}
        collision_count = int(status.get("collisionCount") or 0)
        labels = ((sts.get("spec") or {}).get("template") or {}).get("metadata", {}).get(
            "labels") or {}
        candidate = new_revision(sts, template_patch(sts), next_revision(revisions), labels,
                                 collision_count,
                                 annotations=(sts["metadata"].get("annotations") or None))
        equal = find_equal_revisions(revisions, candidate)
        if equal and equal_revision(revisions[-1], equal[-1]):
            update = revisions[-1]
        elif equal:
            update = await self.history.update_revision(equal[-1], candidate["revision"])
        else:
            update, collision_count = await self.history.create(sts, candidate, collision_count)
        current = next((r for r in revisions
                        if r["metadata"]["name"] == status.get("currentRevision")), update)
        return current, update, collision_count

    async def _truncate_history(self, sts: Obj, pods: list[Obj], revisions: list[Obj],
                                current: Obj, update: Obj) -> None:
        live = {current["metadata"]["name"], update["metadata"]["name"]}
        live.update(pod_revision(pod) for pod in pods)
        limit = (sts.get("spec") or {}).get("revisionHistoryLimit")
        for revision in revisions_to_truncate(revisions, live, 10 if limit is None else limit):
            await self.history.delete(revision)

    async def _update_set(self, sts: Obj, current: Obj, update: Obj, collision_count: int,
                          pods: list[Obj]) -> SetStatus | None:
        """Create, fix and delete pods towards the target state (updateStatefulSet)."""
        spec = sts.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        current_set = apply_revision(sts, current)
        update_set = apply_revision(sts, update)
        status = SetStatus(observed_generation=int(sts["metadata"].get("generation") or 0),
                           current_revision=current["metadata"]["name"],
                           update_revision=update["metadata"]["name"],
                           collision_count=collision_count)
        status.count([pods], min_ready)

        start, count = start_ordinal(sts), replica_count(sts)
        replicas: list[Obj | None] = [None] * count
        condemned: list[Obj] = []
        for pod in pods:
            if in_ordinal_range(pod, sts):
                replicas[ordinal_of(pod) - start] = pod
            elif ordinal_of(pod) >= 0:
                condemned.append(pod)
        slots: list[Obj] = [
            pod if pod is not None else new_versioned_pod(
                current_set, update_set, status.current_revision, status.update_revision,
                start + index)
            for index, pod in enumerate(replicas)]
        condemned.sort(key=ordinal_of, reverse=True)

        first_unhealthy: Obj | None = next((p for p in slots if not is_healthy(p)), None)
        if first_unhealthy is None:
            first_unhealthy = next((p for p in reversed(condemned) if not is_healthy(p)), None)

        def recount() -> SetStatus:
            status.count([slots, condemned], min_ready)
            return status

        if sts["metadata"].get("deletionTimestamp"):
            return status
        monotonic = spec.get("podManagementPolicy") != "Parallel"

        async def replica_step(index: int) -> bool:
            return await self._process_replica(sts, update_set, monotonic, slots, index)

        if await self._run_for_all(len(slots), replica_step, monotonic):
            return recount()

        async def claim_step(index: int) -> bool:
            if not self._claims_match_policy(update_set, condemned[index]):
                await self._update_claims_for_policy(update_set, condemned[index])
            return False

        if await self._run_for_all(len(condemned), claim_step, monotonic):
            return recount()

        async def condemned_step(index: int) -> bool:
            return await self._process_condemned(sts, first_unhealthy, monotonic, condemned,
                                                 index, min_ready)

        if await self._run_for_all(len(condemned), condemned_step, monotonic):
            return recount()
        recount()

        strategy = update_strategy(sts)
        if strategy.get("type") == "OnDelete":
            return status
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
        # Replace the highest-ordinal pod not at the update revision, one at a time.
        for index in range(len(slots) - 1, partition - 1, -1):
            pod = slots[index]
            if pod_revision(pod) != status.update_revision and not is_terminating(pod):
                await self._delete_pod(sts, pod, ignore_missing=True)
                status.current_replicas -= 1
                return status
            if not is_healthy(pod):
                return status
        return status

    @staticmethod
    async def _run_for_all(count: int, step: Callable[[int], Awaitable[bool]],
                           monotonic: bool) -> bool:
        """Run `step` over 0..count-1: in order, stopping when one says so (monotonic),
        or in growing parallel batches stopping at the first error (burst)."""
        if monotonic:
            for index in range(count):
                if await step(index):
                    return True
            return False
        done, batch = 0, 1
        while done < count:
            size = min(batch, count - done, MAX_BATCH)
            results = await asyncio.gather(*(step(i) for i in range(done, done + size)),
                                           return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
            done += size
            batch = size * 2
        return False

    async def _process_replica(self, sts: Obj, update_set: Obj, monotonic: bool,
                               slots: list[Obj], index: int) -> bool:
        """One in-range ordinal: replace a finished pod, create a missing one, wait
        for an unhealthy one (monotonic), fix identity and claims. True means stop."""
        pod = slots[index]
        min_ready = int((sts.get("spec") or {}).get("minReadySeconds") or 0)
        if phase(pod) in ("Failed", "Succeeded"):
            if not is_terminating(pod):
                await self._delete_pod(sts, pod)
            return True  # the next sync creates the replacement once this one is gone
        if not is_created(pod):
            if self._claim_is_stale(sts, pod):
                return True  # wait for the garbage collector to remove the old claim
            await self._create_pod(sts, pod)
            return monotonic  # a burst goes on to the next ordinal
        if phase(pod) == "Pending":
            await self._create_claims(sts, pod)
            await self._update_claims_for_policy(sts, pod)
        if monotonic and (is_terminating(pod) or not is_running_and_ready(pod)
                          or not is_running_and_available(pod, min_ready)):
            return True
        if identity_matches(sts, pod) and storage_matches(sts, pod) and \
                self._claims_match_policy(update_set, pod):
            return False
        await self._update_pod(update_set, pod)
        return False

    async def _process_condemned(self, sts: Obj, first_unhealthy: Obj | None, monotonic: bool,
                                 condemned: list[Obj], index: int, min_ready: int) -> bool:
        pod = condemned[index]
        if is_terminating(pod):
            return monotonic  # monotonic waits for it to go before the next one
        if monotonic and pod is not first_unhealthy and (
                not is_running_and_ready(pod) or not is_running_and_available(pod, min_ready)):
            return True  # scale down only when everything else is healthy
        await self._delete_pod(sts, pod)
        return True

    # -- pods and claims through the API ----------------------------------------------------

    def _cached_claim(self, namespace: str, name: str) -> Obj | None:
        return self.claims.cache.get_by_name(namespace, name)

    def _claim_is_stale(self, sts: Obj, pod: Obj) -> bool:
        """A claim still owned by an earlier pod of this name (it is being collected)."""
        if retention_policy(sts)[1] == "Retain":
            return False
        for claim in pod_claims(sts, pod).values():
            found = self._cached_claim(claim["metadata"]["namespace"], claim["metadata"]["name"])
            if found is not None and has_stale_owner_ref(found, pod, "v1", "Pod"):
                return True
        return False

    def _claims_match_policy(self, sts: Obj, pod: Obj) -> bool:
        for claim in pod_claims(sts, pod).values():
            found = self._cached_claim(claim["metadata"]["namespace"], claim["metadata"]["name"])
            if found is not None and not claim_owner_up_to_date(found, sts, pod):
                return False
        return True

    async def _update_claims_for_policy(self, sts: Obj, pod: Obj) -> None:
        for claim in pod_claims(sts, pod).values():
            namespace, name = claim["metadata"]["namespace"], claim["metadata"]["name"]
            found = self._cached_claim(namespace, name)
            if found is None or claim_owner_up_to_date(found, sts, pod):
                continue
            updated = m.deep_copy(found)
            update_claim_owner_refs(updated, sts, pod)
            try:
                await self.client.update(CLAIMS, updated)
            except StatusError as err:
                if err.code != 404:
                    await self._pod_event(sts, pod, "update", err)
                    raise

    async def _create_claims(self, sts: Obj, pod: Obj) -> None:
        """Create the pod's missing claims; a claim being deleted blocks the pod."""
        problems: list[str] = []
        for claim in pod_claims(sts, pod).values():
            namespace, name = claim["metadata"]["namespace"], claim["metadata"]["name"]
            found = self._cached_claim(namespace, name)
            if found is not None:
                if (found.get("metadata") or {}).get("deletionTimestamp"):
                    problems.append(f"pvc {name} is being deleted")
                continue
            try:
                await self.client.create(CLAIMS, claim, namespace)
            except StatusError as err:
                if err.code == 409 and err.reason == "AlreadyExists":
                    continue
                problems.append(f"failed to create PVC {name}: {err}")
                await self.recorder.event(
                    sts, WARNING, "FailedCreate",
                    f"create Claim {name} for Pod {pod['metadata']['name']} in StatefulSet "
                    f"{sts['metadata']['name']} failed error: {err}")
                continue
            await self.recorder.event(
                sts, NORMAL, "SuccessfulCreate",
                f"create Claim {name} Pod {pod['metadata']['name']} in StatefulSet "
                f"{sts['metadata']['name']} success")
        if problems:
            raise StatusError(500, "InternalError", "; ".join(problems))

    async def _pod_event(self, sts: Obj, pod: Obj, verb: str,
                         err: Exception | None = None) -> None:
        reason = f"{'Successful' if err is None else 'Failed'}{verb.capitalize()}"
        message = (f"{verb} Pod {pod['metadata']['name']} in StatefulSet "
                   f"{sts['metadata']['name']} ")
        message += "successful" if err is None else f"failed error: {err}"
        await self.recorder.event(sts, NORMAL if err is None else WARNING, reason, message)

    async def _create_pod(self, sts: Obj, pod: Obj) -> None:
        """Claims first, then the pod, then the claims' owners (CreateStatefulPod)."""
        try:
            await self._create_claims(sts, pod)
        except StatusError as err:
            await self._pod_event(sts, pod, "create", err)
            raise
        namespace = sts["metadata"].get("namespace", "")
        try:
            created = await self.client.create(PODS, pod, namespace)
        except StatusError as err:
            if not (err.code == 409 and err.reason == "AlreadyExists"):
                await self._pod_event(sts, pod, "create", err)
            raise
        await self._update_claims_for_policy(sts, created)
        await self._pod_event(sts, created, "create")

    async def _update_pod(self, sts: Obj, pod: Obj) -> None:
        """Restore identity labels, missing claims and claim owners (UpdateStatefulPod)."""
        updated = m.deep_copy(pod)
        for _ in range(STATUS_RETRIES):
            changed = not identity_matches(sts, updated)
            if changed:
                update_identity(sts, updated)
            if not storage_matches(sts, updated):
                # A pod's volumes are immutable: all we can do is make sure the claims exist.
                await self._create_claims(sts, updated)
            await self._update_claims_for_policy(sts, updated)
            if not changed:
                return
            try:
                await self.client.update(PODS, updated)
                await self._pod_event(sts, updated, "update")
                return
            except StatusError as err:
                if err.code == 404:
                    return
                if err.code != 409:
                    await self._pod_event(sts, updated, "update", err)
                    raise
            meta = pod["metadata"]
            updated = await self.client.get(PODS, meta["name"], meta.get("namespace", ""))

    async def _delete_pod(self, sts: Obj, pod: Obj, ignore_missing: bool = False) -> None:
        meta = pod["metadata"]
        try:
            await self.client.delete(PODS, meta["name"], meta.get("namespace", ""),
                                     uid=meta.get("uid") or None)
        except StatusError as err:
            if ignore_missing and err.code == 404:
                return
            await self._pod_event(sts, pod, "delete", err)
            raise
        await self._pod_event(sts, pod, "delete")

    # -- status -------------------------------------------------------------------------

    async def _write_status(self, sts: Obj, status: SetStatus) -> None:
        """Record the status (completing a finished rolling update) when it changed."""
        wanted = replica_count(sts)
        if (update_strategy(sts).get("type") == "RollingUpdate"
                and status.updated_replicas == wanted and status.ready_replicas == wanted
                and status.replicas == wanted):
            status.current_replicas = status.updated_replicas
            status.current_revision = status.update_revision
        target = sts
        for _ in range(STATUS_RETRIES):
            old_status = target.get("status") or {}
            new_status = status.as_dict(old_status.get("conditions"))
            if new_status == old_status:
                return
            updated = m.deep_copy(target)
            updated["status"] = new_status
            try:
                await self.client.update_status(STATEFULSETS, updated)
                return
            except StatusError as err:
                if err.code != 409:
                    raise
            meta = sts["metadata"]
            target = await self.client.get(STATEFULSETS, meta["name"], meta.get("namespace", ""))
        raise StatusError(409, "Conflict", f"could not update status of {key_of(sts)}")

