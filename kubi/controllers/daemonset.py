"""The DaemonSet controller: one pod on every node the template may run on.

As upstream's pkg/controller/daemon: a node is eligible when it matches the
template's nodeSelector and required node affinity and every NoSchedule and
NoExecute taint on it is tolerated (with the tolerations upstream adds to every
daemon pod); a pod already on a node whose new taints it does not tolerate stays
unless a NoExecute one is among them. Pods are created with a required node
affinity for their node's name (`matchFields metadata.name In [node]`) and left
to the scheduler to bind. RollingUpdate replaces old pods within maxUnavailable,
or starts new ones beside them within maxSurge; OnDelete waits for deletions.
Templates are recorded as ControllerRevisions.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.api.labels import InvalidSelector, label_selector_matches, selector_is_empty
from kubi.api.taints import tolerates
from kubi.client.events import NORMAL, WARNING
from kubi.client.informer import key_of
from kubi.controllers._history import (
    REVISION_HASH_LABEL,
    History,
    compute_template_hash,
    max_revision,
    new_revision,
    revision_number,
    sort_revisions,
    template_matches,
    template_patch,
)
from kubi.controllers._pods import (
    Expectations,
    adopt_patch,
    cached_controller,
    claim_candidates,
    claim_pods,
    controller_ref,
    index_by_controller,
    is_pod_available,
    is_pod_ready,
    owners_selecting,
    pod_from_template,
    release_patch,
    seconds_until_available,
)
from kubi.controllers.base import Controller, ControllerContext

Obj = dict[str, Any]

DAEMONSETS = "daemonsets.apps"
PODS = "pods"
NODES = "nodes"
CONTROLLER_REVISIONS = "controllerrevisions.apps"
KIND = "DaemonSet"
API_VERSION = "apps/v1"

TEMPLATE_GENERATION_LABEL = "pod-template-generation"
TEMPLATE_GENERATION_ANNOTATION = "deprecated.daemonset.template.generation"
NODE_NAME_FIELD = "metadata.name"
BURST_REPLICAS = 250
STATUS_RETRIES = 2
FAILED_BACKOFF_INITIAL = 1.0
FAILED_BACKOFF_MAX = 900.0

# Every daemon pod tolerates the conditions a node-level agent must run through.
DAEMON_TOLERATIONS: list[Obj] = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists",
     "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
]
NETWORK_UNAVAILABLE_TOLERATION: Obj = {
    "key": "node.kubernetes.io/network-unavailable", "operator": "Exists",
    "effect": "NoSchedule"}


# -- scheduling predicates ----------------------------------------------------------------


def untolerated_taints(taints: Iterable[Obj], tolerations: list[Obj],
                       effects: tuple[str, ...]) -> list[Obj]:
    return [t for t in taints if t.get("effect") in effects
            and not any(tolerates(tol, t) for tol in tolerations)]


def _requirement_matches(requirement: Obj, values_of: dict[str, str]) -> bool:
    key = requirement.get("key", "")
    operator = requirement.get("operator", "")
    values = [str(v) for v in requirement.get("values") or []]
    present = key in values_of
    if operator == "In":
        return present and values_of[key] in values
    if operator == "NotIn":
        return not present or values_of[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and len(values) == 1:
        try:
            have, bound = int(values_of[key]), int(values[0])
        except ValueError:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


def node_selector_term_matches(term: Obj, node: Obj) -> bool:
    """All expressions (labels) and fields (metadata.name) hold; an empty term matches
    nothing, as upstream."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False
    meta = node.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    node_fields = {NODE_NAME_FIELD: str(meta.get("name", ""))}
    return (all(_requirement_matches(r, labels) for r in expressions)
            and all(r.get("key") == NODE_NAME_FIELD and _requirement_matches(r, node_fields)
                    for r in fields))


