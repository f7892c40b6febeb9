"""The namespace controller: empties a terminating namespace, then releases it.

As upstream's pkg/controller/namespace/deletion: once a namespace has a
deletionTimestamp it is marked Terminating, every namespaced object in it is
deleted (pods with their grace period), the controller waits until all are
gone, reporting progress as status conditions, and finally removes the
`kubernetes` finalizer through `namespaces/NAME/finalize`, after which the API
server deletes the namespace.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.api.resources import CATALOGUE, ResourceInfo
from kubi.client.rest import path_for, status_error
from kubi.controllers.base import Controller, ControllerContext

log = logging.getLogger("kubi.controllers.namespace")

Obj = dict[str, Any]

FINALIZER = "kubernetes"
# Upstream's guess for how long GC-style finalizers on leftover items need.
FINALIZER_ESTIMATE_SECONDS = 15
MAX_CONFLICT_RETRIES = 10

DISCOVERY_FAILURE = "NamespaceDeletionDiscoveryFailure"
GV_PARSING_FAILURE = "NamespaceDeletionGroupVersionParsingFailure"
CONTENT_FAILURE = "NamespaceDeletionContentFailure"
CONTENT_REMAINING = "NamespaceContentRemaining"
FINALIZERS_REMAINING = "NamespaceFinalizersRemaining"

# The condition types this controller owns, in upstream's order, with the
# reason and message each carries while nothing is wrong.
CONDITION_OK: dict[str, tuple[str, str]] = {
    DISCOVERY_FAILURE: ("ResourcesDiscovered", "All resources successfully discovered"),
    GV_PARSING_FAILURE: ("ParsedGroupVersions", "All legacy kube types successfully parsed"),
    CONTENT_FAILURE: ("ContentDeleted",
                      "All content successfully deleted, may be waiting on finalization"),
    CONTENT_REMAINING: ("ContentRemoved", "All content successfully removed"),
    FINALIZERS_REMAINING: ("ContentRemoved", "All content successfully removed"),
}


def deletable_resources() -> list[ResourceInfo]:
    """Every stored namespaced resource that can be deleted, each storage once.

    Upstream asks discovery for the preferred version of each resource; versions
    sharing storage (events.k8s.io events, old Ingress versions) are one set of
    objects, so only the first-listed (preferred) one is used.
    """
    seen: set[str] = set()
    found = []
    for info in CATALOGUE.resources:
        if not (info.namespaced and info.persisted and "delete" in info.verbs):
            continue
        if info.storage_prefix in seen:
            continue
        seen.add(info.storage_prefix)
        found.append(info)
    return found


def gvr_text(info: ResourceInfo) -> str:
    """schema.GroupVersionResource's String(), as upstream prints it in errors."""
    return f"{info.group}/{info.version}, Resource={info.plural}"


@dataclass
class ResourceOutcome:
    estimate: int = 0
    remaining: int = 0
    finalizers: dict[str, int] = field(default_factory=dict)


@dataclass
class ContentReport:
    estimate: int = 0
    errors: list[str] = field(default_factory=list)
    remaining: dict[str, int] = field(default_factory=dict)  # "resource.group" -> count
    finalizers: dict[str, int] = field(default_factory=dict)


class ResourcesRemaining(Exception):
    def __init__(self, estimate: int) -> None:
        super().__init__(f"some content remains in the namespace, estimate {estimate} seconds "
                         f"before it is removed")
        self.estimate = estimate


def desired_conditions(report: ContentReport) -> dict[str, Obj]:
    """The failing conditions this pass found; types not listed here are healthy."""
    found: dict[str, Obj] = {}
    if report.errors:
        messages = sorted(report.errors)
        found[CONTENT_FAILURE] = {
            "status": "True", "reason": "ContentDeletionFailed",
            "message": f"Failed to delete all resource types, {len(messages)} remaining: "
                       + ", ".join(messages)}
    remaining = sorted(f"{gr} has {n} resource instances"
                       for gr, n in report.remaining.items() if n)
    if report.remaining:
        found[CONTENT_REMAINING] = {
            "status": "True", "reason": "SomeResourcesRemain",
            "message": "Some resources are remaining: " + ", ".join(remaining)}
    by_finalizer = sorted(f"{name} in {n} resource instances"
                          for name, n in report.finalizers.items() if n)
    if report.finalizers:
        found[FINALIZERS_REMAINING] = {
            "status": "True", "reason": "SomeFinalizerRemain",
            "message": "Some finalizers are remaining: " + ", ".join(by_finalizer)}
    return found


