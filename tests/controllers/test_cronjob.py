"""The CronJob controller against a real API server, with a clock the tests move."""

from __future__ import annotations

import asyncio
import datetime
import functools
from pathlib import Path
from typing import Any

import pytest

from kubi.api import meta as m
from kubi.api.cron import parse_standard
from kubi.api.errors import StatusError
from kubi.client.rest import Client
from kubi.controllers.base import ControllerOptions
from kubi.controllers.cronjob import (
    SCHEDULED_TIMESTAMP_ANNOTATION,
    InvalidSchedule,
    format_schedule,
    job_name,
    most_recent_schedule_time,
    rfc1123z,
)
from kubi.controllers.manager import run_controllers
from tests.harness import api_server, eventually, running

Obj = dict[str, Any]
NS = "default"
UTC = datetime.UTC


class FakeClock:
    def __init__(self, now: datetime.datetime) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now

    def set(self, now: datetime.datetime) -> None:
        self.now = now


def options(clock: FakeClock) -> ControllerOptions:
    return ControllerOptions(extra={"clock": clock, "cronjob_requeue_cap": 0.05})


def cronjob_manifest(name: str, schedule: str = "* * * * *", **spec: Any) -> Obj:
    return {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "schedule": schedule,
            **spec,
            "jobTemplate": {
                "metadata": {"labels": {"app": name}, "annotations": {"team": "batch"}},
                "spec": {"template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "tick", "image": "busybox"}]}}},
            },
        },
    }


def next_minute(t: datetime.datetime, minutes: int = 1) -> datetime.datetime:
    """The minute boundary `minutes` after `t`'s minute."""
    return t.replace(second=0, microsecond=0) + datetime.timedelta(minutes=minutes)


async def create_cronjob(client: Client, clock: FakeClock, manifest: Obj) -> Obj:
    created = await client.create("cronjobs.batch", manifest)
    clock.set(m.parse_time(created["metadata"]["creationTimestamp"]))
    return created


async def jobs_of(client: Client, cronjob: str) -> list[Obj]:
    listed = await client.list("jobs.batch", NS)
    found = [j for j in listed["items"]
             if any(r.get("name") == cronjob for r in j["metadata"].get("ownerReferences") or [])]
    return sorted(found, key=lambda j: j["metadata"]["name"])


async def job_count(client: Client, cronjob: str, count: int) -> list[Obj] | None:
    jobs = await jobs_of(client, cronjob)
    return jobs if len(jobs) == count else None


async def job_names(client: Client, cronjob: str, names: set[str]) -> bool:
    return {j["metadata"]["name"] for j in await jobs_of(client, cronjob)} == names


async def events_for(client: Client, name: str) -> list[tuple[str, str, str]]:
    listed = await client.list("events", NS)
    return [(e["type"], e["reason"], e["message"]) for e in listed["items"]
            if e["involvedObject"]["name"] == name]


async def has_event(client: Client, name: str, reason: str) -> list[tuple[str, str, str]] | None:
    events = await events_for(client, name)
    return events if any(e[1] == reason for e in events) else None


async def finish_job(client: Client, name: str, condition: str,
                     at: datetime.datetime) -> None:
    job = await client.get("jobs.batch", name, NS)
    stamp = m.rfc3339(at)
    status: Obj = {"startTime": stamp, "conditions": [
        {"type": condition, "status": "True", "lastProbeTime": stamp,
         "lastTransitionTime": stamp}]}
    if condition == "Complete":
        status["completionTime"] = stamp
        status["succeeded"] = 1
    else:
        status["failed"] = 1
    job["status"] = status
    await client.update_status("jobs.batch", job)


async def active_names(client: Client, name: str) -> set[str]:
    cronjob = await client.get("cronjobs.batch", name, NS)
    return {ref["name"] for ref in (cronjob.get("status") or {}).get("active") or []}


