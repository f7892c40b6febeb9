"""The CronJob controller (upstream pkg/controller/cronjob, the v2 controller).

Each sync looks at the most recent scheduled time that has passed and not been
started yet (missed older ones are skipped, as upstream; more than 100 missed gives
a `TooManyMissedTimes` warning), honours `startingDeadlineSeconds`, `suspend`,
`concurrencyPolicy` and `timeZone`, creates the Job named
`<cronjob>-<scheduled time in minutes since the epoch>` (the name is the lock against
creating it twice), keeps `status.active`, `lastScheduleTime` and
`lastSuccessfulTime`, trims finished Jobs to the history limits, and comes back at
the next scheduled time.

The controller takes its clock from `ControllerOptions.extra["clock"]` (a callable
returning an aware datetime) when given; `extra["cronjob_requeue_cap"]` bounds how
long it sleeps between looks (for tests that move a fake clock). A schedule without
`timeZone` is read in UTC (upstream: the controller manager's local zone).
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from kubi.api import meta as m
from kubi.api.cron import CronError, Schedule, load_location, parse_standard
from kubi.api.errors import StatusError
from kubi.client.events import NORMAL, WARNING
from kubi.client.informer import key_of, split_key
from kubi.controllers import _pods
from kubi.controllers.base import Controller, ControllerContext

log = logging.getLogger("kubi.controllers.cronjob")

Obj = dict[str, Any]

CRONJOBS = "cronjobs.batch"
JOBS = "jobs.batch"
SCHEDULED_TIMESTAMP_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
NEXT_SCHEDULE_DELTA = 0.1  # upstream pads each wake-up by 100ms against clock skew
TOO_MANY_MISSED = 100
JOB_INDEX = "cronjob-controller-name"

UNSUPPORTED_TZ_MESSAGE = ("CRON_TZ or TZ used in schedule {schedule} is not officially "
                          "supported, see https://kubernetes.io/docs/concepts/workloads/"
                          "controllers/cron-jobs/ for more details")


# -- schedule arithmetic (upstream utils.go) ---------------------------------------------


def go_quote(text: str) -> str:
    """Go's %q for plain strings: double quotes, backslash escapes."""
    return json.dumps(text, ensure_ascii=False)


def _time(value: Any) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return m.parse_time(str(value))
    except ValueError:
        return None


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _status(obj: Obj) -> Obj:
    status = obj.get("status")
    if not isinstance(status, dict):
        status = obj["status"] = {}
    return status


def format_schedule(cronjob: Obj) -> tuple[str, bool]:
    """The schedule to parse, with `TZ=<timeZone>` prepended when a valid zone is set;
    and whether the schedule itself uses TZ (unsupported, worth a warning)."""
    spec = _spec(cronjob)
    schedule = str(spec.get("schedule") or "")
    if "TZ" in schedule:
        return schedule, True
    zone = spec.get("timeZone")
    if zone is not None:
        try:
            load_location(str(zone))
        except CronError:
            return schedule, False
        return f"TZ={zone} {schedule}", False
    return schedule, False


class InvalidSchedule(ValueError):
    """The schedule parses but cannot be used (e.g. it fires twice in the same second)."""


_DISTANT_PAST = datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)


def most_recent_schedule_time(cronjob: Obj, now: datetime.datetime, schedule: Schedule,
                              include_starting_deadline: bool
                              ) -> tuple[datetime.datetime, datetime.datetime | None, int]:
    """(earliest time considered, most recent unmet scheduled time or None, an estimate
    of how many scheduled times were missed). Raises InvalidSchedule."""
    meta = cronjob.get("metadata") or {}
    earliest = _time(_status(cronjob).get("lastScheduleTime")) or \
        _time(meta.get("creationTimestamp")) or now
    deadline = _spec(cronjob).get("startingDeadlineSeconds")
    if include_starting_deadline and deadline is not None:
        scheduling_deadline = now - datetime.timedelta(seconds=int(deadline))
        if scheduling_deadline > earliest:
            earliest = scheduling_deadline
    first = schedule.next(earliest) or _DISTANT_PAST
    second = schedule.next(first) if first is not _DISTANT_PAST else None
    second = second or _DISTANT_PAST
    if now < first:
        return earliest, None, 0
    if now < second:
        return earliest, first, 1
    interval = round((second - first).total_seconds())
    if interval < 1:
        raise InvalidSchedule("time difference between two schedules is less than 1 second")
    elapsed = int((now - first).total_seconds())
    missed = elapsed // interval + 1
    # Jump close to now by whole intervals, then let the schedule find the exact times
    # (intervals are uneven for schedules such as `30 6-16/4 * * 1-5`).
    probe = first + datetime.timedelta(seconds=(missed - 2) * interval)
    most_recent: datetime.datetime | None = None
    candidate = schedule.next(probe)
    while candidate is not None and candidate <= now:
        most_recent = candidate
        candidate = schedule.next(candidate)
    return earliest, most_recent, missed


