"""The Deployment controller: rolls a pod template out through ReplicaSets.

Each template gets its own ReplicaSet, named `<deployment>-<pod-template-hash>`;
a rollout grows the new one and shrinks the old ones, either step by step within
maxSurge/maxUnavailable (RollingUpdate) or all old first (Recreate). Revisions
live in ReplicaSet annotations, so `kubectl rollout history/undo` work from them.
Semantics follow upstream's pkg/controller/deployment (deployment_controller.go,
sync.go, rolling.go, recreate.go, rollback.go, progress.go).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.api.labels import label_selector_matches, selector_is_empty, selector_is_valid
from kubi.client.events import NORMAL, WARNING
from kubi.client.informer import key_of
from kubi.controllers import _deployment_util as du
from kubi.controllers._pods import (
    adopt_patch,
    claim_candidates,
    claim_pods,
    controlled_by,
    controller_ref,
    index_by_controller,
    release_patch,
)
from kubi.controllers.base import Controller, ControllerContext

log = logging.getLogger("kubi.controllers.deployment")

Obj = dict[str, Any]
DEPLOYMENTS = "deployments.apps"
REPLICA_SETS = "replicasets.apps"
NAMESPACE_TERMINATING = "NamespaceTerminating"


def _replace(rss: list[Obj], updated: Obj) -> None:
    """Put a freshly written ReplicaSet in place of its stale copy."""
    for index, rs in enumerate(rss):
        if du.uid_of(rs) == du.uid_of(updated):
            rss[index] = updated


def _rollback_to(deployment: Obj) -> int | None:
    """The revision asked for by the deprecated rollback annotation, if any."""
    raw = du.annotations_of(deployment).get(du.ROLLBACK_TO)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return None  # as upstream: an unparsable request is ignored


def _owner_is_deployment(ref: Obj | None) -> bool:
    return (ref is not None and ref.get("kind") == "Deployment"
            and str(ref.get("apiVersion", "")).split("/")[0] == "apps")


class DeploymentController(Controller):
    name = "deployment"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder("deployment-controller")
        self.deployments = ctx.informers.informer(DEPLOYMENTS)
        self.replica_sets = ctx.informers.informer(REPLICA_SETS)
        self.pods = ctx.informers.informer("pods")
        # A sync reads its own ReplicaSets and their pods, not the whole namespace.
        index_by_controller(self.replica_sets.cache)
        index_by_controller(self.pods.cache)
        self.deployments.add_handlers(self.enqueue, lambda _old, new: self.enqueue(new),
                                      self.enqueue)
        self.replica_sets.add_handlers(self._replica_set_added, self._replica_set_updated,
                                       self._replica_set_deleted)
        self.pods.add_handlers(on_delete=self._pod_deleted)

    # -- event handlers ---------------------------------------------------------------------

    def _resolve(self, namespace: str, ref: Obj | None) -> Obj | None:
        """The Deployment a controller reference points at, if it still is that one."""
        if not _owner_is_deployment(ref):
            return None
        assert ref is not None
        found = self.deployments.cache.get_by_name(namespace, ref.get("name", ""))
        if found is None or du.uid_of(found) != ref.get("uid"):
            return None
        return found

    def _deployments_selecting(self, rs: Obj) -> list[Obj]:
        labels = (rs.get("metadata") or {}).get("labels") or {}
        if not labels:
            return []
        found = []
        for deployment in self.deployments.cache.list(m.namespace_of(rs)):
            selector = du.spec_of(deployment).get("selector")
            try:
                if not selector_is_empty(selector) and label_selector_matches(selector, labels):
                    found.append(deployment)
            except ValueError:
                continue
        return found

    def _replica_set_added(self, rs: Obj) -> None:
        if (rs.get("metadata") or {}).get("deletionTimestamp"):
            self._replica_set_deleted(rs)
            return
        ref = controller_ref(rs)
        if ref is not None:
            owner = self._resolve(m.namespace_of(rs), ref)
            if owner is not None:
                self.enqueue(owner)
            return
        for deployment in self._deployments_selecting(rs):
            self.enqueue(deployment)

    def _replica_set_updated(self, old: Obj, new: Obj) -> None:
        if (old.get("metadata") or {}).get("resourceVersion") == (
                new.get("metadata") or {}).get("resourceVersion"):
            return  # a resync: nothing changed
        new_ref, old_ref = controller_ref(new), controller_ref(old)
        ref_changed = (new_ref or {}).get("uid") != (old_ref or {}).get("uid")
        if ref_changed and old_ref is not None:
            previous = self._resolve(m.namespace_of(old), old_ref)
            if previous is not None:
                self.enqueue(previous)
        if new_ref is not None:
            owner = self._resolve(m.namespace_of(new), new_ref)
            if owner is not None:
                self.enqueue(owner)
            return
        labels_changed = ((old.get("metadata") or {}).get("labels")
                          != (new.get("metadata") or {}).get("labels"))
        if labels_changed or ref_changed:
            for deployment in self._deployments_selecting(new):
                self.enqueue(deployment)

    def _replica_set_deleted(self, rs: Obj) -> None:
        owner = self._resolve(m.namespace_of(rs), controller_ref(rs))
        if owner is not None:
            self.enqueue(owner)

    def _pod_deleted(self, pod: Obj) -> None:
        # Only Recreate waits for pods to be gone before it creates the new ReplicaSet.
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        namespace = m.namespace_of(pod)
        rs = self.replica_sets.cache.get_by_name(namespace, ref.get("name", ""))
        if rs is None or du.uid_of(rs) != ref.get("uid"):
            return
        deployment = self._resolve(namespace, controller_ref(rs))
        if deployment is None:
            return
        if (du.spec_of(deployment).get("strategy") or {}).get("type") != du.RECREATE:
            return
        remaining = any(controlled_by(self.pods.cache, r)
                        for r in controlled_by(self.replica_sets.cache, deployment))
        if not remaining:
            self.enqueue(deployment)

    # -- the sync ------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        cached = self.deployments.cache.get(key)
        if cached is None:
            return None  # deleted: the garbage collector removes its ReplicaSets
        deployment = m.deep_copy(cached)
        spec = du.spec_of(deployment)
        if selector_is_empty(spec.get("selector")):
            await self.recorder.event(deployment, WARNING, "SelectingAll",
                                      "This deployment is selecting all pods. "
                                      "A non-empty selector is required.")
            generation = int(m.metadata(deployment).get("generation") or 0)
            if du.status_count(deployment, "observedGeneration") < generation:
                deployment.setdefault("status", {})["observedGeneration"] = generation
                await self._update_status(deployment)
            return None

        rs_list = await self._claim_replica_sets(deployment)
        pod_map = self._pod_map(deployment, rs_list)

        if m.metadata(deployment).get("deletionTimestamp"):
            await self._sync_status_only(deployment, rs_list)
            return None
        await self._check_paused_conditions(deployment)
        if spec.get("paused"):
            await self._sync(deployment, rs_list)
            return None
        if _rollback_to(deployment) is not None:
            await self._rollback(deployment, rs_list)
            return None
        if await self._is_scaling_event(deployment, rs_list):
            await self._sync(deployment, rs_list)
            return None
        strategy = (spec.get("strategy") or {}).get("type")
        if strategy == du.RECREATE:
            return await self._rollout_recreate(deployment, rs_list, pod_map)
        if strategy == du.ROLLING_UPDATE:
            return await self._rollout_rolling(deployment, rs_list)
        raise ValueError(f"unexpected deployment strategy type: {strategy}")

    async def _update_status(self, deployment: Obj) -> None:
        saved = await self.client.update_status(DEPLOYMENTS, deployment)
        # Later writes in this sync build on this one rather than conflict with it.
        m.metadata(deployment)["resourceVersion"] = saved["metadata"]["resourceVersion"]

    # -- ReplicaSets and pods of a Deployment --------------------------------------------------

    async def _claim_replica_sets(self, deployment: Obj) -> list[Obj]:
        """Owned ReplicaSets, after adopting matching orphans and releasing strays."""
        namespace = m.namespace_of(deployment)
        selector = du.spec_of(deployment).get("selector")
        candidates = claim_candidates(self.replica_sets.cache, deployment)
        try:
            to_adopt, to_release, owned = claim_pods(deployment, selector, candidates)
        except ValueError as err:
            raise ValueError(f"deployment {namespace}/{m.name_of(deployment)} has invalid "
                             f"label selector: {err}") from err
        claimed = [m.deep_copy(rs) for rs in owned]
        if to_adopt:
            await self._check_can_adopt(deployment)
        for rs in to_adopt:
            try:
                adopted = await self.client.patch(REPLICA_SETS, m.name_of(rs),
                                                  adopt_patch(deployment, rs), namespace,
                                                  patch_type="strategic")
            except StatusError as err:
                if err.code == 404:
                    continue
                raise
            claimed.append(adopted)
        for rs in to_release:
            try:
                await self.client.patch(REPLICA_SETS, m.name_of(rs),
                                        release_patch(deployment, rs), namespace,
                                        patch_type="strategic")
            except StatusError as err:
                if err.code not in (404, 422):
                    raise
        return claimed

    async def _check_can_adopt(self, deployment: Obj) -> None:
        """Adopt only for a live Deployment, checked against the server (not the cache)."""
        namespace, name = m.namespace_of(deployment), m.name_of(deployment)
        fresh = await self.client.get(DEPLOYMENTS, name, namespace)
        if du.uid_of(fresh) != du.uid_of(deployment):
            raise ValueError(f"original Deployment {namespace}/{name} is gone: got uid "
                             f"{du.uid_of(fresh)}, wanted {du.uid_of(deployment)}")
        deleted_at = m.metadata(fresh).get("deletionTimestamp")
        if deleted_at:
            raise ValueError(f"{namespace}/{name} has just been deleted at {deleted_at}")

    def _pod_map(self, deployment: Obj, rs_list: list[Obj]) -> dict[str, list[Obj]]:
        """Pods selected by the Deployment, grouped by the ReplicaSet that controls them."""
        by_rs: dict[str, list[Obj]] = {du.uid_of(rs): [] for rs in rs_list}
        selector = du.spec_of(deployment).get("selector")
        if selector_is_valid(selector):
            for rs in rs_list:
                for pod in controlled_by(self.pods.cache, rs):
                    if label_selector_matches(selector, (pod.get("metadata") or {}).get("labels")):
                        by_rs[du.uid_of(rs)].append(pod)
            return by_rs
        # An invalid selector fails on the first pod it cannot be evaluated on, as before.
        for pod in self.pods.cache.list(m.namespace_of(deployment)):
            labels = (pod.get("metadata") or {}).get("labels") or {}
            if not label_selector_matches(selector, labels):
                continue
            ref = controller_ref(pod)
            if ref is not None and ref.get("uid") in by_rs:
                by_rs[ref["uid"]].append(pod)
        return by_rs

    # -- the new ReplicaSet and revisions ------------------------------------------------------

    async def _all_replica_sets(self, deployment: Obj, rs_list: list[Obj],
                                create: bool) -> tuple[Obj | None, list[Obj]]:
        """(new ReplicaSet or None, old ones), revisions brought up to date."""
        old_rss = du.find_old_replica_sets(deployment, rs_list)
        new_rs = await self._new_replica_set(deployment, rs_list, old_rss, create)
        return new_rs, old_rss

    async def _new_replica_set(self, deployment: Obj, rs_list: list[Obj], old_rss: list[Obj],
                               create: bool) -> Obj | None:
        existing = du.find_new_replica_set(deployment, rs_list)
        new_revision = str(du.max_revision(old_rss) + 1)
        if existing is not None:
            return await self._sync_existing_new(deployment, existing, rs_list, new_revision)
        if not create:
            return None
        return await self._create_new(deployment, old_rss, new_revision)

    async def _sync_existing_new(self, deployment: Obj, existing: Obj, rs_list: list[Obj],
                                 new_revision: str) -> Obj:
        rs = m.deep_copy(existing)
        annotations_changed = du.set_new_replica_set_annotations(deployment, rs, new_revision,
                                                                 exists=True)
        min_ready = du.spec_of(deployment).get("minReadySeconds", 0)
        if annotations_changed or du.spec_of(rs).get("minReadySeconds", 0) != min_ready:
            rs.setdefault("spec", {})["minReadySeconds"] = min_ready
            updated = await self.client.update(REPLICA_SETS, rs)
            _replace(rs_list, updated)
            return updated
        needs_update = du.set_deployment_revision(deployment,
                                                  du.annotations_of(rs).get(du.REVISION, ""))
        status = deployment.setdefault("status", {})
        if du.has_progress_deadline(deployment) and du.get_condition(
                status, du.PROGRESSING) is None:
            du.set_condition(status, du.new_condition(
                du.PROGRESSING, "True", du.FOUND_NEW_RS,
                f'Found new replica set "{m.name_of(rs)}"'))
            needs_update = True
        if needs_update:
            await self._update_status(deployment)
        return rs

    async def _create_new(self, deployment: Obj, old_rss: list[Obj], new_revision: str
                          ) -> Obj:
        namespace, spec = m.namespace_of(deployment), du.spec_of(deployment)
        status = deployment.setdefault("status", {})
        template = m.deep_copy(spec.get("template") or {})
        pod_hash = du.compute_hash(template, status.get("collisionCount"))
        template_meta = template.setdefault("metadata", {})
        labels = {**(template_meta.get("labels") or {}), du.HASH_LABEL: pod_hash}
        template_meta["labels"] = labels
        selector = m.deep_copy(spec.get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}),
                                   du.HASH_LABEL: pod_hash}
        name = f"{m.name_of(deployment)}-{pod_hash}"
        new_rs: Obj = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels),
                         "ownerReferences": [_controller_ref_to(deployment)]},
            "spec": {"replicas": 0, "minReadySeconds": spec.get("minReadySeconds", 0),
                     "selector": selector, "template": template},
        }
        new_replicas = du.new_rs_new_replicas(deployment, [*old_rss, new_rs], new_rs)
        new_rs["spec"]["replicas"] = new_replicas
        du.set_new_replica_set_annotations(deployment, new_rs, new_revision, exists=False)

        already_exists = False
        try:
            created = await self.client.create(REPLICA_SETS, new_rs, namespace)
        except StatusError as err:
            if err.code == 409 and err.reason == "AlreadyExists":
                already_exists = True
                created = await self._existing_or_collision(deployment, name, err)
            elif any(c.type == NAMESPACE_TERMINATING for c in err.causes):
                raise
            else:
                message = f'Failed to create new replica set "{name}": {err.message}'
                if du.has_progress_deadline(deployment):
                    du.set_condition(status, du.new_condition(
                        du.PROGRESSING, "False", du.FAILED_RS_CREATE, message))
                    try:  # the bigger problem is the failed create; report that one
                        await self._update_status(deployment)
                    except StatusError:
                        pass
                await self.recorder.event(deployment, WARNING, du.FAILED_RS_CREATE, message)
                raise
        if not already_exists and new_replicas > 0:
            await self.recorder.event(deployment, NORMAL, "ScalingReplicaSet",
                                      f"Scaled up replica set {m.name_of(created)} "
                                      f"from 0 to {new_replicas}")
        needs_update = du.set_deployment_revision(deployment, new_revision)
        if not already_exists and du.has_progress_deadline(deployment):
            du.set_condition(status, du.new_condition(
                du.PROGRESSING, "True", du.NEW_RS_CREATED,
                f'Created new replica set "{m.name_of(created)}"'))
            needs_update = True
        if needs_update:
            await self._update_status(deployment)
        return created

    async def _existing_or_collision(self, deployment: Obj, name: str,
                                     err: StatusError) -> Obj:
        """After AlreadyExists: ours with the same template, or a hash collision."""
        namespace = m.namespace_of(deployment)
        found = self.replica_sets.cache.get_by_name(namespace, name)
        if found is None:
            found = await self.client.get(REPLICA_SETS, name, namespace)
        ref = controller_ref(found)
        if (ref is not None and ref.get("uid") == du.uid_of(deployment)
                and du.equal_ignore_hash(du.spec_of(deployment).get("template"),
                                         du.spec_of(found).get("template"))):
            return m.deep_copy(found)
        status = deployment.setdefault("status", {})
        before = int(status.get("collisionCount") or 0)
        status["collisionCount"] = before + 1
        try:
            await self._update_status(deployment)
            log.info("hash collision for deployment %s: collisionCount %d -> %d",
                     key_of(deployment), before, before + 1)
        except StatusError:
            pass  # retried with the original error below
        raise err

    # -- scaling -------------------------------------------------------------------------------

    async def _scale_replica_set(self, rs: Obj, new_scale: int, deployment: Obj
                                 ) -> tuple[bool, Obj]:
        """Set the size and desired/max annotations; an event when the size changed."""
        desired = du.replicas(deployment)
        maximum = desired + du.max_surge(deployment)
        size_changes = du.replicas(rs) != new_scale
        if not size_changes and not du.replicas_annotations_need_update(rs, desired, maximum):
            return False, rs
        old_scale = du.replicas(rs)
        copy = m.deep_copy(rs)
        copy.setdefault("spec", {})["replicas"] = new_scale
        du.set_replicas_annotations(copy, desired, maximum)
        updated = await self.client.update(REPLICA_SETS, copy)
        if size_changes:
            direction = "up" if old_scale < new_scale else "down"
            await self.recorder.event(deployment, NORMAL, "ScalingReplicaSet",
                                      f"Scaled {direction} replica set {m.name_of(updated)} "
                                      f"from {old_scale} to {new_scale}")
        return size_changes, updated

    async def _scale_and_record(self, rs: Obj, new_scale: int, deployment: Obj
                                ) -> tuple[bool, Obj]:
        if du.replicas(rs) == new_scale:
            return False, rs
        return await self._scale_replica_set(rs, new_scale, deployment)

    async def _is_scaling_event(self, deployment: Obj, rs_list: list[Obj]) -> bool:
        """Whether only the replica count changed (an active ReplicaSet was sized for
        another count)."""
        new_rs, old_rss = await self._all_replica_sets(deployment, rs_list, create=False)
        if new_rs is None:
            return False
        for rs in du.filter_active([*old_rss, new_rs]):
            desired = du.desired_replicas_annotation(rs)
            if desired is not None and desired != du.replicas(deployment):
                return True
        return False

    async def _scale(self, deployment: Obj, new_rs: Obj | None, old_rss: list[Obj]) -> None:
        desired = du.replicas(deployment)
        only = du.find_active_or_latest(new_rs, old_rss)
        if only is not None:
            if du.replicas(only) != desired:
                await self._scale_and_record(only, desired, deployment)
            return
        if du.is_saturated(deployment, new_rs):
            for old in du.filter_active(old_rss):
                await self._scale_and_record(old, 0, deployment)
            return
        if not du.is_rolling_update(deployment):
            return
        # Several ReplicaSets have pods mid-rollout: share the change out in proportion.
        active = du.filter_active([*old_rss, new_rs])
        allowed = desired + du.max_surge(deployment) if desired > 0 else 0
        to_add = allowed - du.total_replicas(active)
        if to_add > 0:
            active = du.by_size_newer(active)
        elif to_add < 0:
            active = du.by_size_older(active)
        sizes: dict[str, int] = {}
        added = 0
        for rs in active:
            share = du.replica_set_proportion(rs, deployment, to_add, added) if to_add else 0
            sizes[m.name_of(rs)] = du.replicas(rs) + share
            added += share
        for index, rs in enumerate(active):
            if index == 0 and to_add:
                # Leftovers go to (or come from) the largest.
                sizes[m.name_of(rs)] = max(sizes[m.name_of(rs)] + to_add - added, 0)
            await self._scale_replica_set(rs, sizes[m.name_of(rs)], deployment)

    # -- strategies ----------------------------------------------------------------------------

    async def _sync_status_only(self, deployment: Obj, rs_list: list[Obj]) -> None:
        new_rs, old_rss = await self._all_replica_sets(deployment, rs_list, create=False)
        await self._sync_deployment_status([*old_rss, new_rs], new_rs, deployment)

    async def _sync(self, deployment: Obj, rs_list: list[Obj]) -> None:
        """Scaling, or a paused Deployment: resize without rolling out."""
        new_rs, old_rss = await self._all_replica_sets(deployment, rs_list, create=False)
        await self._scale(deployment, new_rs, old_rss)
        if du.spec_of(deployment).get("paused") and _rollback_to(deployment) is None:
            await self._cleanup(old_rss, deployment)
        await self._sync_deployment_status([*old_rss, new_rs], new_rs, deployment)

    async def _rollout_rolling(self, deployment: Obj, rs_list: list[Obj]) -> float | None:
        new_rs, old_rss = await self._all_replica_sets(deployment, rs_list, create=True)
        assert new_rs is not None
        all_rss: list[Obj] = [*old_rss, new_rs]
        if await self._reconcile_new_replica_set(all_rss, new_rs, deployment):
            return await self._sync_rollout_status(all_rss, new_rs, deployment)
        if await self._reconcile_old_replica_sets(all_rss, du.filter_active(old_rss), new_rs,
                                                  deployment):
            return await self._sync_rollout_status(all_rss, new_rs, deployment)
        if du.deployment_complete(deployment, du.status_of(deployment)):
            await self._cleanup(old_rss, deployment)
        return await self._sync_rollout_status(all_rss, new_rs, deployment)

    async def _reconcile_new_replica_set(self, all_rss: list[Obj], new_rs: Obj,
                                         deployment: Obj) -> bool:
        desired = du.replicas(deployment)
        if du.replicas(new_rs) == desired:
            return False
        if du.replicas(new_rs) > desired:
            scaled, _ = await self._scale_and_record(new_rs, desired, deployment)
            return scaled
        target = du.new_rs_new_replicas(deployment, all_rss, new_rs)
        scaled, _ = await self._scale_and_record(new_rs, target, deployment)
        return scaled

    async def _reconcile_old_replica_sets(self, all_rss: list[Obj], old_rss: list[Obj],
                                          new_rs: Obj, deployment: Obj) -> bool:
        if du.total_replicas(old_rss) == 0:
            return False
        min_available = du.replicas(deployment) - du.max_unavailable(deployment)
        new_unavailable = du.replicas(new_rs) - du.status_count(new_rs, "availableReplicas")
        # Never go below minAvailable, counting the new pods that are not up yet as down.
        max_scaled_down = du.total_replicas(all_rss) - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        old_rss, cleaned = await self._cleanup_unhealthy(old_rss, deployment, max_scaled_down)
        scaled = await self._scale_down_old_for_rolling([*old_rss, new_rs], old_rss,
                                                        deployment)
        return cleaned + scaled > 0

    async def _cleanup_unhealthy(self, old_rss: list[Obj], deployment: Obj,
                                 max_cleanup: int) -> tuple[list[Obj], int]:
        """Drop old pods that are not available first: that costs no availability."""
        old_rss = du.by_creation(old_rss)
        total = 0
        for index, rs in enumerate(old_rss):
            if total >= max_cleanup:
                break
            size = du.replicas(rs)
            # A status not yet caught up with a scale-down may count more pods than remain.
            available = min(du.status_count(rs, "availableReplicas"), size)
            if size == 0 or size == available:
                continue
            count = min(max_cleanup - total, size - available)
            _, updated = await self._scale_and_record(rs, size - count, deployment)
            total += count
            old_rss[index] = updated
        return old_rss, total

    async def _scale_down_old_for_rolling(self, all_rss: list[Obj], old_rss: list[Obj],
                                          deployment: Obj) -> int:
        min_available = du.replicas(deployment) - du.max_unavailable(deployment)
        # Pods beyond a ReplicaSet's size are on their way out: they keep nothing available.
        available = sum(min(du.status_count(rs, "availableReplicas"), du.replicas(rs))
                        for rs in all_rss)
        if available <= min_available:
            return 0
        budget = available - min_available
        total = 0
        for rs in du.by_creation(old_rss):
            if total >= budget:
                break
            if du.replicas(rs) == 0:
                continue
            count = min(du.replicas(rs), budget - total)
            await self._scale_and_record(rs, du.replicas(rs) - count, deployment)
            total += count
        return total

    async def _rollout_recreate(self, deployment: Obj, rs_list: list[Obj],
                                pod_map: dict[str, list[Obj]]) -> float | None:
        # The new ReplicaSet is created only once the old pods are gone.
        new_rs, old_rss = await self._all_replica_sets(deployment, rs_list, create=False)
        all_rss: Sequence[Obj | None] = [*old_rss, new_rs]
        scaled_down = False
        for rs in du.filter_active(old_rss):
            scaled, _ = await self._scale_and_record(rs, 0, deployment)
            scaled_down = scaled_down or scaled
        if scaled_down or _old_pods_running(new_rs, old_rss, pod_map):
            return await self._sync_rollout_status(all_rss, new_rs, deployment)
        if new_rs is None:
            new_rs, old_rss = await self._all_replica_sets(deployment, rs_list, create=True)
            all_rss = [*old_rss, new_rs]
        assert new_rs is not None
        await self._scale_and_record(new_rs, du.replicas(deployment), deployment)
        if du.deployment_complete(deployment, du.status_of(deployment)):
            await self._cleanup(old_rss, deployment)
        return await self._sync_rollout_status(all_rss, new_rs, deployment)

    # -- rollback (the deprecated rollbackTo, carried in an annotation) ------------------------

    async def _rollback(self, deployment: Obj, rs_list: list[Obj]) -> None:
        new_rs, old_rss = await self._all_replica_sets(deployment, rs_list, create=True)
        all_rss = [*old_rss, *([new_rs] if new_rs is not None else [])]
        wanted = _rollback_to(deployment) or 0
        if wanted == 0:
            wanted = du.last_revision(all_rss)
            if wanted == 0:
                await self.recorder.event(deployment, WARNING,
                                          "DeploymentRollbackRevisionNotFound",
                                          "Unable to find last revision.")
                await self._clear_rollback_to(deployment)
                return
        for rs in all_rss:
            try:
                if du.revision(rs) != wanted:
                    continue
            except ValueError:
                continue
            if not du.equal_ignore_hash(du.spec_of(deployment).get("template"),
                                        du.spec_of(rs).get("template")):
                deployment.setdefault("spec", {})["template"] = du.template_from_replica_set(rs)
                du.set_deployment_annotations_to(deployment, rs)
                await self._clear_rollback_to(deployment)
                await self.recorder.event(deployment, NORMAL, "DeploymentRollback",
                                          f"Rolled back deployment \"{m.name_of(deployment)}\" "
                                          f"to revision {wanted}")
            else:
                await self.recorder.event(
                    deployment, WARNING, "DeploymentRollbackTemplateUnchanged",
                    "The rollback revision contains the same template as current deployment "
                    f"\"{m.name_of(deployment)}\"")
                await self._clear_rollback_to(deployment)
            return
        await self.recorder.event(deployment, WARNING, "DeploymentRollbackRevisionNotFound",
                                  "Unable to find the revision to rollback to.")
        await self._clear_rollback_to(deployment)

    async def _clear_rollback_to(self, deployment: Obj) -> None:
        du.annotations_of(deployment).pop(du.ROLLBACK_TO, None)
        await self.client.update(DEPLOYMENTS, deployment)

    # -- history cleanup -----------------------------------------------------------------------

    async def _cleanup(self, old_rss: list[Obj], deployment: Obj) -> None:
        """Delete the oldest scaled-down ReplicaSets beyond revisionHistoryLimit."""
        if not du.has_revision_history_limit(deployment):
            return
        alive = [rs for rs in old_rss if not m.metadata(rs).get("deletionTimestamp")]
        excess = len(alive) - int(du.spec_of(deployment)["revisionHistoryLimit"])
        if excess <= 0:
            return
        for rs in du.by_revision(alive)[:excess]:
            generation = int(m.metadata(rs).get("generation") or 0)
            if (du.status_count(rs, "replicas") != 0 or du.replicas(rs) != 0
                    or generation > du.status_count(rs, "observedGeneration")):
                continue
            try:
                await self.client.delete(REPLICA_SETS, m.name_of(rs), m.namespace_of(rs))
            except StatusError as err:
                if err.code != 404:
                    raise

    # -- status and conditions -----------------------------------------------------------------

    async def _check_paused_conditions(self, deployment: Obj) -> None:
        """Record pause/resume in Progressing so a long pause does not count as no progress."""
        if not du.has_progress_deadline(deployment):
            return
        status = deployment.setdefault("status", {})
        current = du.get_condition(status, du.PROGRESSING)
        if current is not None and current.get("reason") == du.TIMED_OUT:
            return
        paused_recorded = current is not None and current.get("reason") == du.PAUSED
        paused = bool(du.spec_of(deployment).get("paused"))
        if paused and not paused_recorded:
            du.set_condition(status, du.new_condition(du.PROGRESSING, "Unknown", du.PAUSED,
                                                      "Deployment is paused"))
        elif not paused and paused_recorded:
            du.set_condition(status, du.new_condition(du.PROGRESSING, "Unknown", du.RESUMED,
                                                      "Deployment is resumed"))
        else:
            return
        await self._update_status(deployment)

    async def _sync_deployment_status(self, all_rss: Sequence[Obj | None], new_rs: Obj | None,
                                      deployment: Obj) -> None:
        new_status = du.calculate_status(all_rss, new_rs, deployment)
        if new_status == du.status_of(deployment):
            return
        deployment["status"] = new_status
        await self._update_status(deployment)

    async def _sync_rollout_status(self, all_rss: Sequence[Obj | None], new_rs: Obj | None,
                                   deployment: Obj) -> float | None:
        """Status plus the Progressing condition; returns when to look again for a
        rollout that may be stuck."""
        new_status = du.calculate_status(all_rss, new_rs, deployment)
        has_deadline = du.has_progress_deadline(deployment)
        if not has_deadline:
            du.remove_condition(new_status, du.PROGRESSING)
        current = du.get_condition(du.status_of(deployment), du.PROGRESSING)
        complete_already = (int(new_status.get("replicas") or 0)
                            == int(new_status.get("updatedReplicas") or 0)
                            and current is not None
                            and current.get("reason") == du.NEW_RS_AVAILABLE)
        if has_deadline and not complete_already:
            self._estimate_progress(deployment, new_status, new_rs, current)

        failure = du.replica_failure_condition([rs for rs in all_rss if rs is not None], new_rs)
        if failure is not None:
            du.set_condition(new_status, failure)
        else:
            du.remove_condition(new_status, du.REPLICA_FAILURE)

        if new_status == du.status_of(deployment):
            return self._requeue_stuck(deployment, new_status)
        deployment["status"] = new_status
        await self._update_status(deployment)
        return None

    @staticmethod
    def _estimate_progress(deployment: Obj, new_status: Obj, new_rs: Obj | None,
                           current: Obj | None) -> None:
        subject = (f'ReplicaSet "{m.name_of(new_rs)}"' if new_rs is not None
                   else f'Deployment "{m.name_of(deployment)}"')
        if du.deployment_complete(deployment, new_status):
            du.set_condition(new_status, du.new_condition(
                du.PROGRESSING, "True", du.NEW_RS_AVAILABLE,
                f"{subject} has successfully progressed."))
        elif du.deployment_progressing(deployment, new_status):
            condition = du.new_condition(du.PROGRESSING, "True", du.REPLICA_SET_UPDATED,
                                         f"{subject} is progressing.")
            # Progress refreshes lastUpdateTime even when the reason stays the same.
            if current is not None:
                if current.get("status") == "True":
                    condition["lastTransitionTime"] = current.get("lastTransitionTime")
                du.remove_condition(new_status, du.PROGRESSING)
            du.set_condition(new_status, condition)
        elif du.deployment_timed_out(deployment, new_status):
            du.set_condition(new_status, du.new_condition(
                du.PROGRESSING, "False", du.TIMED_OUT, f"{subject} has timed out progressing."))

    @staticmethod
    def _requeue_stuck(deployment: Obj, new_status: Obj) -> float | None:
        """When to check a rollout without progress for its deadline (None: no need)."""
        current = du.get_condition(du.status_of(deployment), du.PROGRESSING)
        if not du.has_progress_deadline(deployment) or current is None:
            return None
        if (du.deployment_complete(deployment, new_status)
                or current.get("reason") == du.TIMED_OUT):
            return None
        since = current.get("lastUpdateTime")
        if not since:
            return None
        deadline = m.parse_time(since) + datetime.timedelta(
            seconds=int(du.spec_of(deployment)["progressDeadlineSeconds"]))
        after = (deadline - m.now()).total_seconds()
        if after < 1:
            return max(after, 0.0) + 0.1  # nearly due: look again very soon
        return after + 1


def _controller_ref_to(deployment: Obj) -> Obj:
    meta = deployment.get("metadata") or {}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta.get("name", ""),
            "uid": meta.get("uid", ""), "controller": True, "blockOwnerDeletion": True}


def _old_pods_running(new_rs: Obj | None, old_rss: list[Obj],
                      pod_map: dict[str, list[Obj]]) -> bool:
    """Whether any pod of an old ReplicaSet may still run (terminal phases do not count)."""
    if du.total_status(old_rss, "replicas") > 0:
        return True
    new_uid = du.uid_of(new_rs) if new_rs is not None else None
    for rs_uid, pods in pod_map.items():
        if rs_uid == new_uid:
            continue
        for pod in pods:
            if (pod.get("status") or {}).get("phase") not in ("Failed", "Succeeded"):
                return True
    return False