def required_affinity_matches(pod_spec: Obj, node: Obj) -> bool:
    """nodeSelector and the required node affinity terms (any one of them) match."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if required is None:
        return True
    return any(node_selector_term_matches(term, node)
               for term in required.get("nodeSelectorTerms") or [])


def with_daemon_tolerations(pod_spec: Obj) -> Obj:
    """The pod spec plus upstream's daemon tolerations (AddOrUpdateDaemonPodTolerations)."""
    spec = m.deep_copy(pod_spec)
    wanted = list(DAEMON_TOLERATIONS)
    if spec.get("hostNetwork"):
        wanted.append(NETWORK_UNAVAILABLE_TOLERATION)
    tolerations = list(spec.get("tolerations") or [])
    for toleration in wanted:
        # Replace a toleration for the same key and effect, as upstream's helper does.
        tolerations = [t for t in tolerations
                       if not (t.get("key") == toleration["key"]
                               and t.get("effect") == toleration["effect"])]
        tolerations.append(dict(toleration))
    spec["tolerations"] = tolerations
    return spec


def node_should_run(node: Obj, ds: Obj) -> tuple[bool, bool]:
    """(should a new daemon pod go here, may an existing one stay) — NodeShouldRunDaemonPod."""
    template_spec = (((ds.get("spec") or {}).get("template") or {}).get("spec")) or {}
    node_name = (node.get("metadata") or {}).get("name", "")
    if template_spec.get("nodeName") not in (None, "", node_name):
        return False, False
    pod_spec = with_daemon_tolerations(template_spec)
    if not required_affinity_matches(pod_spec, node):
        return False, False
    taints = (node.get("spec") or {}).get("taints") or []
    tolerations = pod_spec.get("tolerations") or []
    if untolerated_taints(taints, tolerations, ("NoSchedule", "NoExecute")):
        return False, not untolerated_taints(taints, tolerations, ("NoExecute",))
    return True, True