def next_schedule_time_duration(cronjob: Obj, now: datetime.datetime,
                                schedule: Schedule) -> float | None:
    """Seconds from now until the sync after the next scheduled time."""
    try:
        earliest, most_recent, missed = most_recent_schedule_time(cronjob, now, schedule,
                                                                  False)
    except InvalidSchedule:
        most_recent = now
    else:
        if most_recent is None:
            most_recent = earliest if missed == 0 else now
    upcoming = schedule.next(most_recent)
    if upcoming is None:
        return None
    return (upcoming - now).total_seconds() + NEXT_SCHEDULE_DELTA


def job_name(cronjob: Obj, scheduled: datetime.datetime) -> str:
    return f"{m.name_of(cronjob)}-{int(scheduled.timestamp()) // 60}"


def rfc3339_in_zone(t: datetime.datetime) -> str:
    """Go's RFC3339 layout: `Z` for UTC, else the numeric offset."""
    text = t.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def rfc1123z(t: datetime.datetime) -> str:
    utc = t.astimezone(datetime.UTC)
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
              "Dec")
    return (f"{days[utc.weekday()]}, {utc.day:02d} {months[utc.month - 1]} {utc.year} "
            f"{utc:%H:%M:%S} +0000")


def job_from_template(cronjob: Obj, scheduled: datetime.datetime) -> Obj:
    """The Job a CronJob runs at `scheduled` (upstream getJobFromTemplate2)."""
    template = _spec(cronjob).get("jobTemplate") or {}
    template_meta = template.get("metadata") or {}
    zone = load_location(str(_spec(cronjob).get("timeZone") or ""))
    annotations = dict(template_meta.get("annotations") or {})
    annotations[SCHEDULED_TIMESTAMP_ANNOTATION] = rfc3339_in_zone(scheduled.astimezone(zone))
    metadata: Obj = {"name": job_name(cronjob, scheduled),
                     "namespace": m.namespace_of(cronjob),
                     "annotations": annotations,
                     "ownerReferences": [_pods.owner_reference(cronjob)]}
    labels = dict(template_meta.get("labels") or {})
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
            "spec": m.deep_copy(template.get("spec") or {})}


def job_finished_type(job: Obj) -> str | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return None


def object_reference(job: Obj) -> Obj:
    meta = job.get("metadata") or {}
    return {"kind": "Job", "namespace": meta.get("namespace", ""), "name": meta.get("name", ""),
            "uid": meta.get("uid", ""), "apiVersion": "batch/v1",
            "resourceVersion": meta.get("resourceVersion", "")}


def _by_start_time(a: Obj, b: Obj) -> int:
    """Oldest start first; jobs never started last; names break ties."""
    start_a = _time((a.get("status") or {}).get("startTime"))
    start_b = _time((b.get("status") or {}).get("startTime"))
    if start_a is None and start_b is not None:
        return 1
    if start_a is not None and start_b is None:
        return -1
    if start_a == start_b:
        name_a, name_b = m.name_of(a), m.name_of(b)
        return (name_a > name_b) - (name_a < name_b)
    assert start_a is not None and start_b is not None
    return -1 if start_a < start_b else 1


# -- the controller -----------------------------------------------------------------------