def test_creates_the_job_at_the_scheduled_minute(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock(m.now())
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, options(clock), only={"cronjob"})):
            cronjob = await create_cronjob(client, clock, cronjob_manifest("tick"))
            await asyncio.sleep(0.3)
            assert await jobs_of(client, "tick") == []  # nothing due yet

            due = next_minute(clock())
            clock.set(due + datetime.timedelta(seconds=5))
            jobs = await eventually(lambda: job_count(client, "tick", 1), timeout=20)
            job = jobs[0]
            meta = job["metadata"]
            assert meta["name"] == f"tick-{int(due.timestamp()) // 60}"
            assert meta["labels"] == {"app": "tick"}
            assert meta["annotations"] == {
                "team": "batch",
                SCHEDULED_TIMESTAMP_ANNOTATION: due.strftime("%Y-%m-%dT%H:%M:%SZ")}
            assert meta["ownerReferences"] == [{
                "apiVersion": "batch/v1", "kind": "CronJob", "name": "tick",
                "uid": cronjob["metadata"]["uid"], "controller": True,
                "blockOwnerDeletion": True}]
            assert job["spec"]["template"]["spec"]["containers"][0]["name"] == "tick"

            async def recorded() -> Obj | None:
                found = await client.get("cronjobs.batch", "tick", NS)
                return found if (found.get("status") or {}).get("active") else None

            found = await eventually(recorded, timeout=20)
            assert found["status"]["lastScheduleTime"] == m.rfc3339(due)
            assert found["status"]["active"] == [{
                "kind": "Job", "namespace": NS, "name": meta["name"], "uid": meta["uid"],
                "apiVersion": "batch/v1", "resourceVersion": meta["resourceVersion"]}]
            events = await eventually(lambda: has_event(client, "tick", "SuccessfulCreate"),
                                      timeout=10)
            assert ("Normal", "SuccessfulCreate", f"Created job {meta['name']}") in events

            # Later the same minute: no second job. The next minute: the next one.
            clock.set(due + datetime.timedelta(seconds=50))
            await asyncio.sleep(0.3)
            assert len(await jobs_of(client, "tick")) == 1
            clock.set(next_minute(due) + datetime.timedelta(seconds=1))
            await eventually(lambda: job_count(client, "tick", 2), timeout=20)

    asyncio.run(scenario())


def test_forbid_skips_while_a_job_is_active(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock(m.now())
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, options(clock), only={"cronjob"})):
            await create_cronjob(client, clock, cronjob_manifest(
                "solo", concurrencyPolicy="Forbid"))
            first = next_minute(clock())
            clock.set(first + datetime.timedelta(seconds=1))
            jobs = await eventually(lambda: job_count(client, "solo", 1), timeout=20)
            await eventually(lambda: _active_is(client, "solo", {jobs[0]["metadata"]["name"]}),
                             timeout=20)

            clock.set(next_minute(first) + datetime.timedelta(seconds=1))
            events = await eventually(lambda: has_event(client, "solo", "JobAlreadyActive"),
                                      timeout=20)
            assert ("Normal", "JobAlreadyActive", "Not starting job because prior execution is "
                    "running and concurrency policy is Forbid") in events
            assert len(await jobs_of(client, "solo")) == 1

            # Once it finishes, the skipped time (still the latest, no deadline) starts.
            await finish_job(client, jobs[0]["metadata"]["name"], "Complete",
                             first + datetime.timedelta(seconds=30))
            second = f"solo-{int(next_minute(first).timestamp()) // 60}"
            await eventually(lambda: job_names(client, "solo", {
                jobs[0]["metadata"]["name"], second}), timeout=20)
            await eventually(lambda: _active_is(client, "solo", {second}), timeout=20)
            events = await eventually(lambda: has_event(client, "solo", "SawCompletedJob"),
                                      timeout=10)
            assert ("Normal", "SawCompletedJob",
                    f"Saw completed job: {jobs[0]['metadata']['name']}, condition: Complete") \
                in events
            cronjob = await client.get("cronjobs.batch", "solo", NS)
            assert cronjob["status"]["lastSuccessfulTime"] == m.rfc3339(
                first + datetime.timedelta(seconds=30))

    asyncio.run(scenario())


async def _active_is(client: Client, name: str, expected: set[str]) -> bool:
    return await active_names(client, name) == expected


def test_replace_deletes_the_running_job(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock(m.now())
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, options(clock), only={"cronjob"})):
            await create_cronjob(client, clock, cronjob_manifest(
                "swap", concurrencyPolicy="Replace"))
            first = next_minute(clock())
            clock.set(first + datetime.timedelta(seconds=1))
            old = (await eventually(lambda: job_count(client, "swap", 1), timeout=20))[0]
            await eventually(lambda: _active_is(client, "swap", {old["metadata"]["name"]}),
                             timeout=20)
            second = next_minute(first)
            clock.set(second + datetime.timedelta(seconds=1))
            new_name = f"swap-{int(second.timestamp()) // 60}"
            await eventually(lambda: job_names(client, "swap", {new_name}), timeout=20)
            await eventually(lambda: _active_is(client, "swap", {new_name}), timeout=20)
            events = await eventually(lambda: has_event(client, "swap", "SuccessfulDelete"),
                                      timeout=10)
            assert ("Normal", "SuccessfulDelete", f"Deleted job {old['metadata']['name']}") \
                in events

    asyncio.run(scenario())