def node_name_affinity(affinity: Obj | None, node_name: str) -> Obj:
    """Affinity pinning the pod to `node_name` (ReplaceDaemonSetPodNodeNameNodeAffinity):
    the required terms become the single `metadata.name In [node]` field term."""
    affinity = m.deep_copy(affinity or {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [{
        "matchFields": [{"key": NODE_NAME_FIELD, "operator": "In", "values": [node_name]}]}]}
    return affinity


def target_node(pod: Obj) -> str:
    """The node a daemon pod is on or pinned to (util.GetTargetNodeName)."""
    node_name = (pod.get("spec") or {}).get("nodeName")
    if node_name:
        return str(node_name)
    required = ((((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution")) or {}
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            values = field.get("values") or []
            if field.get("key") == NODE_NAME_FIELD and field.get("operator") == "In" \
                    and len(values) == 1:
                return str(values[0])
    return ""


# -- revisions and updates --------------------------------------------------------------------


def template_generation(ds: Obj) -> str | None:
    annotations = (ds.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(TEMPLATE_GENERATION_ANNOTATION)
    return None if value is None else str(value)


def is_pod_updated(pod: Obj, hash_value: str, generation: str | None) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if generation is not None and labels.get(TEMPLATE_GENERATION_LABEL) == generation:
        return True
    return bool(hash_value) and labels.get(REVISION_HASH_LABEL) == hash_value


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, str) and value.endswith("%"):
        try:
            percent = int(value[:-1])
        except ValueError:
            return 0
        exact = percent * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def rolling_limits(ds: Obj, desired: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable), with unavailability 1 when both come out 0."""
    rolling = ((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {}
    surge = scaled_value(rolling.get("maxSurge", 0), desired, True)
    unavailable = scaled_value(rolling.get("maxUnavailable", 1), desired, True)
    if desired > 0 and surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _created(pod: Obj) -> str:
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def by_age_and_phase(pods: Iterable[Obj]) -> list[Obj]:
    """Oldest first; Running pods before others created at the same moment."""
    return sorted(pods, key=lambda p: (_created(p),
                                       (p.get("status") or {}).get("phase") != "Running",
                                       (p.get("metadata") or {}).get("name", "")))


def updated_and_old(pods: list[Obj], hash_value: str, generation: str | None
                    ) -> tuple[Obj | None, Obj | None, bool]:
    """(new pod, old pod, ok) on one node; not ok when either kind is doubled up."""
    new_pod: Obj | None = None
    old_pod: Obj | None = None
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        if is_pod_updated(pod, hash_value, generation):
            if new_pod is not None:
                return None, None, False
            new_pod = pod
        else:
            if old_pod is not None:
                return None, None, False
            old_pod = pod
    return new_pod, old_pod, True


def _phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


# -- the controller -----------------------------------------------------------------------------


class DaemonSetController(Controller):
    name = "daemonset"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.sets = ctx.informers.informer(DAEMONSETS)
        self.pods = ctx.informers.informer(PODS)
        index_by_controller(self.pods.cache)  # a sync reads its own pods and orphans
        self.nodes = ctx.informers.informer(NODES)
        self.history = History(self.client)
        self.expectations = Expectations()
        self._failed_backoff: dict[str, tuple[float, float]] = {}
        self.sets.add_handlers(self.enqueue, lambda old, new: self.enqueue(new),
                               self._set_deleted)
        self.pods.add_handlers(self._pod_added, self._pod_updated, self._pod_deleted)
        self.nodes.add_handlers(self._node_changed, self._node_updated, self._node_changed)

    # -- event handlers ---------------------------------------------------------------

    def _set_deleted(self, ds: Obj) -> None:
        self.expectations.delete(key_of(ds))
        self.enqueue(ds)

    def _owner_of(self, pod: Obj) -> Obj | None:
        return cached_controller(self.sets.cache, pod, API_VERSION, KIND)

    def _sets_selecting(self, pod: Obj) -> list[Obj]:
        return owners_selecting(self.sets.cache, pod)

    def _pod_added(self, pod: Obj) -> None:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            self._pod_deleted(pod)
            return
        owner = self._owner_of(pod)
        if owner is not None:
            self.expectations.creation_observed(key_of(owner))
            self.enqueue(owner)
        elif controller_ref(pod) is None:
            for ds in self._sets_selecting(pod):
                self.enqueue(ds)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        old_owner = self._owner_of(old)
        new_owner = self._owner_of(new)
        if old_owner is not None and (new_owner is None or _uid(old_owner) != _uid(new_owner)):
            self.enqueue(old_owner)
        if new_owner is not None:
            if (new.get("metadata") or {}).get("deletionTimestamp"):
                self.expectations.deletion_observed(key_of(new_owner), key_of(new))
            self.enqueue(new_owner)
        elif controller_ref(new) is None:
            for ds in self._sets_selecting(new):
                self.enqueue(ds)

    def _pod_deleted(self, pod: Obj) -> None:
        owner = self._owner_of(pod)
        if owner is not None:
            self.expectations.deletion_observed(key_of(owner), key_of(pod))
            self.enqueue(owner)

    def _node_changed(self, node: Obj) -> None:
        for ds in self.sets.cache.list():
            self.enqueue(ds)

    def _node_updated(self, old: Obj, new: Obj) -> None:
        # Heartbeats change nothing a daemon set looks at.
        def relevant(node: Obj) -> tuple[Any, ...]:
            return ((node.get("metadata") or {}).get("labels"),
                    (node.get("spec") or {}).get("taints"))

        if relevant(old) != relevant(new):
            self._node_changed(new)

    # -- sync -------------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        cached = self.sets.cache.get(key)
        if cached is None:
            self.expectations.delete(key)
            return None
        ds = m.deep_copy(cached)
        ds.setdefault("apiVersion", API_VERSION)
        ds.setdefault("kind", KIND)
        selector = (ds.get("spec") or {}).get("selector")
        try:
            label_selector_matches(selector, {})
        except InvalidSelector as err:
            await self.recorder.event(ds, WARNING, "InvalidSelector", str(err))
            return None
        if selector_is_empty(selector):
            await self.recorder.event(ds, WARNING, "SelectingAll",
                                      "This daemon set is selecting all pods. A non-empty "
                                      "selector is required.")
            return None
        if (ds.get("metadata") or {}).get("deletionTimestamp"):
            return None
        nodes = self.nodes.cache.list()
        current, old = await self._construct_history(ds, selector)
        hash_value = (current["metadata"].get("labels") or {}).get(REVISION_HASH_LABEL, "")
        if not self.expectations.satisfied(key):
            return await self._update_status(ds, nodes, hash_value, observed=False)
        requeue = await self._manage(ds, nodes, hash_value)
        if self.expectations.satisfied(key) and \
                ((ds.get("spec") or {}).get("updateStrategy") or {}).get("type") \
                == "RollingUpdate":
            await self._rolling_update(ds, nodes, hash_value)
        await self._cleanup_history(ds, old)
        again = await self._update_status(ds, nodes, hash_value, observed=True)
        waits = [w for w in (requeue, again) if w is not None]
        return min(waits) if waits else None

    # -- pods by node ---------------------------------------------------------------------

    async def _can_adopt(self, ds: Obj) -> bool:
        meta = ds["metadata"]
        try:
            fresh = await self.client.get(DAEMONSETS, meta["name"], meta.get("namespace", ""))
        except StatusError as err:
            if err.code == 404:
                return False
            raise
        fresh_meta = fresh.get("metadata") or {}
        return fresh_meta.get("uid") == meta.get("uid") and \
            not fresh_meta.get("deletionTimestamp")

    async def _daemon_pods(self, ds: Obj) -> list[Obj]:
        namespace = ds["metadata"].get("namespace", "")
        selector = (ds.get("spec") or {}).get("selector")
        adopt, release, owned = claim_pods(ds, selector,
                                           claim_candidates(self.pods.cache, ds))
        pods = list(owned)
        if adopt and await self._can_adopt(ds):
            for pod in adopt:
                try:
                    pods.append(await self.client.patch(PODS, _name(pod), adopt_patch(ds, pod),
                                                        namespace, patch_type="strategic"))
                except StatusError as err:
                    if err.code not in (404, 422):
                        raise
        for pod in release:
            try:
                await self.client.patch(PODS, _name(pod), release_patch(ds, pod), namespace,
                                        patch_type="strategic")
            except StatusError as err:
                if err.code not in (404, 422):
                    raise
        return pods

    async def _pods_by_node(self, ds: Obj) -> dict[str, list[Obj]]:
        """Claimed pods grouped by target node, leaving out finished pods being deleted."""
        by_node: dict[str, list[Obj]] = {}
        for pod in await self._daemon_pods(ds):
            if _phase(pod) in ("Succeeded", "Failed") and \
                    (pod.get("metadata") or {}).get("deletionTimestamp"):
                continue
            by_node.setdefault(target_node(pod), []).append(pod)
        return by_node

    # -- manage: the right pods on the right nodes -------------------------------------------

    def _failed_pod_may_go(self, ds: Obj, node_name: str) -> float | None:
        """None when a failed pod on the node may be deleted now (and starts the next
        back-off), otherwise the seconds to wait; kills are spaced out like upstream's."""
        key = f"{_uid(ds)}/{node_name}"
        now = time.monotonic()
        not_before, delay = self._failed_backoff.get(key, (0.0, 0.0))
        if now < not_before:
            return not_before - now
        delay = FAILED_BACKOFF_INITIAL if delay == 0 else min(delay * 2, FAILED_BACKOFF_MAX)
        self._failed_backoff[key] = (now + delay, delay)
        return None

    async def _pods_for_node(self, ds: Obj, node: Obj, by_node: dict[str, list[Obj]],
                             hash_value: str) -> tuple[bool, list[Obj], float | None]:
        """(needs a new pod, pods to delete, retry after) for one node (podsShouldBeOnNode)."""
        should_run, may_stay = node_should_run(node, ds)
        node_name = _name(node)
        pods = by_node.get(node_name)
        to_delete: list[Obj] = []
        retry: float | None = None
        if should_run and pods is None:
            return True, [], None
        if pods is not None and not may_stay:
            return False, [p for p in pods if not p["metadata"].get("deletionTimestamp")], None
        if pods is None:
            return False, [], None
        running: list[Obj] = []
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            if _phase(pod) == "Failed":
                wait = self._failed_pod_may_go(ds, node_name)
                if wait is not None:
                    retry = wait if retry is None else min(retry, wait)
                    continue
                await self.recorder.event(
                    ds, WARNING, "FailedDaemonPod",
                    f"Found failed daemon pod {pod['metadata'].get('namespace')}/{_name(pod)} "
                    f"on node {node_name}, will try to kill it")
                to_delete.append(pod)
            else:
                running.append(pod)
        if not self._allows_surge(ds):
            to_delete += by_age_and_phase(running)[1:]
            return False, to_delete, retry
        if len(running) <= 1:
            return not running and should_run, to_delete, retry
        # Surging: keep the oldest new and oldest old pod, and the old one only while
        # it is ready and the new one is not yet available.
        oldest_new: Obj | None = None
        oldest_old: Obj | None = None
        for pod in by_age_and_phase(running):
            is_new = (pod["metadata"].get("labels") or {}).get(REVISION_HASH_LABEL) == hash_value
            if is_new and oldest_new is None:
                oldest_new = pod
            elif not is_new and oldest_old is None:
                oldest_old = pod
            else:
                to_delete.append(pod)
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        if oldest_new is not None and oldest_old is not None and (
                not is_pod_ready(oldest_old) or is_pod_available(oldest_new, min_ready)):
            to_delete.append(oldest_old)
        return False, to_delete, retry

    @staticmethod
    def _allows_surge(ds: Obj) -> bool:
        strategy = (ds.get("spec") or {}).get("updateStrategy") or {}
        if strategy.get("type") != "RollingUpdate":
            return False
        surge = (strategy.get("rollingUpdate") or {}).get("maxSurge", 0)
        return scaled_value(surge, 100, True) != 0

    async def _manage(self, ds: Obj, nodes: list[Obj], hash_value: str) -> float | None:
        by_node = await self._pods_by_node(ds)
        needing: list[str] = []
        to_delete: list[Obj] = []
        retry: float | None = None
        for node in nodes:
            needs, deletions, wait = await self._pods_for_node(ds, node, by_node, hash_value)
            if needs:
                needing.append(_name(node))
            to_delete += deletions
            if wait is not None:
                retry = wait if retry is None else min(retry, wait)
        # Pods pinned to nodes that no longer exist go too.
        known = {_name(n) for n in nodes}
        for node_name, pods in by_node.items():
            if node_name not in known:
                to_delete += [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        await self._sync_nodes(ds, to_delete, needing, hash_value)
        return retry

    def _pod_template(self, ds: Obj, hash_value: str) -> Obj:
        """The template daemon pods are made from (util.CreatePodTemplate)."""
        template = m.deep_copy((ds.get("spec") or {}).get("template") or {})
        template["spec"] = with_daemon_tolerations(template.get("spec") or {})
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        generation = template_generation(ds)
        if generation is not None:
            labels[TEMPLATE_GENERATION_LABEL] = generation
        if hash_value:
            labels[REVISION_HASH_LABEL] = hash_value
        return template

    async def _sync_nodes(self, ds: Obj, to_delete: list[Obj], node_names: list[str],
                          hash_value: str) -> None:
        """Create pods for `node_names` and delete `to_delete`, within the burst limit."""
        key = key_of(ds)
        node_names = node_names[:BURST_REPLICAS]
        to_delete = to_delete[:BURST_REPLICAS]
        if not node_names and not to_delete:
            return
        self.expectations.expect_deletions(key, [key_of(p) for p in to_delete])
        self.expectations.lower(key, adds=-len(node_names))  # raise: creations expected too
        template = self._pod_template(ds, hash_value)
        errors: list[BaseException] = []

        async def create(node_name: str) -> None:
            pod_template = m.deep_copy(template)
            spec = pod_template["spec"]
            spec["affinity"] = node_name_affinity(spec.get("affinity"), node_name)
            pod = pod_from_template(pod_template, ds)
            try:
                created = await self.client.create(PODS, pod, ds["metadata"].get("namespace", ""))
            except StatusError as err:
                self.expectations.lower(key, adds=1)
                await self.recorder.event(ds, WARNING, "FailedCreate", f"Error creating: {err}")
                raise
            await self.recorder.event(ds, NORMAL, "SuccessfulCreate",
                                      f"Created pod: {_name(created)}")

        batch, done = 1, 0
        while done < len(node_names):
            chunk = node_names[done:done + batch]
            results = await asyncio.gather(*(create(n) for n in chunk), return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            done += len(chunk)
            if failed:
                errors += failed
                # The rest were never attempted: stop expecting them.
                self.expectations.lower(key, adds=len(node_names) - done)
                break
            batch *= 2

        async def delete(pod: Obj) -> None:
            meta = pod["metadata"]
            try:
                await self.client.delete(PODS, meta["name"], meta.get("namespace", ""),
                                         uid=meta.get("uid") or None)
            except StatusError as err:
                self.expectations.deletion_observed(key, key_of(pod))
                if err.code == 404:
                    return
                await self.recorder.event(ds, WARNING, "FailedDelete",
                                          f"Error deleting: {err}")
                raise
            await self.recorder.event(ds, NORMAL, "SuccessfulDelete",
                                      f"Deleted pod: {meta['name']}")

        results = await asyncio.gather(*(delete(p) for p in to_delete), return_exceptions=True)
        errors += [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    # -- rolling update ---------------------------------------------------------------------

    async def _rolling_update(self, ds: Obj, nodes: list[Obj], hash_value: str) -> None:
        by_node = await self._pods_by_node(ds)
        desired = 0
        for node in nodes:
            if node_should_run(node, ds)[0]:
                desired += 1
                by_node.setdefault(_name(node), [])
        max_surge, max_unavailable = rolling_limits(ds, desired)
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        generation = template_generation(ds)
        nodes_by_name = {_name(n): n for n in nodes}

        def available(pod: Obj) -> bool:
            return is_pod_available(pod, min_ready)

        if max_surge == 0:
            # Delete just enough old pods to stay within maxUnavailable; manage then
            # creates their replacements.
            unavailable = 0
            replace_now: list[Obj] = []
            candidates: list[Obj] = []
            for _, pods in sorted(by_node.items()):
                new_pod, old_pod, ok = updated_and_old(pods, hash_value, generation)
                if not ok or (new_pod is None) == (old_pod is None):
                    unavailable += 1  # manage will sort this node out
                elif new_pod is not None:
                    if not available(new_pod):
                        unavailable += 1
                elif old_pod is not None:
                    if not available(old_pod):
                        replace_now.append(old_pod)
                        unavailable += 1
                    elif unavailable < max_unavailable:
                        candidates.append(old_pod)
            room = max(0, min(max_unavailable - unavailable, len(candidates)))
            await self._sync_nodes(ds, replace_now + candidates[:room], [], hash_value)
            return

        # Surging: start new pods beside available old ones, up to maxSurge at a time,
        # and remove an old pod once its replacement is available.
        old_to_delete: list[Obj] = []
        misplaced: list[Obj] = []
        candidate_nodes: list[str] = []
        allowed_nodes: list[str] = []
        surging = 0
        available_count = 0
        for node_name, pods in sorted(by_node.items()):
            new_pod, old_pod, ok = updated_and_old(pods, hash_value, generation)
            if not ok:
                surging += 1
                continue
            shown = old_pod if old_pod is not None else new_pod
            if shown is not None and available(shown):
                available_count += 1
            here = nodes_by_name.get(node_name)
            wanted_here = here is not None and node_should_run(here, ds)[0]
            if old_pod is None:
                continue
            if new_pod is None:
                if not available(old_pod):
                    if not wanted_here:
                        old_to_delete.append(old_pod)
                    else:
                        allowed_nodes.append(node_name)
                elif not wanted_here:
                    misplaced.append(old_pod)
                elif surging < max_surge:
                    candidate_nodes.append(node_name)
                continue
            if not available(new_pod):
                surging += 1
                continue
            old_to_delete.append(old_pod)
        # Pods on nodes they no longer fit go only as others become available.
        deletable = min(available_count - desired, len(misplaced))
        old_to_delete += misplaced[:max(deletable, 0)]
        room = max(0, min(max_surge - surging, len(candidate_nodes)))
        await self._sync_nodes(ds, old_to_delete, allowed_nodes + candidate_nodes[:room],
                               hash_value)

    # -- history ------------------------------------------------------------------------------

    async def _construct_history(self, ds: Obj, selector: Obj | None) -> tuple[Obj, list[Obj]]:
        """(current revision, older revisions), recording the template if it is new."""
        adopt, release, owned = await self.history.claim_revisions(ds, selector)
        revisions = list(owned)
        if adopt and await self._can_adopt(ds):
            revisions += [await self.history.adopt(ds, r) for r in adopt]
        for revision in release:
            await self.history.release(ds, revision)
        current = [r for r in revisions if template_matches(ds, r)]
        old = [r for r in revisions if not template_matches(ds, r)]
        number = max_revision(old) + 1
        if not current:
            return await self._snapshot(ds, number), old
        keep = await self._dedup(ds, current)
        if revision_number(keep) < number:
            keep = await self.history.update_revision(keep, number)
        return keep, old

    async def _snapshot(self, ds: Obj, number: int) -> Obj:
        collision_count = int((ds.get("status") or {}).get("collisionCount") or 0)
        template = (ds.get("spec") or {}).get("template") or {}
        hash_value = compute_template_hash(template, collision_count)
        revision = new_revision(ds, template_patch(ds), number,
                                (template.get("metadata") or {}).get("labels"),
                                collision_count, hash_label=REVISION_HASH_LABEL,
                                hash_value=hash_value,
                                annotations=ds["metadata"].get("annotations"))
        namespace = ds["metadata"].get("namespace", "")
        try:
            created: Obj = await self.client.create(CONTROLLER_REVISIONS, revision, namespace)
            return created
        except StatusError as err:
            if err.code != 409 or err.reason != "AlreadyExists":
                raise
        existing = await self.client.get(CONTROLLER_REVISIONS, revision["metadata"]["name"],
                                         namespace)
        if template_matches(ds, existing) and \
                (controller_ref(existing) or {}).get("uid") == _uid(ds):
            return existing
        # A different template owns the name: count the collision and try again later.
        fresh = await self.client.get(DAEMONSETS, ds["metadata"]["name"], namespace)
        fresh.setdefault("status", {})["collisionCount"] = collision_count + 1
        await self.client.update_status(DAEMONSETS, fresh)
        raise StatusError(409, "Conflict", f"found a stale collision for revision "
                                           f"{revision['metadata']['name']}, retrying")

    async def _dedup(self, ds: Obj, current: list[Obj]) -> Obj:
        """Keep the newest of equal revisions; move pods labelled with the others to it."""
        ordered = sort_revisions(current)
        keep = ordered[-1]
        keep_hash = (keep["metadata"].get("labels") or {}).get(REVISION_HASH_LABEL, "")
        for duplicate in ordered[:-1]:
            dup_hash = (duplicate["metadata"].get("labels") or {}).get(REVISION_HASH_LABEL)
            for pod in await self._daemon_pods(ds):
                if (pod["metadata"].get("labels") or {}).get(REVISION_HASH_LABEL) == dup_hash:
                    await self.client.patch(PODS, _name(pod), {"metadata": {"labels": {
                        REVISION_HASH_LABEL: keep_hash}}}, pod["metadata"].get("namespace", ""))
            await self.history.delete(duplicate)
        return keep

    async def _cleanup_history(self, ds: Obj, old: list[Obj]) -> None:
        limit = (ds.get("spec") or {}).get("revisionHistoryLimit")
        excess = len(old) - (10 if limit is None else int(limit))
        if excess <= 0:
            return
        live = {(p["metadata"].get("labels") or {}).get(REVISION_HASH_LABEL)
                for pods in (await self._pods_by_node(ds)).values() for p in pods}
        for revision in sort_revisions(old):
            if excess <= 0:
                break
            if (revision["metadata"].get("labels") or {}).get(REVISION_HASH_LABEL) in live:
                continue
            await self.history.delete(revision)
            excess -= 1

    # -- status -------------------------------------------------------------------------------

    async def _update_status(self, ds: Obj, nodes: list[Obj], hash_value: str,
                             observed: bool) -> float | None:
        """Count the daemon pods and record the counts; returns when to look again for
        pods that will turn available."""
        by_node = await self._pods_by_node(ds)
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        generation = template_generation(ds)
        desired = current = misscheduled = ready = updated = available = 0
        wake: float | None = None
        for node in nodes:
            should_run, _ = node_should_run(node, ds)
            pods = by_node.get(_name(node)) or []
            if not should_run:
                misscheduled += 1 if pods else 0
                continue
            desired += 1
            if not pods:
                continue
            current += 1
            pod = by_age_and_phase(pods)[0]
            if is_pod_ready(pod):
                ready += 1
                if is_pod_available(pod, min_ready):
                    available += 1
                else:
                    wait = seconds_until_available(pod, min_ready)
                    if wait is not None:
                        wake = wait if wake is None else min(wake, wait)
            if is_pod_updated(pod, hash_value, generation):
                updated += 1
        status = dict(ds.get("status") or {})
        for field in ("observedGeneration", "updatedNumberScheduled", "numberAvailable",
                      "numberUnavailable"):
            status.pop(field, None)
        status.update({"currentNumberScheduled": current, "numberMisscheduled": misscheduled,
                       "desiredNumberScheduled": desired, "numberReady": ready})
        optional = {"updatedNumberScheduled": updated, "numberAvailable": available,
                    "numberUnavailable": desired - available}
        status.update({k: v for k, v in optional.items() if v})
        old_generation = int((ds.get("status") or {}).get("observedGeneration") or 0)
        generation_now = int(ds["metadata"].get("generation") or 0)
        new_generation = generation_now if observed else old_generation
        if new_generation:
            status["observedGeneration"] = new_generation
        await self._write_status(ds, status)
        return None if wake is None else wake + 0.05

    async def _write_status(self, ds: Obj, status: Obj) -> None:
        target = ds
        for attempt in range(STATUS_RETRIES):
            existing = target.get("status") or {}
            merged = {**status, **{k: existing[k] for k in ("collisionCount", "conditions")
                                   if k in existing}}
            if merged == existing:
                return
            updated = m.deep_copy(target)
            updated["status"] = merged
            try:
                await self.client.update_status(DAEMONSETS, updated)
                return
            except StatusError as err:
                if err.code != 409 or attempt + 1 == STATUS_RETRIES:
                    raise
            meta = ds["metadata"]
            target = await self.client.get(DAEMONSETS, meta["name"], meta.get("namespace", ""))