class CronJobController(Controller):
    name = "cronjob"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        extra = ctx.options.extra
        self.now: Callable[[], datetime.datetime] = extra.get("clock") or m.now
        cap = extra.get("cronjob_requeue_cap")
        self.requeue_cap: float | None = None if cap is None else float(cap)
        self.cronjobs = ctx.informers.informer(CRONJOBS)
        self.jobs = ctx.informers.informer(JOBS)
        self.jobs.cache.add_indexer(JOB_INDEX, self._job_owner_key)
        self.cronjobs.add_handlers(self.enqueue, self._cronjob_updated, self.enqueue)
        self.jobs.add_handlers(self._job_added, self._job_updated, self._job_deleted)

    # -- event handlers ---------------------------------------------------------------

    @staticmethod
    def _job_owner_key(job: Obj) -> list[str]:
        ref = _pods.controller_ref(job)
        if ref is None or ref.get("kind") != "CronJob":
            return []
        return [f"{m.namespace_of(job)}/{ref.get('name', '')}"]

    def _resolve(self, namespace: str, ref: Obj | None) -> Obj | None:
        if ref is None or ref.get("kind") != "CronJob":
            return None
        cronjob = self.cronjobs.cache.get_by_name(namespace, str(ref.get("name") or ""))
        if cronjob is None or (cronjob.get("metadata") or {}).get("uid") != ref.get("uid"):
            return None
        return cronjob

    def _job_added(self, job: Obj) -> None:
        cronjob = self._resolve(m.namespace_of(job), _pods.controller_ref(job))
        if cronjob is not None:
            self.enqueue(cronjob)

    def _job_updated(self, old: Obj, new: Obj) -> None:
        if (old.get("metadata") or {}).get("resourceVersion") == \
                (new.get("metadata") or {}).get("resourceVersion"):
            return
        old_ref, new_ref = _pods.controller_ref(old), _pods.controller_ref(new)
        if old_ref != new_ref and old_ref is not None:
            previous = self._resolve(m.namespace_of(old), old_ref)
            if previous is not None:
                self.enqueue(previous)
        self._job_added(new)

    def _job_deleted(self, job: Obj) -> None:
        self._job_added(job)

    def _cronjob_updated(self, old: Obj, new: Obj) -> None:
        old_spec, new_spec = _spec(old), _spec(new)
        if (old_spec.get("schedule"), old_spec.get("timeZone")) == \
                (new_spec.get("schedule"), new_spec.get("timeZone")):
            self.enqueue(new)
            return
        # A new schedule: wake up at its next time (sooner than an earlier plan, if so).
        try:
            schedule = parse_standard(format_schedule(new)[0])
        except CronError:
            self._event_later(new, WARNING, "UnParseableCronJobSchedule",
                              f"unparseable schedule for cronjob: {new_spec.get('schedule')}")
            return
        delay = next_schedule_time_duration(new, self.now(), schedule)
        if delay is not None:
            self.queue.add_after(key_of(new), self._capped(delay))

    def _event_later(self, obj: Obj, event_type: str, reason: str, message: str) -> None:
        # Handlers are synchronous: record the event in the background.
        asyncio.get_running_loop().create_task(
            self.recorder.event(obj, event_type, reason, message))

    def _capped(self, delay: float) -> float:
        return delay if self.requeue_cap is None else min(delay, self.requeue_cap)

    # -- reconcile ------------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        namespace, name = split_key(key)
        cronjob = self.cronjobs.cache.get_by_name(namespace, name)
        if cronjob is None:
            return None
        jobs = self.jobs.cache.by_index(JOB_INDEX, key)
        copy = m.deep_copy(cronjob)
        changed = await self._cleanup_finished_jobs(copy, jobs)
        try:
            requeue, synced_changed = await self._sync(copy, jobs)
        except Exception:
            # Keep what was done (e.g. Jobs replaced) before the failure.
            if changed or self._status_changed(cronjob, copy):
                await self.client.update_status(CRONJOBS, copy)
            raise
        if changed or synced_changed:
            await self.client.update_status(CRONJOBS, copy)
        return None if requeue is None else self._capped(requeue)

    @staticmethod
    def _status_changed(before: Obj, after: Obj) -> bool:
        return (before.get("status") or {}) != (after.get("status") or {})

    async def _sync(self, cronjob: Obj, jobs: list[Obj]) -> tuple[float | None, bool]:
        """Reconcile the active list, then start the due Job. Returns (requeue after,
        status changed)."""
        now = self.now()
        changed = False
        status = _status(cronjob)
        children = set()
        for job in jobs:
            uid = (job.get("metadata") or {}).get("uid")
            children.add(uid)
            listed = self._in_active(cronjob, uid)
            finished = job_finished_type(job)
            if not listed and finished is None:
                fresh = await self.client.get(CRONJOBS, m.name_of(cronjob),
                                              m.namespace_of(cronjob))
                if self._in_active(fresh, uid):
                    cronjob.clear()
                    cronjob.update(fresh)
                    status = _status(cronjob)
                    continue
                await self.recorder.event(cronjob, WARNING, "UnexpectedJob",
                                          "Saw a job that the controller did not create or "
                                          f"forgot: {m.name_of(job)}")
            elif finished is not None:
                if listed:
                    self._remove_active(cronjob, uid)
                    await self.recorder.event(cronjob, NORMAL, "SawCompletedJob",
                                              f"Saw completed job: {m.name_of(job)}, "
                                              f"condition: {finished}")
                    changed = True
                if finished == "Complete":
                    completed = (job.get("status") or {}).get("completionTime")
                    last = _time(status.get("lastSuccessfulTime"))
                    completed_at = _time(completed)
                    if completed and (last is None or (completed_at is not None
                                                       and completed_at > last)):
                        status["lastSuccessfulTime"] = completed
                        changed = True
        for ref in list(status.get("active") or []):
            if ref.get("uid") in children:
                continue
            # The cache may lag: ask the server before forgetting an active Job.
            try:
                await self.client.get(JOBS, ref.get("name", ""), ref.get("namespace", ""))
            except StatusError as err:
                if err.code != 404:
                    raise
                await self.recorder.event(cronjob, NORMAL, "MissingJob",
                                          f"Active job went missing: {ref.get('name', '')}")
                self._remove_active(cronjob, ref.get("uid"))
                changed = True

        if (cronjob.get("metadata") or {}).get("deletionTimestamp"):
            return None, changed
        spec = _spec(cronjob)
        zone = spec.get("timeZone")
        if zone is not None:
            try:
                load_location(str(zone))
            except CronError as err:
                await self.recorder.event(cronjob, WARNING, "UnknownTimeZone",
                                          f"invalid timeZone: {go_quote(str(zone))}: {err}")
                return None, changed
        if spec.get("suspend") is True:
            return None, changed
        text, uses_tz = format_schedule(cronjob)
        if uses_tz:
            await self.recorder.event(cronjob, WARNING, "UnsupportedSchedule",
                                      UNSUPPORTED_TZ_MESSAGE.format(schedule=go_quote(text)))
        try:
            schedule = parse_standard(text)
        except CronError as err:
            await self.recorder.event(cronjob, WARNING, "UnparseableSchedule",
                                      "unparseable schedule: "
                                      f"{go_quote(str(spec.get('schedule') or ''))} : {err}")
            return None, changed
        try:
            _, scheduled, missed = most_recent_schedule_time(cronjob, now, schedule, True)
        except InvalidSchedule as err:
            await self.recorder.event(cronjob, WARNING, "InvalidSchedule",
                                      f"invalid schedule: {spec.get('schedule')} : {err}")
            return None, changed
        if scheduled is not None and missed > TOO_MANY_MISSED:
            await self.recorder.event(cronjob, WARNING, "TooManyMissedTimes",
                                      "too many missed start times. Set or decrease "
                                      ".spec.startingDeadlineSeconds or check clock skew")
        next_sync = next_schedule_time_duration(cronjob, now, schedule)
        if scheduled is None or scheduled > now:
            return next_sync, changed

        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None and scheduled + datetime.timedelta(seconds=int(deadline)) < now:
            await self.recorder.event(cronjob, WARNING, "MissSchedule",
                                      "Missed scheduled time to start a job: "
                                      f"{rfc1123z(scheduled)}")
            return next_sync, changed
        name = job_name(cronjob, scheduled)
        if any(ref.get("name") == name for ref in status.get("active") or []) or \
                _time(status.get("lastScheduleTime")) == scheduled:
            return next_sync, changed
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and status.get("active"):
            await self.recorder.event(cronjob, NORMAL, "JobAlreadyActive",
                                      "Not starting job because prior execution is running "
                                      "and concurrency policy is Forbid")
            return next_sync, changed
        if policy == "Replace":
            for ref in list(status.get("active") or []):
                try:
                    job = await self.client.get(JOBS, ref.get("name", ""),
                                                ref.get("namespace", ""))
                except StatusError as err:
                    await self.recorder.event(cronjob, WARNING, "FailedGet", f"Get job: {err}")
                    raise
                if not await self._delete_job(cronjob, job):
                    raise RuntimeError(f"could not replace job {key_of(job)}")
                changed = True

        request = job_from_template(cronjob, scheduled)
        try:
            created = await self.client.create(JOBS, request, m.namespace_of(cronjob))
        except StatusError as err:
            if any(c.type == "NamespaceTerminating" for c in err.causes):
                raise
            if err.code != 409 or err.reason != "AlreadyExists":
                await self.recorder.event(cronjob, WARNING, "FailedCreate",
                                          f"Error creating job: {err}")
                raise
            # Created earlier without the status update that should have followed.
            created = await self.client.get(JOBS, request["metadata"]["name"],
                                            m.namespace_of(cronjob))
            if not _pods.is_owned_by(created, cronjob) or \
                    self._in_active(cronjob, (created.get("metadata") or {}).get("uid")):
                return None, changed
            log.info("cronjob %s: job %s already exists", key_of(cronjob), m.name_of(created))
        else:
            await self.recorder.event(cronjob, NORMAL, "SuccessfulCreate",
                                      f"Created job {m.name_of(created)}")
        status.setdefault("active", []).append(object_reference(created))
        status["lastScheduleTime"] = m.rfc3339(scheduled)
        return next_schedule_time_duration(cronjob, now, schedule), True

    @staticmethod
    def _in_active(cronjob: Obj, uid: Any) -> bool:
        return any(ref.get("uid") == uid for ref in (cronjob.get("status") or {}).get("active")
                   or [])

    @staticmethod
    def _remove_active(cronjob: Obj, uid: Any) -> None:
        status = _status(cronjob)
        remaining = [ref for ref in status.get("active") or [] if ref.get("uid") != uid]
        if remaining:
            status["active"] = remaining
        else:
            status.pop("active", None)

    async def _delete_job(self, cronjob: Obj, job: Obj) -> bool:
        """Delete a Job (its pods follow in the background) and drop it from active."""
        try:
            await self.client.delete(JOBS, m.name_of(job), m.namespace_of(job),
                                     propagation="Background")
        except StatusError as err:
            if err.code == 404:  # already gone: nothing to report
                self._remove_active(cronjob, (job.get("metadata") or {}).get("uid"))
                return True
            await self.recorder.event(cronjob, WARNING, "FailedDelete", f"Deleted job: {err}")
            log.warning("cronjob %s: deleting job %s: %s", key_of(cronjob), m.name_of(job), err)
            return False
        self._remove_active(cronjob, (job.get("metadata") or {}).get("uid"))
        await self.recorder.event(cronjob, NORMAL, "SuccessfulDelete",
                                  f"Deleted job {m.name_of(job)}")
        return True

    async def _cleanup_finished_jobs(self, cronjob: Obj, jobs: list[Obj]) -> bool:
        """Delete the oldest finished Jobs beyond the history limits."""
        spec = _spec(cronjob)
        successful_limit = spec.get("successfulJobsHistoryLimit")
        failed_limit = spec.get("failedJobsHistoryLimit")
        if successful_limit is None and failed_limit is None:
            return False
        live = [j for j in jobs if not (j.get("metadata") or {}).get("deletionTimestamp")]
        successful = [j for j in live if job_finished_type(j) == "Complete"]
        failed = [j for j in live if job_finished_type(j) == "Failed"]
        changed = False
        for limit, finished in ((successful_limit, successful), (failed_limit, failed)):
            if limit is None or len(finished) <= int(limit):
                continue
            oldest = sorted(finished, key=functools.cmp_to_key(_by_start_time))
            for job in oldest[:len(finished) - int(limit)]:
                if await self._delete_job(cronjob, job):
                    changed = True
        return changed