def test_allow_runs_jobs_side_by_side(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock(m.now())
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, options(clock), only={"cronjob"})):
            await create_cronjob(client, clock, cronjob_manifest("many"))
            first = next_minute(clock())
            clock.set(first + datetime.timedelta(seconds=1))
            await eventually(lambda: job_count(client, "many", 1), timeout=20)
            clock.set(next_minute(first) + datetime.timedelta(seconds=1))
            jobs = await eventually(lambda: job_count(client, "many", 2), timeout=20)
            names = {j["metadata"]["name"] for j in jobs}
            await eventually(lambda: _active_is(client, "many", names), timeout=20)

    asyncio.run(scenario())


def test_history_limits_keep_the_newest_finished_jobs(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock(m.now())
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, options(clock), only={"cronjob"})):
            await create_cronjob(client, clock, cronjob_manifest(
                "trim", successfulJobsHistoryLimit=1, failedJobsHistoryLimit=1))
            start = next_minute(clock())
            made: list[str] = []
            for minute, outcome in enumerate(("Complete", "Complete", "Failed", "Failed")):
                tick = next_minute(start, minute)
                clock.set(tick + datetime.timedelta(seconds=1))
                name = f"trim-{int(tick.timestamp()) // 60}"
                await eventually(functools.partial(_job_exists, client, name), timeout=20)
                await finish_job(client, name, outcome, tick + datetime.timedelta(seconds=2))
                made.append(name)
            # The oldest of each kind went; the newest of each stays.
            await eventually(lambda: job_names(client, "trim", {made[1], made[3]}), timeout=20)
            # Events are recorded asynchronously, after the deletion itself.
            wanted = {f"Deleted job {made[0]}", f"Deleted job {made[2]}"}

            async def deletions() -> set[str] | None:
                events = await events_for(client, "trim")
                deleted = {e[2] for e in events if e[1] == "SuccessfulDelete"}
                return deleted if deleted >= wanted else None

            assert await eventually(deletions, timeout=20) == wanted

    asyncio.run(scenario())


async def _job_exists(client: Client, name: str) -> bool:
    try:
        await client.get("jobs.batch", name, NS)
    except StatusError as err:
        if err.code == 404:
            return False
        raise
    return True


def test_suspended_cronjob_starts_nothing_until_resumed(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock(m.now())
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, options(clock), only={"cronjob"})):
            await create_cronjob(client, clock, cronjob_manifest("nap", suspend=True))
            due = next_minute(clock())
            clock.set(due + datetime.timedelta(seconds=1))
            await asyncio.sleep(0.5)
            assert await jobs_of(client, "nap") == []
            await client.patch("cronjobs.batch", "nap", {"spec": {"suspend": False}}, NS)
            # Resumed within the minute: that minute's job starts.
            jobs = await eventually(lambda: job_count(client, "nap", 1), timeout=20)
            assert jobs[0]["metadata"]["name"] == f"nap-{int(due.timestamp()) // 60}"

    asyncio.run(scenario())


def test_starting_deadline_skips_late_starts(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock(m.now())
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, options(clock), only={"cronjob"})):
            await create_cronjob(client, clock, cronjob_manifest(
                "strict", startingDeadlineSeconds=10))
            due = next_minute(clock())
            clock.set(due + datetime.timedelta(seconds=30))  # too late for this minute
            await asyncio.sleep(0.5)
            assert await jobs_of(client, "strict") == []
            following = next_minute(due)
            clock.set(following + datetime.timedelta(seconds=5))
            jobs = await eventually(lambda: job_count(client, "strict", 1), timeout=20)
            assert jobs[0]["metadata"]["name"] == f"strict-{int(following.timestamp()) // 60}"

    asyncio.run(scenario())


def test_too_many_missed_start_times_warns_and_runs_the_latest(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock(m.now())
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, options(clock), only={"cronjob"})):
            await create_cronjob(client, clock, cronjob_manifest("late"))
            latest = next_minute(clock(), 150)
            clock.set(latest + datetime.timedelta(seconds=3))
            jobs = await eventually(lambda: job_count(client, "late", 1), timeout=20)
            assert jobs[0]["metadata"]["name"] == f"late-{int(latest.timestamp()) // 60}"
            events = await eventually(lambda: has_event(client, "late", "TooManyMissedTimes"),
                                      timeout=10)
            assert ("Warning", "TooManyMissedTimes", "too many missed start times. Set or "
                    "decrease .spec.startingDeadlineSeconds or check clock skew") in events

    asyncio.run(scenario())


def test_time_zone_is_respected(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock(m.now())
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, options(clock), only={"cronjob"})):
            created = await create_cronjob(client, clock, cronjob_manifest(
                "tokyo", "0 9 * * *", timeZone="Asia/Tokyo"))
            created_at = m.parse_time(created["metadata"]["creationTimestamp"])
            # 09:00 in Tokyo is 00:00 UTC: the first midnight UTC after creation.
            due = (created_at + datetime.timedelta(days=1)).replace(
                hour=0, minute=0, second=0, microsecond=0)
            clock.set(due - datetime.timedelta(minutes=1))
            await asyncio.sleep(0.3)
            assert await jobs_of(client, "tokyo") == []
            clock.set(due + datetime.timedelta(seconds=2))
            jobs = await eventually(lambda: job_count(client, "tokyo", 1), timeout=20)
            annotations = jobs[0]["metadata"]["annotations"]
            assert annotations[SCHEDULED_TIMESTAMP_ANNOTATION] == \
                f"{(due + datetime.timedelta(hours=9)):%Y-%m-%d}T09:00:00+09:00"

    asyncio.run(scenario())


def test_schedule_that_never_fires_is_reported(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock(m.now())
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, options(clock), only={"cronjob"})):
            await create_cronjob(client, clock, cronjob_manifest("never", "0 0 30 2 *"))
            clock.set(clock() + datetime.timedelta(days=400))
            events = await eventually(lambda: has_event(client, "never", "InvalidSchedule"),
                                      timeout=20)
            assert ("Warning", "InvalidSchedule", "invalid schedule: 0 0 30 2 * : time "
                    "difference between two schedules is less than 1 second") in events
            assert await jobs_of(client, "never") == []

    asyncio.run(scenario())


@pytest.mark.parametrize(("schedule", "extra", "message"), [
    ("61 * * * *", {}, "end of range (61) above maximum (59): 61"),
    ("* * *", {}, "expected exactly 5 fields, found 3: [* * *]"),
    ("TZ=UTC * * * * *", {}, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"),
    ("* * * * *", {"timeZone": "Nowhere/Land"}, "unknown time zone Nowhere/Land"),
])
def test_invalid_cronjobs_are_rejected(tmp_path: Path, schedule: str, extra: Obj,
                                       message: str) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            with pytest.raises(StatusError) as caught:
                await client.create("cronjobs.batch", cronjob_manifest("bad", schedule, **extra))
            assert caught.value.code == 422
            assert any(message in c.message for c in caught.value.causes)
            listed = await client.list("cronjobs.batch", NS)
            assert listed["items"] == []

    asyncio.run(scenario())


def test_create_job_from_cronjob_like_kubectl(tmp_path: Path) -> None:
    """`kubectl create job NAME --from=cronjob/CJ` is client-side: GET the CronJob and
    POST a Job built from its template, owned by the CronJob."""

    async def scenario() -> None:
        clock = FakeClock(m.now())
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, options(clock), only={"cronjob"})):
            await create_cronjob(client, clock, cronjob_manifest("nightly", "0 3 * * *"))
            cronjob = await client.get("cronjobs.batch", "nightly", NS)
            template = cronjob["spec"]["jobTemplate"]
            annotations = {"cronjob.kubernetes.io/instantiate": "manual",
                           **template["metadata"].get("annotations", {})}
            job = await client.create("jobs.batch", {
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "nightly-manual", "namespace": NS,
                             "annotations": annotations,
                             "labels": template["metadata"].get("labels", {}),
                             "ownerReferences": [{
                                 "apiVersion": "batch/v1", "kind": "CronJob",
                                 "name": "nightly", "uid": cronjob["metadata"]["uid"],
                                 "controller": True}]},
                "spec": template["spec"]})
            assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == \
                "manual"
            assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"
            # The controller did not create it: it warns and leaves it out of active.
            events = await eventually(lambda: has_event(client, "nightly", "UnexpectedJob"),
                                      timeout=20)
            assert ("Warning", "UnexpectedJob", "Saw a job that the controller did not create "
                    "or forgot: nightly-manual") in events
            assert await active_names(client, "nightly") == set()
            assert [j["metadata"]["name"] for j in await jobs_of(client, "nightly")] == [
                "nightly-manual"]

    asyncio.run(scenario())


# -- schedule arithmetic ------------------------------------------------------------------------


def _cronjob_at(created: datetime.datetime, last: datetime.datetime | None = None,
                **spec: Any) -> Obj:
    status = {"lastScheduleTime": m.rfc3339(last)} if last else {}
    return {"metadata": {"name": "cj", "namespace": NS, "creationTimestamp": m.rfc3339(created)},
            "spec": spec, "status": status}


def test_most_recent_schedule_time_on_uneven_schedules() -> None:
    schedule = parse_standard("30 6-16/4 * * 1-5")  # 06:30, 10:30, 14:30 on weekdays
    created = datetime.datetime(2024, 3, 4, 0, 0, tzinfo=UTC)  # a Monday
    now = datetime.datetime(2024, 3, 7, 12, 0, tzinfo=UTC)  # Thursday noon
    _, recent, missed = most_recent_schedule_time(_cronjob_at(created), now, schedule, True)
    assert recent == datetime.datetime(2024, 3, 7, 10, 30, tzinfo=UTC)
    assert missed > 1
    # Nothing due yet.
    early = datetime.datetime(2024, 3, 4, 6, 0, tzinfo=UTC)
    assert most_recent_schedule_time(_cronjob_at(created), early, schedule, True)[1] is None
    # The last schedule time is the starting point, once set.
    last = datetime.datetime(2024, 3, 7, 10, 30, tzinfo=UTC)
    assert most_recent_schedule_time(_cronjob_at(created, last), now, schedule, True)[1] is None
    # startingDeadlineSeconds hides times older than the deadline.
    cj = _cronjob_at(created, startingDeadlineSeconds=600)
    assert most_recent_schedule_time(cj, now, schedule, True)[1] is None
    assert most_recent_schedule_time(cj, now, schedule, False)[1] == last


def test_impossible_schedule_is_invalid() -> None:
    created = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidSchedule):
        most_recent_schedule_time(_cronjob_at(created), created + datetime.timedelta(days=3),
                                  parse_standard("0 0 30 2 *"), True)


def test_names_and_formats() -> None:
    scheduled = datetime.datetime(2024, 3, 9, 12, 15, tzinfo=UTC)
    assert job_name({"metadata": {"name": "cj"}}, scheduled) == "cj-28499775"
    assert rfc1123z(scheduled) == "Sat, 09 Mar 2024 12:15:00 +0000"
    assert format_schedule({"spec": {"schedule": "0 * * * *", "timeZone": "Europe/Paris"}}) == \
        ("TZ=Europe/Paris 0 * * * *", False)
    assert format_schedule({"spec": {"schedule": "CRON_TZ=UTC 0 * * * *"}}) == \
        ("CRON_TZ=UTC 0 * * * *", True)
    # An unknown zone is left out here; the sync reports it as UnknownTimeZone.
    assert format_schedule({"spec": {"schedule": "0 * * * *", "timeZone": "No/Where"}}) == \
        ("0 * * * *", False)


def test_scheduled_job_runs_to_completion_with_the_job_controller(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock(m.now())
        extra = {**options(clock).extra, "job_sync_batch_period": 0.01}
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, ControllerOptions(extra=extra),
                                only={"cronjob", "job"})):
            await create_cronjob(client, clock, cronjob_manifest("daily"))
            clock.set(next_minute(clock()) + datetime.timedelta(seconds=1))
            job = (await eventually(lambda: job_count(client, "daily", 1), timeout=20))[0]
            name = job["metadata"]["name"]

            async def pod_of_job() -> Obj | None:
                listed = await client.list("pods", NS,
                                           label_selector=f"batch.kubernetes.io/job-name={name}")
                return listed["items"][0] if listed["items"] else None

            pod = await eventually(pod_of_job, timeout=20)
            assert pod["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
            pod["status"] = {"phase": "Succeeded"}
            await client.update_status("pods", pod)
            await eventually(lambda: _active_is(client, "daily", set()), timeout=20)

            async def last_success() -> str | None:
                found = await client.get("cronjobs.batch", "daily", NS)
                return (found.get("status") or {}).get("lastSuccessfulTime")

            finished = await client.get("jobs.batch", name, NS)
            assert await eventually(last_success, timeout=20) == \
                finished["status"]["completionTime"]

    asyncio.run(scenario())