def apply_conditions(status: Obj, failing: dict[str, Obj]) -> bool:
    """Merge this pass's conditions into status.conditions; True when anything changed."""
    conditions: list[Obj] = status.setdefault("conditions", [])
    now = m.rfc3339(m.now())
    changed = False
    for kind, (ok_reason, ok_message) in CONDITION_OK.items():
        wanted = failing.get(kind) or {"status": "False", "reason": ok_reason,
                                       "message": ok_message}
        current = next((c for c in conditions if c.get("type") == kind), None)
        if current is None:
            conditions.append({"type": kind, **wanted, "lastTransitionTime": now})
            changed = True
            continue
        if any(current.get(k) != wanted[k] for k in ("status", "reason", "message")):
            if current.get("status") != wanted["status"]:
                current["lastTransitionTime"] = now
            current.update(wanted)
            changed = True
    return changed


class NamespaceController(Controller):
    name = "namespace"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.namespaces = ctx.informers.informer("namespaces")
        self.namespaces.add_handlers(on_add=self._on_namespace,
                                     on_update=lambda _old, new: self._on_namespace(new))
        self.resources = deletable_resources()

    def _on_namespace(self, ns: Obj) -> None:
        # Only namespaces being deleted are this controller's business. Upstream
        # waits 5s for HA API servers to agree; Kubi has one store, so no wait.
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            self.enqueue(ns)

    async def reconcile(self, key: str) -> float | None:
        try:
            await self.delete_namespace(key)
        except ResourcesRemaining as remaining:
            return remaining.estimate // 2 + 1
        return None

    async def delete_namespace(self, name: str) -> None:
        """One pass of upstream's namespacedResourcesDeleter.Delete."""
        try:
            ns = await self.client.get("namespaces", name)
        except StatusError as err:
            if err.code == 404:
                return
            raise
        if not ns["metadata"].get("deletionTimestamp"):
            return
        try:
            ns = await self._mark_terminating(ns)
        except StatusError as err:
            if err.code == 404:
                return
            raise
        if not (ns.get("spec") or {}).get("finalizers"):
            return  # already finalized; the API server removes it
        estimate = await self.delete_all_content(ns)
        if estimate > 0:
            raise ResourcesRemaining(estimate)
        try:
            await self._finalize(ns)
        except StatusError as err:
            if err.code != 404:
                raise

    async def _retry_on_conflict(self, ns: Obj, change: Any) -> Obj:
        uid = ns["metadata"].get("uid")
        for _ in range(MAX_CONFLICT_RETRIES):
            try:
                result: Obj = await change(ns)
                return result
            except StatusError as err:
                if err.code != 409:
                    raise
            ns = await self.client.get("namespaces", ns["metadata"]["name"])
            if ns["metadata"].get("uid") != uid:
                raise RuntimeError("namespace uid has changed across retries")
        raise RuntimeError(f"namespace {ns['metadata']['name']}: too many conflicts")

    async def _mark_terminating(self, ns: Obj) -> Obj:
        async def change(current: Obj) -> Obj:
            if (current.get("status") or {}).get("phase") == "Terminating":
                return current
            updated = m.deep_copy(current)
            updated.setdefault("status", {})["phase"] = "Terminating"
            return await self.client.update_status("namespaces", updated)

        return await self._retry_on_conflict(ns, change)

    async def _finalize(self, ns: Obj) -> Obj:
        async def change(current: Obj) -> Obj:
            updated = m.deep_copy(current)
            kept = sorted({f for f in (current.get("spec") or {}).get("finalizers") or []
                           if f != FINALIZER})
            updated.setdefault("spec", {})["finalizers"] = kept
            return await self.client.update("namespaces", updated, subresource="finalize")

        return await self._retry_on_conflict(ns, change)

    # -- content ------------------------------------------------------------------

    async def delete_all_content(self, ns: Obj) -> int:
        """Delete everything in the namespace; returns seconds to wait (0: all gone)."""
        name = ns["metadata"]["name"]
        deleted_at = m.parse_time(ns["metadata"]["deletionTimestamp"])
        report = ContentReport()
        for info in self.resources:
            try:
                outcome = await self._delete_resource(info, name, deleted_at)
            except StatusError as err:
                report.errors.append(err.message)
                continue
            except _Unexpected as err:
                report.errors.append(str(err))
                outcome = err.outcome
            report.estimate = max(report.estimate, outcome.estimate)
            if outcome.remaining:
                report.remaining[info.group_resource if info.group
                                 else f"{info.plural}."] = outcome.remaining
                for finalizer, count in outcome.finalizers.items():
                    report.finalizers[finalizer] = report.finalizers.get(finalizer, 0) + count
        # Always written when different: a condition may have recovered.
        updated = m.deep_copy(ns)
        if apply_conditions(updated.setdefault("status", {}), desired_conditions(report)):
            try:
                await self.client.update_status("namespaces", updated)
            except StatusError as err:
                log.warning("couldn't update status conditions for namespace %s: %s", name, err)
        if report.errors:
            raise RuntimeError("; ".join(sorted(report.errors)))
        return report.estimate

    async def _delete_resource(self, info: ResourceInfo, namespace: str,
                               deleted_at: Any) -> ResourceOutcome:
        estimate = await self._graceful_estimate(info, namespace, deleted_at)
        if "deletecollection" in info.verbs:
            await self._delete_collection(info, namespace)
        else:
            items, _ = await self.client.list_all(info, namespace)
            for item in items:
                try:
                    await self.client.delete(info, item["metadata"]["name"], namespace,
                                             propagation="Background")
                except StatusError as err:
                    if err.code not in (404, 405):
                        raise
        items, _ = await self.client.list_all(info, namespace)
        if not items:
            return ResourceOutcome()
        finalizers: dict[str, int] = {}
        for item in items:
            for finalizer in (item.get("metadata") or {}).get("finalizers") or []:
                finalizers[finalizer] = finalizers.get(finalizer, 0) + 1
        if estimate:
            return ResourceOutcome(estimate, len(items), finalizers)
        if finalizers:
            return ResourceOutcome(FINALIZER_ESTIMATE_SECONDS, len(items), finalizers)
        raise _Unexpected(
            f"unexpected items still remain in namespace: {namespace} for gvr: "
            f"{gvr_text(info)}", ResourceOutcome(0, len(items)))

    async def _delete_collection(self, info: ResourceInfo, namespace: str) -> None:
        # Background propagation: the GC must not orphan dependents here.
        body = orjson.dumps({"kind": "DeleteOptions", "apiVersion": "v1",
                             "propagationPolicy": "Background"})
        raw = await self.client.transport.request("DELETE", path_for(info, namespace), None,
                                                  body, "application/json")
        if raw.status >= 300:
            err = status_error(raw)
            if err.code not in (404, 405):
                raise err

    async def _graceful_estimate(self, info: ResourceInfo, namespace: str,
                                 deleted_at: Any) -> int:
        """Pods get their grace period; the estimate lapses once that much time passed."""
        if info.group or info.plural != "pods":
            return 0
        pods, _ = await self.client.list_all(info, namespace)
        estimate = 0
        for pod in pods:
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
            if grace is not None:
                estimate = max(estimate, int(grace))
        elapsed = (m.now() - deleted_at).total_seconds()
        return 0 if elapsed >= estimate else estimate


class _Unexpected(Exception):
    """Items left without finalizers or grace: an error, but its counts still count."""

    def __init__(self, message: str, outcome: ResourceOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome
