"""The Job controller and the TTL-after-finished controller (upstream pkg/controller/job
and pkg/controller/ttlafterfinished).

A Job runs pods until `completions` of them succeed (or, without completions, until
one succeeds: work-queue semantics), at most `parallelism` at a time. Every pod it
creates carries the `batch.kubernetes.io/job-tracking` finalizer: a finished pod is
first recorded in `status.uncountedTerminatedPods`, then its finalizer is removed,
then it moves into the `succeeded`/`failed` counters, so each pod is counted exactly
once even across controller restarts. Failures are retried after an exponential
back-off (10s doubling, capped at 10 minutes as upstream's code) until
`backoffLimit`; `activeDeadlineSeconds` bounds the running time. As upstream 1.32,
terminal conditions come in two steps: `FailureTarget`/`SuccessCriteriaMet` first,
then `Failed`/`Complete` once no pod is left terminating.

Jobs whose `spec.managedBy` names another controller are left alone, as upstream
1.32 (JobManagedBy, beta). Not implemented: `podFailurePolicy`,
`backoffLimitPerIndex`/`maxFailedIndexes` and `successPolicy` (Jobs using them are
synced as if they were unset).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.api.labels import InvalidSelector, label_selector_matches
from kubi.client.events import NORMAL, WARNING
from kubi.client.informer import key_of, split_key
from kubi.controllers import _pods
from kubi.controllers.base import Controller, ControllerContext

log = logging.getLogger("kubi.controllers.job")

Obj = dict[str, Any]

JOB_TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
COMPLETION_INDEX_KEY = "batch.kubernetes.io/job-completion-index"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
JOBS = "jobs.batch"
PODS = "pods"

DEFAULT_BACKOFF_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 600.0
SYNC_BATCH_PERIOD = 1.0
MAX_UNCOUNTED_PODS = 500
MAX_POD_CREATE_DELETE_PER_SYNC = 500
MAX_GENERATED_NAME_LENGTH = 58  # 63 minus the five random characters
ORPHAN_POD_PREFIX = "orphan-pod:"
POD_INDEX = "job-controller-uid"
JOB_CONTROLLER_NAME = "kubernetes.io/job-controller"

BACKOFF_LIMIT_MESSAGE = "Job has reached the specified backoff limit"
DEADLINE_MESSAGE = "Job was active longer than specified deadline"
COMPLETIONS_REACHED_MESSAGE = "Reached expected number of succeeded pods"


# -- reading Jobs and pods ---------------------------------------------------------------


def _status(obj: Obj) -> Obj:
    status = obj.get("status")
    if not isinstance(status, dict):
        status = obj["status"] = {}
    return status


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _int_field(spec: Obj, key: str, default: int) -> int:
    value = spec.get(key)
    return default if value is None else int(value)


def find_condition(job: Obj, condition_type: str) -> Obj | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == condition_type:
            return dict(condition)
    return None


def finished_condition(job: Obj) -> Obj | None:
    """The Complete or Failed condition that is True, if the Job has finished."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return dict(condition)
    return None


def is_job_finished(job: Obj) -> bool:
    return finished_condition(job) is not None


def managed_elsewhere(job: Obj) -> bool:
    managed_by = _spec(job).get("managedBy")
    return managed_by is not None and managed_by != JOB_CONTROLLER_NAME


def is_indexed(job: Obj) -> bool:
    return _spec(job).get("completionMode") == "Indexed"


def is_suspended(job: Obj) -> bool:
    return _spec(job).get("suspend") is True


def only_replace_failed_pods(job: Obj) -> bool:
    spec = _spec(job)
    return spec.get("podReplacementPolicy") == "Failed" or spec.get("podFailurePolicy") is not None


def has_tracking_finalizer(pod: Obj) -> bool:
    return JOB_TRACKING_FINALIZER in ((pod.get("metadata") or {}).get("finalizers") or [])


def _phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def _uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def is_pod_failed(pod: Obj, job: Obj) -> bool:
    """Failed, or (unless only failed pods are replaced) deleted before succeeding."""
    if _phase(pod) == "Failed":
        return True
    if only_replace_failed_pods(job):
        return False
    return bool((pod.get("metadata") or {}).get("deletionTimestamp")) and \
        _phase(pod) != "Succeeded"


def is_pod_terminating(pod: Obj) -> bool:
    return _pods.is_pod_terminating(pod) and _phase(pod) not in ("Succeeded", "Failed")


def completion_index(pod: Obj) -> int | None:
    """The pod's completion index from its annotation (or label), None when unknown."""
    meta = pod.get("metadata") or {}
    for source in (meta.get("annotations") or {}, meta.get("labels") or {}):
        raw = source.get(COMPLETION_INDEX_KEY)
        if raw is None:
            continue
        text = str(raw)
        if text.isdigit() and (text == "0" or not text.startswith("0")):
            return int(text)
        return None
    return None


def _valid_index(pod: Obj, completions: int) -> int | None:
    index = completion_index(pod)
    return index if index is not None and index < completions else None


def parse_indexes(text: str | None, completions: int) -> set[int]:
    """`1,3-5` into {1, 3, 4, 5}, dropping malformed parts and indexes >= completions."""
    found: set[int] = set()
    for part in (text or "").split(","):
        low_text, dash, high_text = part.strip().partition("-")
        if not low_text.isdigit() or (dash and not high_text.isdigit()):
            continue
        low = int(low_text)
        high = min(int(high_text) if dash else low, completions - 1)
        found.update(range(low, high + 1))
    return found


def format_indexes(indexes: set[int]) -> str:
    """Sorted intervals as upstream prints them: `1-3` for three or more, `1,2` for two."""
    parts: list[str] = []
    ordered = sorted(indexes)
    position = 0
    while position < len(ordered):
        first = last = ordered[position]
        while position + 1 < len(ordered) and ordered[position + 1] == last + 1:
            position += 1
            last = ordered[position]
        if last == first:
            parts.append(str(first))
        elif last == first + 1:
            parts.append(f"{first},{last}")
        else:
            parts.append(f"{first}-{last}")
        position += 1
    return ",".join(parts)


def _time(value: Any) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return m.parse_time(str(value))
    except ValueError:
        return None


def pod_finish_time(pod: Obj) -> datetime.datetime:
    """When a pod finished: its containers' latest finishedAt, else when Ready turned
    False, else its deletion time less the grace period, else its creation."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    latest: datetime.datetime | None = None
    for status in statuses:
        finished = _time(((status.get("state") or {}).get("terminated") or {}).get("finishedAt"))
        if finished is None:
            latest = None
            break
        latest = finished if latest is None or finished > latest else latest
    if latest is not None:
        return latest
    ready = _pods.pod_condition(pod, "Ready")
    if ready is not None and ready.get("status") == "False":
        changed = _time(ready.get("lastTransitionTime"))
        if changed is not None:
            return changed
    meta = pod.get("metadata") or {}
    deleted = _time(meta.get("deletionTimestamp"))
    if deleted is not None:
        return deleted - datetime.timedelta(seconds=int(meta.get("deletionGracePeriodSeconds")
                                                        or 0))
    return _time(meta.get("creationTimestamp")) or m.now()


def new_condition(condition_type: str, status: str, reason: str, message: str,
                  now: datetime.datetime) -> Obj:
    stamp = m.rfc3339(now)
    condition: Obj = {"type": condition_type, "status": status, "lastProbeTime": stamp,
                      "lastTransitionTime": stamp}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def ensure_condition(conditions: list[Obj], condition_type: str, status: str, reason: str,
                     message: str, now: datetime.datetime) -> bool:
    """Set a condition in place; a False condition is never added, only updated to.
    Returns whether the list changed."""
    for index, condition in enumerate(conditions):
        if condition.get("type") == condition_type:
            if (condition.get("status"), condition.get("reason", ""),
                    condition.get("message", "")) != (status, reason, message):
                conditions[index] = new_condition(condition_type, status, reason, message, now)
                return True
            return False
    if status != "False":
        conditions.append(new_condition(condition_type, status, reason, message, now))
        return True
    return False


def past_backoff_limit_on_failure(job: Obj, pods: list[Obj]) -> bool:
    """restartPolicy OnFailure: container restarts of running/pending pods count as failures."""
    template_spec = (_spec(job).get("template") or {}).get("spec") or {}
    if template_spec.get("restartPolicy") != "OnFailure":
        return False
    restarts = 0
    for pod in pods:
        if _phase(pod) in ("Running", "Pending"):
            status = pod.get("status") or {}
            for container in [*(status.get("initContainerStatuses") or []),
                              *(status.get("containerStatuses") or [])]:
                restarts += int(container.get("restartCount") or 0)
    limit = int(_spec(job).get("backoffLimit") or 0)
    return restarts > 0 if limit == 0 else restarts >= limit


def pod_generate_name_with_index(job_name: str, index: int) -> str:
    suffix = f"-{index}-"
    prefix = job_name + suffix
    if len(prefix) > MAX_GENERATED_NAME_LENGTH:
        prefix = prefix[:MAX_GENERATED_NAME_LENGTH - len(suffix)] + suffix
    return prefix


def add_completion_index_env(template: Obj) -> None:
    """Expose the completion index to every container as JOB_COMPLETION_INDEX."""
    spec = template.setdefault("spec", {})
    field_path = f"metadata.annotations['{COMPLETION_INDEX_KEY}']"
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or []:
            env = container.setdefault("env", [])
            if not any(item.get("name") == COMPLETION_INDEX_ENV for item in env):
                env.append({"name": COMPLETION_INDEX_ENV,
                            "valueFrom": {"fieldRef": {"fieldPath": field_path}}})


def _remove_finalizer_patch() -> Obj:
    return {"metadata": {"$deleteFromPrimitiveList/finalizers": [JOB_TRACKING_FINALIZER]}}


# -- back-off between pod failures --------------------------------------------------------


@dataclass
class BackoffRecord:
    failures_after_last_success: int = 0
    last_failure: datetime.datetime | None = None

    def remaining(self, now: datetime.datetime, base: float, cap: float) -> float:
        """Seconds until pods may be created again: base·2^(failures-1), capped."""
        if self.failures_after_last_success == 0 or self.last_failure is None:
            return 0.0
        delay = base
        for _ in range(1, self.failures_after_last_success):
            delay *= 2
            if delay >= cap:
                delay = cap
                break
        elapsed = (now - self.last_failure).total_seconds()
        return max(delay - elapsed, 0.0)


def next_backoff_record(old: BackoffRecord, succeeded: list[Obj],
                        failed: list[Obj]) -> BackoffRecord:
    """Count failures since the last success among newly finished pods."""
    if not succeeded:
        if not failed:
            return BackoffRecord(old.failures_after_last_success, old.last_failure)
        last = max(pod_finish_time(p) for p in failed)
        return BackoffRecord(old.failures_after_last_success + len(failed), last)
    last_success = max(pod_finish_time(p) for p in succeeded)
    later = sorted(t for t in map(pod_finish_time, failed) if t > last_success)
    return BackoffRecord(len(later), later[-1] if later else None)


# -- one sync -----------------------------------------------------------------------------


@dataclass
class _Sync:
    job: Obj
    pods: list[Obj]
    active_pods: list[Obj]
    ready: int
    terminating: int
    uncounted_succeeded: set[str]
    uncounted_failed: set[str]
    expected_removals: set[str]
    succeeded: int = 0
    failed: int = 0
    prev_succeeded_indexes: set[int] = field(default_factory=set)
    succeeded_indexes: set[int] = field(default_factory=set)
    finished: Obj | None = None
    backoff: BackoffRecord = field(default_factory=BackoffRecord)

    @property
    def completions(self) -> int | None:
        value = _spec(self.job).get("completions")
        return None if value is None else int(value)


def _uncounted(status: Obj) -> Obj:
    uncounted = status.get("uncountedTerminatedPods")
    if not isinstance(uncounted, dict):
        uncounted = status["uncountedTerminatedPods"] = {}
    for key in ("succeeded", "failed"):
        if not uncounted.get(key):
            uncounted.pop(key, None)
    return uncounted


class JobController(Controller):
    name = "job"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        extra = ctx.options.extra
        self.backoff_base = float(extra.get("job_backoff_base", DEFAULT_BACKOFF_SECONDS))
        self.backoff_max = float(extra.get("job_backoff_max", MAX_BACKOFF_SECONDS))
        self.batch_period = float(extra.get("job_sync_batch_period", SYNC_BATCH_PERIOD))
        self.now: Callable[[], datetime.datetime] = m.now
        self.expectations = _pods.Expectations()
        self.finalizer_expectations: dict[str, set[str]] = {}
        self.backoff_records: dict[str, BackoffRecord] = {}
        self.jobs = ctx.informers.informer(JOBS)
        self.pods = ctx.informers.informer(PODS)
        _pods.index_by_controller(self.pods.cache)  # a sync reads its own pods and orphans
        self.pods.cache.add_indexer(POD_INDEX, self._pod_owner_uid)
        self.jobs.add_handlers(self._job_added, self._job_updated, self._job_deleted)
        self.pods.add_handlers(self._pod_added, self._pod_updated, self._pod_deleted)

    # -- event handlers ---------------------------------------------------------------

    @staticmethod
    def _pod_owner_uid(pod: Obj) -> list[str]:
        ref = _pods.controller_ref(pod)
        return [str(ref.get("uid"))] if ref and ref.get("kind") == "Job" else []

    def _enqueue_batched(self, job: Obj) -> None:
        self.queue.add_after(key_of(job), self.batch_period)

    def _enqueue_orphan(self, pod: Obj) -> None:
        self.queue.add(ORPHAN_POD_PREFIX + key_of(pod))

    def _resolve(self, namespace: str, ref: Obj) -> Obj | None:
        if ref.get("kind") != "Job":
            return None
        job = self.jobs.cache.get_by_name(namespace, str(ref.get("name") or ""))
        if job is None or _uid(job) != ref.get("uid"):
            return None
        return job

    def _jobs_selecting(self, pod: Obj) -> list[Obj]:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        found = []
        for job in self.jobs.cache.list(m.namespace_of(pod)):
            try:
                if label_selector_matches(_spec(job).get("selector"), labels):
                    found.append(job)
            except InvalidSelector:
                continue
        return found

    def _job_added(self, job: Obj) -> None:
        self.enqueue(job)

    def _job_updated(self, old: Obj, new: Obj) -> None:
        if (old.get("metadata") or {}).get("generation") == \
                (new.get("metadata") or {}).get("generation"):
            self._enqueue_batched(new)
        else:
            self.enqueue(new)
        if is_job_finished(new):
            self._cleanup_pod_finalizers(new)
        start = _time((new.get("status") or {}).get("startTime"))
        deadline = _spec(new).get("activeDeadlineSeconds")
        if start is not None and deadline is not None and \
                _spec(old).get("activeDeadlineSeconds") != deadline:
            remaining = float(deadline) - (self.now() - start).total_seconds()
            self.queue.add_after(key_of(new), remaining)

    def _job_deleted(self, job: Obj) -> None:
        self.enqueue(job)
        self._cleanup_pod_finalizers(job)

    def _cleanup_pod_finalizers(self, job: Obj) -> None:
        for pod in self.pods.cache.by_index(POD_INDEX, _uid(job)):
            if has_tracking_finalizer(pod):
                self._enqueue_orphan(pod)

    def _pod_added(self, pod: Obj) -> None:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            self._pod_gone(pod, final=False)
            return
        ref = _pods.controller_ref(pod)
        if ref is not None:
            job = self._resolve(m.namespace_of(pod), ref)
            if job is not None:
                self.expectations.creation_observed(key_of(job))
                self._enqueue_batched(job)
            return
        if has_tracking_finalizer(pod):
            self._enqueue_orphan(pod)
        for job in self._jobs_selecting(pod):
            self._enqueue_batched(job)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if (old.get("metadata") or {}).get("resourceVersion") == \
                (new.get("metadata") or {}).get("resourceVersion"):
            return
        if (new.get("metadata") or {}).get("deletionTimestamp"):
            self._pod_gone(new, final=False)
            return
        finalizer_removed = not has_tracking_finalizer(new)
        new_ref, old_ref = _pods.controller_ref(new), _pods.controller_ref(old)
        if new_ref != old_ref and old_ref is not None:
            job = self._resolve(m.namespace_of(old), old_ref)
            if job is not None:
                if finalizer_removed:
                    self._finalizer_removal_observed(key_of(job), _uid(new))
                self._enqueue_batched(job)
        if new_ref is not None:
            job = self._resolve(m.namespace_of(new), new_ref)
            if job is not None:
                if finalizer_removed:
                    self._finalizer_removal_observed(key_of(job), _uid(new))
                self._enqueue_batched(job)
            return
        if has_tracking_finalizer(new):
            self._enqueue_orphan(new)
        if new_ref != old_ref or (new.get("metadata") or {}).get("labels") != \
                (old.get("metadata") or {}).get("labels"):
            for job in self._jobs_selecting(new):
                self._enqueue_batched(job)

    def _pod_deleted(self, pod: Obj) -> None:
        self._pod_gone(pod, final=True)

    def _pod_gone(self, pod: Obj, final: bool) -> None:
        ref = _pods.controller_ref(pod)
        has_finalizer = has_tracking_finalizer(pod)
        if ref is None:
            if has_finalizer:
                self._enqueue_orphan(pod)
            return
        job = self._resolve(m.namespace_of(pod), ref)
        if job is None or is_job_finished(job):
            if has_finalizer:
                self._enqueue_orphan(pod)
            return
        job_key = key_of(job)
        self.expectations.deletion_observed(job_key, key_of(pod))
        if final or not has_finalizer:
            self._finalizer_removal_observed(job_key, _uid(pod))
        self._enqueue_batched(job)

    def _finalizer_removal_observed(self, job_key: str, pod_uid: str) -> None:
        expected = self.finalizer_expectations.get(job_key)
        if expected is not None:
            expected.discard(pod_uid)

    # -- reconcile ------------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        if key.startswith(ORPHAN_POD_PREFIX):
            await self._sync_orphan_pod(key[len(ORPHAN_POD_PREFIX):])
            return None
        return await self.sync_job(key)

    async def _sync_orphan_pod(self, pod_key: str) -> None:
        """Remove the tracking finalizer from a pod no unfinished Job owns."""
        namespace, name = split_key(pod_key)
        pod = self.pods.cache.get_by_name(namespace, name)
        if pod is None or not has_tracking_finalizer(pod):
            return
        ref = _pods.controller_ref(pod)
        if ref is not None:
            if ref.get("kind") != "Job" or ref.get("apiVersion") != "batch/v1":
                return
            job = self._resolve(namespace, ref)
            if job is not None and (managed_elsewhere(job) or not is_job_finished(job)):
                return
        try:
            await self.client.patch(PODS, name, _remove_finalizer_patch(), namespace,
                                    patch_type="strategic")
        except StatusError as err:
            if err.code != 404:
                raise

    async def sync_job(self, key: str) -> float | None:
        namespace, name = split_key(key)
        shared = self.jobs.cache.get_by_name(namespace, name)
        if shared is None:
            self.expectations.delete(key)
            self.finalizer_expectations.pop(key, None)
            self.backoff_records.pop(key, None)
            return None
        if managed_elsewhere(shared):
            return None
        if is_job_finished(shared):
            self.backoff_records.pop(key, None)
            return None
        job = m.deep_copy(shared)
        spec = _spec(job)
        if spec.get("completionMode") not in (None, "NonIndexed", "Indexed"):
            await self.recorder.event(job, WARNING, "UnknownCompletionMode",
                                      "Skipped Job sync because completion mode is unknown")
            return None
        status = _status(job)
        _uncounted(status)
        requeue: float | None = None

        satisfied = self.expectations.satisfied(key)
        pods = await self._pods_for_job(job)
        if pods is None:
            return None  # an invalid selector: nothing safe to do until the Job changes
        active_pods = [p for p in pods if _pods.is_pod_active(p)]
        uncounted = status["uncountedTerminatedPods"]
        state = _Sync(job=job, pods=pods, active_pods=active_pods,
                      ready=sum(1 for p in active_pods if _pods.is_pod_ready(p)),
                      terminating=sum(1 for p in pods if is_pod_terminating(p)),
                      uncounted_succeeded=set(uncounted.get("succeeded") or []),
                      uncounted_failed=set(uncounted.get("failed") or []),
                      expected_removals=set(self.finalizer_expectations.get(key, set())))
        active = len(active_pods)
        new_succeeded, new_failed = self._new_finished_pods(state)
        state.succeeded = int(status.get("succeeded") or 0) + len(new_succeeded) + \
            len(state.uncounted_succeeded)
        state.failed = int(status.get("failed") or 0) + len(new_failed) + \
            len(state.uncounted_failed)
        now = self.now()
        if status.get("startTime") is None and not is_suspended(job):
            status["startTime"] = m.rfc3339(now)
        state.backoff = next_backoff_record(self.backoff_records.get(key, BackoffRecord()),
                                            new_succeeded, new_failed)

        state.finished = self._pending_terminal_condition(job, now)
        if state.finished is None:
            backoff_limit = _int_field(spec, "backoffLimit", 6)
            if state.failed > backoff_limit or past_backoff_limit_on_failure(job, pods):
                state.finished = new_condition("FailureTarget", "True", "BackoffLimitExceeded",
                                               BACKOFF_LIMIT_MESSAGE, now)
            elif self._past_active_deadline(job, now):
                state.finished = new_condition("FailureTarget", "True", "DeadlineExceeded",
                                               DEADLINE_MESSAGE, now)
            elif spec.get("activeDeadlineSeconds") is not None and not is_suspended(job):
                start = _time(status.get("startTime")) or now
                requeue = float(spec["activeDeadlineSeconds"]) - (now - start).total_seconds()

        if is_indexed(job) and state.completions is not None:
            state.prev_succeeded_indexes = parse_indexes(status.get("completedIndexes"),
                                                         state.completions)
            state.succeeded_indexes = state.prev_succeeded_indexes | {
                index for p in pods
                if _phase(p) == "Succeeded" and has_tracking_finalizer(p)
                and (index := _valid_index(p, state.completions)) is not None}
            state.succeeded = len(state.succeeded_indexes)

        suspend_changed = False
        if state.finished is not None:
            deleted_ready, deleted = await self._delete_active_pods(job, state.active_pods)
            if deleted != active or not satisfied:
                # Pods may still have finalizers or be missing from the cache.
                state.finished = None
            active -= deleted
            state.terminating += deleted
            state.ready -= deleted_ready
        else:
            managed = False
            if satisfied and not (job.get("metadata") or {}).get("deletionTimestamp"):
                active = await self._manage_job(key, state)
                managed = True
            completions = state.completions
            if completions is None:
                complete = state.succeeded > 0 and active == 0
            else:
                complete = state.succeeded >= completions and active == 0
            if complete:
                state.finished = new_condition("SuccessCriteriaMet", "True", "CompletionsReached",
                                               COMPLETIONS_REACHED_MESSAGE, now)
            elif managed:
                suspend_changed = await self._sync_suspended_condition(job, now)

        needs_update = suspend_changed or active != status.get("active", 0) or \
            state.ready != status.get("ready") or state.terminating != status.get("terminating")
        status["active"] = active
        status["ready"] = state.ready
        status["terminating"] = state.terminating
        await self._track_status_and_remove_finalizers(key, state, needs_update)
        return requeue

    def _pending_terminal_condition(self, job: Obj, now: datetime.datetime) -> Obj | None:
        """A terminal condition decided in an earlier sync and not yet enacted."""
        success = find_condition(job, "SuccessCriteriaMet")
        if success is not None and success.get("status") == "True":
            return success
        target = find_condition(job, "FailureTarget")
        if target is not None and target.get("status") == "True":
            return new_condition("Failed", "True", str(target.get("reason") or ""),
                                 str(target.get("message") or ""), now)
        return None

    def _past_active_deadline(self, job: Obj, now: datetime.datetime) -> bool:
        deadline = _spec(job).get("activeDeadlineSeconds")
        start = _time(_status(job).get("startTime"))
        if deadline is None or start is None or is_suspended(job):
            return False
        return (now - start).total_seconds() >= float(deadline)

    async def _sync_suspended_condition(self, job: Obj, now: datetime.datetime) -> bool:
        conditions = _status(job).setdefault("conditions", [])
        if is_suspended(job):
            changed = ensure_condition(conditions, "Suspended", "True", "JobSuspended",
                                       "Job suspended", now)
            if changed:
                await self.recorder.event(job, NORMAL, "Suspended", "Job suspended")
            return changed
        changed = ensure_condition(conditions, "Suspended", "False", "JobResumed",
                                   "Job resumed", now)
        if changed:
            await self.recorder.event(job, NORMAL, "Resumed", "Job resumed")
            # activeDeadlineSeconds counts continuous activity: restart the clock.
            _status(job)["startTime"] = m.rfc3339(now)
        if not conditions:
            _status(job).pop("conditions", None)
        return changed

    # -- pods of a Job ----------------------------------------------------------------------

    async def _pods_for_job(self, job: Obj) -> list[Obj] | None:
        """Owned pods, plus orphans adopted now (given the tracking finalizer); None when
        the selector is invalid."""
        namespace = m.namespace_of(job)
        selector = _spec(job).get("selector")
        try:
            adopt, release, owned = _pods.claim_pods(
                job, selector, _pods.claim_candidates(self.pods.cache, job))
        except InvalidSelector as err:
            log.warning("job %s/%s: invalid selector: %s", namespace, m.name_of(job), err)
            return None
        if adopt and not await self._can_adopt(job):
            adopt = []
        for pod in adopt:
            patch = _pods.adopt_patch(job, pod)
            patch["metadata"]["finalizers"] = [JOB_TRACKING_FINALIZER]
            try:
                adopted = await self.client.patch(PODS, m.name_of(pod), patch, namespace,
                                                  patch_type="strategic")
            except StatusError as err:
                if err.code in (404, 409, 422):
                    continue
                raise
            owned.append(adopted)
        for pod in release:
            try:
                await self.client.patch(PODS, m.name_of(pod), _pods.release_patch(job, pod),
                                        namespace, patch_type="strategic")
            except StatusError as err:
                if err.code not in (404, 409, 422):
                    raise
        return owned

    async def _can_adopt(self, job: Obj) -> bool:
        """Adopt only if a fresh read shows the same Job, not being deleted."""
        try:
            fresh = await self.client.get(JOBS, m.name_of(job), m.namespace_of(job))
        except StatusError as err:
            if err.code == 404:
                return False
            raise
        return _uid(fresh) == _uid(job) and not fresh["metadata"].get("deletionTimestamp")

    def _new_finished_pods(self, state: _Sync) -> tuple[list[Obj], list[Obj]]:
        """Finished pods not yet in the counters nor in uncountedTerminatedPods."""
        succeeded, failed = [], []
        for pod in state.pods:
            uid = _uid(pod)
            if not has_tracking_finalizer(pod) or uid in state.expected_removals:
                continue
            if is_indexed(state.job) and (
                    state.completions is None or _valid_index(pod, state.completions) is None):
                continue
            if _phase(pod) == "Succeeded" and uid not in state.uncounted_succeeded:
                succeeded.append(pod)
            elif is_pod_failed(pod, state.job) and uid not in state.uncounted_failed:
                failed.append(pod)
        return succeeded, failed

    async def _manage_job(self, key: str, state: _Sync) -> int:
        """Create or delete pods towards the wanted number of active pods."""
        job = state.job
        spec = _spec(job)
        active = len(state.active_pods)
        if is_suspended(job):
            to_delete = self._pods_for_removal(job, state.active_pods, active)
            removed_ready, removed = await self._delete_job_pods(key, job, to_delete)
            state.terminating += removed
            state.ready -= removed_ready
            return active - removed
        parallelism = _int_field(spec, "parallelism", 1)
        completions = state.completions
        if completions is None:
            want = active if state.succeeded > 0 else parallelism
        else:
            want = max(min(completions - state.succeeded, parallelism), 0)
        to_delete = self._pods_for_removal(job, state.active_pods, max(active - want, 0))
        to_delete = to_delete[:MAX_POD_CREATE_DELETE_PER_SYNC]
        if to_delete:
            removed_ready, removed = await self._delete_job_pods(key, job, to_delete)
            state.terminating += removed
            state.ready -= removed_ready
            return active - removed
        terminating = state.terminating if only_replace_failed_pods(job) else 0
        diff = want - terminating - active
        if diff <= 0:
            return active
        remaining = state.backoff.remaining(self.now(), self.backoff_base, self.backoff_max)
        if remaining > 0:
            # Upstream (before its 1.32 patch fix) reported 0 active here; keep the truth.
            self.queue.add_after(key, max(remaining, self.batch_period))
            return active
        diff = min(diff, MAX_POD_CREATE_DELETE_PER_SYNC)
        indexes: list[int | None] = [None] * diff
        if is_indexed(job) and completions is not None:
            indexes = list(self._first_pending_indexes(state, diff, completions))
            diff = len(indexes)
        if diff == 0:
            return active
        created = await self._create_pods(key, job, indexes)
        return active + created

    def _pods_for_removal(self, job: Obj, pods: list[Obj], at_least: int) -> list[Obj]:
        """Duplicated or invalid indexes first (Indexed Jobs), then the least advanced pods."""
        remove: list[Obj] = []
        left = list(pods)
        completions = _spec(job).get("completions")
        if is_indexed(job) and completions is not None:
            left = []
            by_index: dict[int, list[Obj]] = {}
            for pod in pods:
                index = _valid_index(pod, int(completions))
                if index is None:
                    remove.append(pod)
                else:
                    by_index.setdefault(index, []).append(pod)
            for group in by_index.values():
                ranked = _pods.pod_deletion_rank(group)
                remove.extend(ranked[:-1])
                left.append(ranked[-1])
        if len(remove) < at_least:
            remove.extend(_pods.pod_deletion_rank(left)[:at_least - len(remove)])
        return remove

    @staticmethod
    def _first_pending_indexes(state: _Sync, count: int, completions: int) -> list[int]:
        busy = set(state.succeeded_indexes)
        busy.update(i for p in state.active_pods
                    if (i := completion_index(p)) is not None)
        if only_replace_failed_pods(state.job):
            busy.update(i for p in state.pods
                        if is_pod_terminating(p) and (i := completion_index(p)) is not None)
        pending = []
        for index in range(completions):
            if index not in busy:
                pending.append(index)
                if len(pending) == count:
                    break
        return pending

    async def _create_pods(self, key: str, job: Obj, indexes: list[int | None]) -> int:
        """Create pods in slow-start batches (1, 2, 4, ...); stop at the first failing
        batch. Returns how many were created."""
        template = m.deep_copy(_spec(job).get("template") or {})
        if is_indexed(job):
            add_completion_index_env(template)
        template_meta = template.setdefault("metadata", {})
        finalizers = list(template_meta.get("finalizers") or [])
        if JOB_TRACKING_FINALIZER not in finalizers:
            finalizers.append(JOB_TRACKING_FINALIZER)
        template_meta["finalizers"] = finalizers
        self.expectations.expect_creations(key, len(indexes))
        created = 0
        position = 0
        batch = 1
        while position < len(indexes):
            chunk = indexes[position:position + batch]
            results = await asyncio.gather(*(self._create_pod(job, template, index)
                                             for index in chunk))
            created += sum(results)
            position += len(chunk)
            failures = len(chunk) - sum(results)
            if failures:
                self.expectations.lower(key, adds=failures + len(indexes) - position)
                break
            batch *= 2
        return created

    async def _create_pod(self, job: Obj, template: Obj, index: int | None) -> bool:
        generate_name = None
        if index is not None:
            template = m.deep_copy(template)
            meta = template.setdefault("metadata", {})
            meta.setdefault("annotations", {})[COMPLETION_INDEX_KEY] = str(index)
            meta.setdefault("labels", {})[COMPLETION_INDEX_KEY] = str(index)
            template.setdefault("spec", {})["hostname"] = f"{m.name_of(job)}-{index}"
            generate_name = pod_generate_name_with_index(m.name_of(job), index)
        pod = _pods.pod_from_template(template, job, generate_name)
        try:
            created = await self.client.create(PODS, pod, m.namespace_of(job))
        except StatusError as err:
            if any(c.type == "NamespaceTerminating" for c in err.causes):
                return False
            await self.recorder.event(job, WARNING, "FailedCreate", f"Error creating: {err}")
            log.info("job %s: creating a pod failed: %s", key_of(job), err)
            return False
        await self.recorder.event(job, NORMAL, "SuccessfulCreate",
                                  f"Created pod: {m.name_of(created)}")
        return True

    async def _delete_pod(self, job: Obj, pod: Obj) -> bool:
        try:
            await self.client.delete(PODS, m.name_of(pod), m.namespace_of(pod))
        except StatusError as err:
            if err.code == 404:
                return True
            await self.recorder.event(job, WARNING, "FailedDelete", f"Error deleting: {err}")
            return False
        await self.recorder.event(job, NORMAL, "SuccessfulDelete",
                                  f"Deleted pod: {m.name_of(pod)}")
        return True

    async def _delete_active_pods(self, job: Obj, pods: list[Obj]) -> tuple[int, int]:
        """Delete pods keeping their finalizers, so they are counted as failed."""
        results = await asyncio.gather(*(self._delete_pod(job, pod) for pod in pods))
        deleted = sum(results)
        ready = sum(1 for pod in pods if _pods.is_pod_ready(pod))
        return ready, deleted

    async def _delete_job_pods(self, key: str, job: Obj, pods: list[Obj]) -> tuple[int, int]:
        """Delete surplus pods, first dropping their finalizer: they are not failures."""
        self.expectations.expect_deletions(key, [key_of(p) for p in pods])

        async def remove(pod: Obj) -> bool:
            try:
                if has_tracking_finalizer(pod):
                    await self.client.patch(PODS, m.name_of(pod), _remove_finalizer_patch(),
                                            m.namespace_of(pod), patch_type="strategic")
            except StatusError as err:
                if err.code != 404:
                    self.expectations.deletion_observed(key, key_of(pod))
                    return False
            ok = await self._delete_pod(job, pod)
            if not ok:
                self.expectations.deletion_observed(key, key_of(pod))
            return ok

        results = await asyncio.gather(*(remove(pod) for pod in pods))
        ready = sum(1 for pod, ok in zip(pods, results, strict=True)
                    if ok and _pods.is_pod_ready(pod))
        return ready, sum(results)

    # -- counting finished pods exactly once ---------------------------------------------------

    async def _track_status_and_remove_finalizers(self, key: str, state: _Sync,
                                                  needs_flush: bool) -> None:
        """Record finished pods in uncountedTerminatedPods, remove their finalizers, move
        them into the counters, and set the terminal conditions when due."""
        job = state.job
        indexed = is_indexed(job) and state.completions is not None
        pods = state.pods
        if indexed:
            pods = sorted(pods, key=lambda p: (completion_index(p) is None,
                                               completion_index(p) or 0))
        with_finalizer = {_uid(p) for p in pods
                          if has_tracking_finalizer(p) and _uid(p) not in state.expected_removals}
        status = _status(job)
        if self._count_uncounted_without_finalizers(status, with_finalizer):
            needs_flush = True
        uncounted = _uncounted(status)
        to_remove: list[Obj] = []
        new_indexes: set[int] = set()
        reached_max = False
        success_met = state.finished is not None and \
            state.finished.get("type") == "SuccessCriteriaMet"
        for pod in pods:
            uid = _uid(pod)
            if not has_tracking_finalizer(pod) or uid in state.expected_removals:
                continue
            failed = is_pod_failed(pod, job)
            if not ((job.get("metadata") or {}).get("deletionTimestamp")
                    or state.finished is not None or _phase(pod) == "Succeeded" or failed):
                continue
            to_remove.append(pod)
            if _phase(pod) == "Succeeded" and uid not in state.uncounted_failed:
                if indexed:
                    assert state.completions is not None
                    index = _valid_index(pod, state.completions)
                    if index is not None and index not in state.prev_succeeded_indexes:
                        new_indexes.add(index)
                        needs_flush = True
                elif uid not in state.uncounted_succeeded:
                    uncounted.setdefault("succeeded", []).append(uid)
                    needs_flush = True
            elif failed or (state.finished is not None and not success_met):
                # Once the Job is failing, every pod not succeeded counts as failed.
                index = _valid_index(pod, state.completions) if indexed and \
                    state.completions is not None else None
                if uid not in state.uncounted_failed and (not indexed or index is not None):
                    uncounted.setdefault("failed", []).append(uid)
                    needs_flush = True
            counted = len(new_indexes) + len(uncounted.get("succeeded") or []) + \
                len(uncounted.get("failed") or [])
            if counted >= MAX_UNCOUNTED_PODS:
                reached_max = True
                break
        if indexed:
            state.succeeded_indexes |= new_indexes
            text = format_indexes(state.succeeded_indexes)
            if text != (status.get("completedIndexes") or ""):
                needs_flush = True
            status["succeeded"] = len(state.succeeded_indexes)
            status["completedIndexes"] = text
        now = self.now()
        if state.finished is not None and state.finished.get("type") == "FailureTarget":
            status.setdefault("conditions", []).append(state.finished)
            needs_flush = True
            state.finished = new_condition("Failed", "True", state.finished.get("reason", ""),
                                           state.finished.get("message", ""), now)
        if state.finished is not None and state.finished.get("type") == "SuccessCriteriaMet":
            if find_condition(job, "SuccessCriteriaMet") is None:
                status.setdefault("conditions", []).append(state.finished)
                needs_flush = True
            state.finished = new_condition("Complete", "True", state.finished.get("reason", ""),
                                           state.finished.get("message", ""), now)
        needs_flush = await self._flush_and_remove_finalizers(key, state, to_remove,
                                                              with_finalizer, needs_flush)
        finished = not reached_max and self._enact_finished(state)
        if finished or needs_flush:
            state.job = await self._update_status(state.job)
            if finished and state.finished is not None:
                await self._record_finished(state.job, state.finished)

    @staticmethod
    def _count_uncounted_without_finalizers(status: Obj, with_finalizer: set[str]) -> bool:
        """Move uncounted pods whose finalizer is gone into the counters."""
        uncounted = _uncounted(status)
        changed = False
        for kind in ("succeeded", "failed"):
            listed = list(uncounted.get(kind) or [])
            still = [uid for uid in listed if uid in with_finalizer]
            if len(still) != len(listed):
                changed = True
                status[kind] = int(status.get(kind) or 0) + len(listed) - len(still)
                if still:
                    uncounted[kind] = still
                else:
                    uncounted.pop(kind, None)
        return changed

    async def _flush_and_remove_finalizers(self, key: str, state: _Sync, to_remove: list[Obj],
                                           with_finalizer: set[str], needs_flush: bool) -> bool:
        """Persist uncounted pods before touching finalizers, then count the pods whose
        finalizer went. Returns whether status changes still wait to be written."""
        if needs_flush:
            state.job = await self._update_status(state.job)
            self.backoff_records[key] = state.backoff
            needs_flush = False
        failure: StatusError | None = None
        if to_remove:
            expected = self.finalizer_expectations.setdefault(key, set())
            expected.update(_uid(p) for p in to_remove)
            results = await asyncio.gather(*(self._remove_finalizer(key, p) for p in to_remove),
                                           return_exceptions=True)
            for pod, result in zip(to_remove, results, strict=True):
                if result is True:
                    with_finalizer.discard(_uid(pod))
                elif isinstance(result, StatusError):
                    failure = result
                elif isinstance(result, BaseException):
                    raise result
        if self._count_uncounted_without_finalizers(_status(state.job), with_finalizer):
            needs_flush = True
        if failure is not None:
            if needs_flush:
                state.job = await self._update_status(state.job)
            raise failure
        return needs_flush

    async def _remove_finalizer(self, key: str, pod: Obj) -> bool:
        try:
            await self.client.patch(PODS, m.name_of(pod), _remove_finalizer_patch(),
                                    m.namespace_of(pod), patch_type="strategic")
        except StatusError as err:
            self._finalizer_removal_observed(key, _uid(pod))
            if err.code != 404:
                raise
        return True

    def _enact_finished(self, state: _Sync) -> bool:
        """Add Complete/Failed once every finished pod is counted and none terminates."""
        if state.finished is None:
            return False
        status = _status(state.job)
        uncounted = _uncounted(status)
        if uncounted.get("succeeded") or uncounted.get("failed"):
            return False
        if state.terminating > 0:
            return False
        condition = state.finished
        conditions = status.setdefault("conditions", [])
        now = self.now()
        ensure_condition(conditions, condition["type"], condition["status"],
                         condition.get("reason", ""), condition.get("message", ""), now)
        if condition["type"] == "Complete":
            for existing in conditions:
                if existing.get("type") == "Complete":
                    status["completionTime"] = existing["lastTransitionTime"]
        return True

    async def _record_finished(self, job: Obj, condition: Obj) -> None:
        if condition["type"] == "Complete":
            completions = _spec(job).get("completions")
            if completions is not None and int(_status(job).get("succeeded") or 0) > completions:
                await self.recorder.event(job, WARNING, "TooManySucceededPods",
                                          "Too many succeeded pods running after completion "
                                          "count reached")
            await self.recorder.event(job, NORMAL, "Completed", "Job completed")
        else:
            await self.recorder.event(job, WARNING, condition.get("reason", ""),
                                      condition.get("message", ""))

    async def _update_status(self, job: Obj) -> Obj:
        status = _status(job)
        _uncounted(status)
        # Zero counters and an empty index list are omitted on the wire, as Go's
        # omitempty does; ready and terminating are pointers and stay.
        for key in ("active", "succeeded", "failed", "completedIndexes"):
            if not status.get(key):
                status.pop(key, None)
        updated = await self.client.update_status(JOBS, job)
        _uncounted(_status(updated))
        return updated


# -- TTL after finished -------------------------------------------------------------------


def finish_time(job: Obj) -> datetime.datetime | None:
    condition = finished_condition(job)
    return None if condition is None else _time(condition.get("lastTransitionTime"))


def needs_cleanup(job: Obj) -> bool:
    return _spec(job).get("ttlSecondsAfterFinished") is not None and is_job_finished(job)


class TTLAfterFinishedController(Controller):
    """Deletes finished Jobs `ttlSecondsAfterFinished` after they finished (cascading
    in the foreground, as upstream)."""

    name = "ttl-after-finished"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.now: Callable[[], datetime.datetime] = m.now
        self.jobs = ctx.informers.informer(JOBS)
        self.jobs.add_handlers(self._changed, lambda _old, new: self._changed(new))

    def _changed(self, job: Obj) -> None:
        if not (job.get("metadata") or {}).get("deletionTimestamp") and needs_cleanup(job):
            self.enqueue(job)

    def _time_left(self, job: Obj) -> float | None:
        """Seconds until the Job expires (<= 0: expired); None when it never will."""
        if (job.get("metadata") or {}).get("deletionTimestamp") or not needs_cleanup(job):
            return None
        finished = finish_time(job)
        if finished is None:
            log.warning("unable to find the time when the Job %s finished", key_of(job))
            return None
        ttl = float(_spec(job)["ttlSecondsAfterFinished"])
        return ttl - (self.now() - finished).total_seconds()

    async def reconcile(self, key: str) -> float | None:
        namespace, name = split_key(key)
        job = self.jobs.cache.get_by_name(namespace, name)
        if job is None:
            return None
        left = self._time_left(job)
        if left is None:
            return None
        if left > 0:
            return left
        # The cached TTL may be stale: decide on a fresh read.
        try:
            fresh = await self.client.get(JOBS, name, namespace)
        except StatusError as err:
            if err.code == 404:
                return None
            raise
        left = self._time_left(fresh)
        if left is None:
            return None
        if left > 0:
            return left
        try:
            await self.client.delete(JOBS, name, namespace, propagation="Foreground",
                                     uid=_uid(fresh))
        except StatusError as err:
            if err.code != 404:
                raise
        return None
