"""Pure helpers every workload controller shares: owner references, pod state,
pods from templates, the order in which surplus pods go, label selectors,
adoption and release, and creation/deletion expectations.

Semantics follow upstream's pkg/controller/controller_utils.go,
controller_ref_manager.go and pkg/api/v1/pod (IsPodReady, IsPodAvailable).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import functools
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kubi.api import meta as m
from kubi.api.labels import InvalidSelector, label_selector_matches
from kubi.client.informer import Cache

Obj = dict[str, Any]

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
EXPECTATIONS_TIMEOUT = 300.0  # upstream ExpectationsTimeout: 5 minutes
MAX_NAME_LENGTH = 253
SLOW_START_INITIAL_BATCH = 1  # upstream SlowStartInitialBatchSize

_PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}


# -- owner references ----------------------------------------------------------------


def controller_ref(obj: Obj) -> Obj | None:
    """The ownerReference marked `controller: true`, if any (metav1.GetControllerOf)."""
    ref = _controller_ref_of(obj)
    return dict(ref) if ref is not None else None


def _controller_ref_of(obj: Obj) -> Obj | None:
    """controller_ref without the copy, for read-only use on hot paths."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def owner_reference(owner: Obj, block: bool = True) -> Obj:
    """A controller ownerReference to `owner` (metav1.NewControllerRef)."""
    meta = owner.get("metadata") or {}
    return {"apiVersion": owner.get("apiVersion", ""), "kind": owner.get("kind", ""),
            "name": meta.get("name", ""), "uid": meta.get("uid", ""),
            "controller": True, "blockOwnerDeletion": block}


def is_owned_by(obj: Obj, owner: Obj) -> bool:
    """Whether `obj`'s controller reference points at `owner` (by uid)."""
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == (owner.get("metadata") or {}).get("uid")


# -- pod state ---------------------------------------------------------------------------


def is_pod_active(pod: Obj) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return (phase not in ("Succeeded", "Failed")
            and not (pod.get("metadata") or {}).get("deletionTimestamp"))


def is_pod_terminating(pod: Obj) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def pod_condition(pod: Obj, condition_type: str) -> Obj | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == condition_type:
            return dict(condition)
    return None


def is_pod_ready(pod: Obj) -> bool:
    condition = pod_condition(pod, "Ready")
    return condition is not None and condition.get("status") == "True"


def _parse(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return m.parse_time(value)
    except ValueError:
        return None


def pod_ready_time(pod: Obj) -> datetime.datetime | None:
    """When the pod last became Ready (None if not ready or unknown)."""
    if not is_pod_ready(pod):
        return None
    condition = pod_condition(pod, "Ready") or {}
    return _parse(condition.get("lastTransitionTime"))


def is_pod_available(pod: Obj, min_ready_seconds: int | float,
                     now: datetime.datetime | None = None) -> bool:
    """Ready for at least `min_ready_seconds` (podutil.IsPodAvailable)."""
    if not is_pod_ready(pod):
        return False
    if not min_ready_seconds:
        return True
    since = pod_ready_time(pod)
    if since is None:
        return False
    return since + datetime.timedelta(seconds=min_ready_seconds) < (now or m.now())


def seconds_until_available(pod: Obj, min_ready_seconds: int | float,
                            now: datetime.datetime | None = None) -> float | None:
    """How long until a ready pod turns available; None when that will not happen by
    waiting (not ready) or has happened already."""
    since = pod_ready_time(pod)
    if since is None or not min_ready_seconds:
        return None
    remaining = (since + datetime.timedelta(seconds=min_ready_seconds)
                 - (now or m.now())).total_seconds()
    return remaining if remaining >= 0 else None


def max_container_restarts(pod: Obj) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return max((int(s.get("restartCount") or 0) for s in statuses), default=0)


# -- pods from templates -------------------------------------------------------------------


def pods_prefix(controller_name: str) -> str:
    """`<name>-`, unless the dash would make an invalid generateName (upstream getPodsPrefix)."""
    prefix = f"{controller_name}-"
    return prefix if len(prefix) <= MAX_NAME_LENGTH else controller_name


def pod_from_template(template: Obj, owner: Obj, generate_name: str | None = None, *,
                      controller: bool = True) -> Obj:
    """A new pod for `owner` from its pod template (upstream GetPodFromTemplate)."""
    template_meta = template.get("metadata") or {}
    owner_meta = owner.get("metadata") or {}
    metadata: Obj = {
        "generateName": (generate_name if generate_name is not None
                         else pods_prefix(owner_meta.get("name", ""))),
    }
    if owner_meta.get("namespace"):
        metadata["namespace"] = owner_meta["namespace"]
    labels = dict(template_meta.get("labels") or {})
    if labels:
        metadata["labels"] = labels
    annotations = dict(template_meta.get("annotations") or {})
    if annotations:
        metadata["annotations"] = annotations
    finalizers = list(template_meta.get("finalizers") or [])
    if finalizers:
        metadata["finalizers"] = finalizers
    if controller:
        metadata["ownerReferences"] = [owner_reference(owner)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": copy.deepcopy(template.get("spec") or {})}


# -- which pods go first -----------------------------------------------------------------


def _deletion_cost(pod: Obj) -> int:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(DELETION_COST_ANNOTATION)
    if raw is None:
        return 0
    try:
        cost = int(str(raw).strip())
    except ValueError:
        return 0
    return cost if -(2 ** 31) <= cost < 2 ** 31 else 0


def _log_rank(t: datetime.datetime, now: datetime.datetime) -> int:
    # Upstream buckets durations (in nanoseconds) by powers of two so pods of
    # similar age are treated alike and removal is spread pseudo-randomly by uid.
    elapsed_ns = (now - t).total_seconds() * 1e9
    return int(math.log2(elapsed_ns)) if elapsed_ns > 0 else -1


def _compare_times(a: datetime.datetime | None, b: datetime.datetime | None,
                   now: datetime.datetime | None, uid_a: str, uid_b: str) -> int:
    """-1 when `a` should go first: missing times first, then the more recent."""
    if a == b:
        return 0
    if a is None or b is None:
        return -1 if a is None else 1
    if now is None:
        return -1 if a > b else 1
    diff = _log_rank(a, now) - _log_rank(b, now)
    if diff == 0:
        return (uid_a > uid_b) - (uid_a < uid_b)
    return -1 if diff < 0 else 1


def node_ranks(pods: Iterable[Obj], related: Iterable[Obj]) -> dict[str, int]:
    """For each pod uid: the number of active related pods on its node ("doubled up")."""
    on_node: dict[str, int] = {}
    for pod in related:
        if is_pod_active(pod):
            node = (pod.get("spec") or {}).get("nodeName") or ""
            on_node[node] = on_node.get(node, 0) + 1
    return {(pod.get("metadata") or {}).get("uid", ""):
            on_node.get((pod.get("spec") or {}).get("nodeName") or "", 0) for pod in pods}


def pod_deletion_rank(pods: Iterable[Obj], related: Iterable[Obj] | None = None,
                      now: datetime.datetime | None = None) -> list[Obj]:
    """Pods sorted so the ones to delete first come first (upstream ActivePodsWithRanks).

    Unassigned before assigned; Pending < Unknown < Running; not ready before ready;
    lower pod-deletion-cost first; more co-located related pods first; more recently
    ready first; more restarts first; newer first. `now` turns on the logarithmic
    time comparison upstream uses (LogarithmicScaleDown).
    """
    pods = list(pods)
    ranks = node_ranks(pods, pods if related is None else related)

    def compare(a: Obj, b: Obj) -> int:
        spec_a, spec_b = a.get("spec") or {}, b.get("spec") or {}
        node_a, node_b = spec_a.get("nodeName") or "", spec_b.get("nodeName") or ""
        if node_a != node_b and (not node_a or not node_b):
            return -1 if not node_a else 1
        phase_a = _PHASE_ORDINAL.get((a.get("status") or {}).get("phase", ""), 0)
        phase_b = _PHASE_ORDINAL.get((b.get("status") or {}).get("phase", ""), 0)
        if phase_a != phase_b:
            return -1 if phase_a < phase_b else 1
        ready_a, ready_b = is_pod_ready(a), is_pod_ready(b)
        if ready_a != ready_b:
            return -1 if not ready_a else 1
        cost_a, cost_b = _deletion_cost(a), _deletion_cost(b)
        if cost_a != cost_b:
            return -1 if cost_a < cost_b else 1
        uid_a = (a.get("metadata") or {}).get("uid", "")
        uid_b = (b.get("metadata") or {}).get("uid", "")
        rank_a, rank_b = ranks.get(uid_a, 0), ranks.get(uid_b, 0)
        if rank_a != rank_b:
            return -1 if rank_a > rank_b else 1
        if ready_a and ready_b:
            by_ready = _compare_times(pod_ready_time(a), pod_ready_time(b), now, uid_a, uid_b)
            if by_ready:
                return by_ready
        restarts_a, restarts_b = max_container_restarts(a), max_container_restarts(b)
        if restarts_a != restarts_b:
            return -1 if restarts_a > restarts_b else 1
        created_a = _parse((a.get("metadata") or {}).get("creationTimestamp"))
        created_b = _parse((b.get("metadata") or {}).get("creationTimestamp"))
        return _compare_times(created_a, created_b, now, uid_a, uid_b)

    return sorted(pods, key=functools.cmp_to_key(compare))


# -- informer indexes: a sync looks at its own objects, not at the whole namespace ---------------

CONTROLLER_UID_INDEX = "controllers:controller-uid"
ORPHAN_INDEX = "controllers:orphans-by-namespace"
LABEL_INDEX = "controllers:namespace-label"


def controller_uid_index(obj: Obj) -> list[str]:
    """The uid of an object's controller (none for orphans)."""
    ref = _controller_ref_of(obj)
    if ref is None:
        return []
    uid = ref.get("uid")
    return [uid] if isinstance(uid, str) else []


def orphan_index(obj: Obj) -> list[str]:
    """The namespace of an object no controller owns."""
    if _controller_ref_of(obj) is not None:
        return []
    return [(obj.get("metadata") or {}).get("namespace") or ""]


def label_index(obj: Obj) -> list[str]:
    """`namespace/key=value` for each label ("=" cannot appear in a label key)."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels")
    if not labels:
        return []
    namespace = meta.get("namespace") or ""
    return [f"{namespace}/{key}={value}" for key, value in labels.items()]


def index_by_controller(cache: Cache) -> None:
    """Indexes that `claim_candidates` and `controlled_by` read."""
    cache.add_indexer(CONTROLLER_UID_INDEX, controller_uid_index)
    cache.add_indexer(ORPHAN_INDEX, orphan_index)


def index_by_labels(cache: Cache) -> None:
    """The index that `selected_by` reads."""
    cache.add_indexer(LABEL_INDEX, label_index)


def controlled_by(cache: Cache, owner: Obj) -> list[Obj]:
    """Objects in the owner's namespace whose controller reference names its uid."""
    owner_meta = owner.get("metadata") or {}
    namespace = owner_meta.get("namespace") or ""
    return [obj for obj in cache.by_index(CONTROLLER_UID_INDEX, str(owner_meta.get("uid")))
            if ((obj.get("metadata") or {}).get("namespace") or "") == namespace]


def claim_candidates(cache: Cache, owner: Obj) -> list[Obj]:
    """Of the owner's namespace, the objects `claim_pods` acts on: those the owner
    controls and the orphans (objects controlled by others it skips anyway)."""
    namespace = (owner.get("metadata") or {}).get("namespace") or ""
    return controlled_by(cache, owner) + cache.by_index(ORPHAN_INDEX, namespace)


def selected_by(cache: Cache, namespace: str, selector: Obj | None) -> list[Obj]:
    """Objects of `namespace` matching a valid metav1.LabelSelector (needs the label index)."""
    if selector is None:
        return []
    match_labels = selector.get("matchLabels") or {}
    if match_labels:
        # Any one required pair narrows the candidates; the smallest bucket is cheapest.
        buckets = [cache.index_size(LABEL_INDEX, f"{namespace}/{key}={value}")
                   for key, value in match_labels.items()]
        best = min(range(len(buckets)), key=buckets.__getitem__)
        key, value = list(match_labels.items())[best]
        candidates = cache.by_index(LABEL_INDEX, f"{namespace}/{key}={value}")
    else:
        candidates = cache.list(namespace)
    return [obj for obj in candidates if label_selector_matches(
        selector, (obj.get("metadata") or {}).get("labels"))]


# -- adoption and release (ControllerRefManager) ------------------------------------------------


@dataclass
class Claim:
    adopt: list[Obj] = field(default_factory=list)
    release: list[Obj] = field(default_factory=list)
    owned: list[Obj] = field(default_factory=list)


def claim_pods(owner: Obj, selector: Obj | None, pods: Iterable[Obj],
               matches: Callable[[Obj], bool] | None = None) -> tuple[list[Obj], list[Obj],
                                                                        list[Obj]]:
    """Split `pods` into (to adopt, to release, already owned and matching).

    As upstream's ControllerRefManager: pods controlled by someone else are left
    alone; an orphan matching the selector is adopted unless either side is being
    deleted or it lives in another namespace; an owned pod that no longer matches
    is released, except while the owner is being deleted (then it is ignored).
    `matches` adds conditions beyond the selector (as the DaemonSet's node check).
    """
    owner_meta = owner.get("metadata") or {}
    owner_uid = owner_meta.get("uid")
    owner_deleting = bool(owner_meta.get("deletionTimestamp"))
    owner_namespace = owner_meta.get("namespace") or ""

    def match(pod: Obj) -> bool:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        return label_selector_matches(selector, labels) and (matches is None or matches(pod))

    claim = Claim()
    for pod in pods:
        pod_meta = pod.get("metadata") or {}
        ref = _controller_ref_of(pod)
        if ref is not None:
            if ref.get("uid") != owner_uid:
                continue
            if match(pod):
                claim.owned.append(pod)
            elif not owner_deleting:
                claim.release.append(pod)
            continue
        if owner_deleting or not match(pod) or pod_meta.get("deletionTimestamp"):
            continue
        if owner_namespace and owner_namespace != (pod_meta.get("namespace") or ""):
            continue
        claim.adopt.append(pod)
    return claim.adopt, claim.release, claim.owned


def adopt_patch(owner: Obj, obj: Obj) -> Obj:
    """Strategic merge patch adding `owner` as controller; the uid guards a replaced object."""
    return {"metadata": {"ownerReferences": [owner_reference(owner)],
                         "uid": (obj.get("metadata") or {}).get("uid")}}


def release_patch(owner: Obj, obj: Obj) -> Obj:
    """Strategic merge patch removing the ownerReference to `owner`."""
    return {"metadata": {
        "ownerReferences": [{"$patch": "delete",
                             "uid": (owner.get("metadata") or {}).get("uid")}],
        "uid": (obj.get("metadata") or {}).get("uid")}}


# -- expectations ----------------------------------------------------------------------------


@dataclass
class _Expectation:
    add: int
    delete: int
    since: float
    deleting: set[str] = field(default_factory=set)


class Expectations:
    """Creations and deletions a controller has asked for but not yet seen in its
    informer (upstream ControllerExpectations + UIDTrackingControllerExpectations).

    A controller syncs a key only when its expectations are satisfied, so a stale
    cache does not make it create or delete twice. Expectations older than five
    minutes count as satisfied, so a lost event cannot wedge a controller.
    Deletions are tracked by pod key, so a pod seen terminating and then gone
    counts once.
    """

    def __init__(self, timeout: float = EXPECTATIONS_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self._by_key: dict[str, _Expectation] = {}

    def satisfied(self, key: str) -> bool:
        found = self._by_key.get(key)
        if found is None:
            return True  # never set, or deleted: nothing to wait for
        if found.add <= 0 and found.delete <= 0:
            return True
        return self.clock() - found.since > self.timeout

    def pending(self, key: str) -> tuple[int, int]:
        """(creations, deletions) still expected."""
        found = self._by_key.get(key)
        return (0, 0) if found is None else (max(found.add, 0), max(found.delete, 0))

    def set_expectations(self, key: str, add: int, delete: int) -> None:
        self._by_key[key] = _Expectation(add, delete, self.clock())

    def expect_creations(self, key: str, count: int) -> None:
        self.set_expectations(key, count, 0)

    def expect_deletions(self, key: str, pod_keys: Iterable[str]) -> None:
        self.expect(key, 0, pod_keys)

    def expect(self, key: str, creations: int = 0, deletion_keys: Iterable[str] = ()) -> None:
        """Both at once (a DaemonSet creates on some nodes while deleting on others)."""
        keys = set(deletion_keys)
        self._by_key[key] = _Expectation(creations, len(keys), self.clock(), keys)

    def creation_observed(self, key: str) -> None:
        self.lower(key, adds=1)

    def deletion_observed(self, key: str, pod_key: str) -> None:
        found = self._by_key.get(key)
        if found is None or pod_key not in found.deleting:
            return
        found.deleting.discard(pod_key)
        found.delete -= 1

    def lower(self, key: str, adds: int = 0, deletes: int = 0) -> None:
        """Give up on some expected events (e.g. a create that failed)."""
        found = self._by_key.get(key)
        if found is not None:
            found.add -= adds
            found.delete -= deletes

    def delete(self, key: str) -> None:
        self._by_key.pop(key, None)


# -- slow start ---------------------------------------------------------------------------


async def slow_start_batch(count: int, initial_batch: int,
                           attempt: Callable[[], Awaitable[None]]) -> tuple[int, Exception | None]:
    """Run `attempt` `count` times in growing batches (1, 2, 4, ...), stopping after the
    first batch with a failure, so a doomed request (quota, admission) fails once,
    not `count` times. Returns (successes, first error)."""
    remaining = count
    successes = 0
    batch = min(remaining, initial_batch)
    while batch > 0:
        results = await asyncio.gather(*(attempt() for _ in range(batch)),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, Exception):
                raise error  # cancellation
        successes += batch - len(errors)
        if errors:
            first = errors[0]
            assert isinstance(first, Exception)
            return successes, first
        remaining -= batch
        batch = min(2 * batch, remaining)
    return successes, None


def cached_controller(cache: Cache, obj: Obj, api_version: str, kind: str) -> Obj | None:
    """The cached owner that `obj`'s controller reference names, if it is still that one."""
    ref = controller_ref(obj)
    if ref is None or ref.get("kind") != kind or ref.get("apiVersion") != api_version:
        return None
    owner = cache.get_by_name(m.namespace_of(obj), ref.get("name", ""))
    if owner is None or (owner.get("metadata") or {}).get("uid") != ref.get("uid"):
        return None
    return owner


def owners_selecting(cache: Cache, obj: Obj) -> list[Obj]:
    """Cached owners in obj's namespace whose selector matches its labels (invalid ones skip)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    found = []
    for owner in cache.list(m.namespace_of(obj)):
        try:
            if label_selector_matches((owner.get("spec") or {}).get("selector"), labels):
                found.append(owner)
        except InvalidSelector:
            continue
    return found
