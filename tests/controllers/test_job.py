"""The Job and TTL-after-finished controllers against a real API server; the tests
move pods along themselves by writing pod status."""

from __future__ import annotations

import asyncio
import datetime
import functools
from pathlib import Path
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.client.rest import Client
from kubi.controllers.base import ControllerOptions
from kubi.controllers.job import (
    COMPLETION_INDEX_KEY,
    JOB_TRACKING_FINALIZER,
    BackoffRecord,
    format_indexes,
    next_backoff_record,
    parse_indexes,
    pod_generate_name_with_index,
)
from kubi.controllers.manager import run_controllers
from tests.harness import api_server, eventually, running

Obj = dict[str, Any]
NS = "default"
FAST = ControllerOptions(extra={"job_backoff_base": 0.05, "job_sync_batch_period": 0.01})


def job_manifest(name: str, **spec: Any) -> Obj:
    restart = spec.pop("restartPolicy", "Never")
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            **spec,
            "template": {"spec": {"restartPolicy": restart,
                                  "containers": [{"name": "work", "image": "busybox"}]}},
        },
    }


async def pods_of(client: Client, job: str) -> list[Obj]:
    listed = await client.list("pods", NS, label_selector=f"batch.kubernetes.io/job-name={job}")
    return sorted(listed["items"], key=lambda p: p["metadata"]["name"])


def running_pods(pods: list[Obj]) -> list[Obj]:
    return [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            and not p["metadata"].get("deletionTimestamp")]


async def set_phase(client: Client, pod: Obj, phase: str, restarts: int = 0) -> None:
    pod = await client.get("pods", pod["metadata"]["name"], NS)
    stamp = m.rfc3339(m.now())
    state: Obj = {"running": {"startedAt": stamp}} if phase == "Running" else {
        "terminated": {"exitCode": 0 if phase == "Succeeded" else 1, "startedAt": stamp,
                       "finishedAt": stamp, "reason": "Completed" if phase == "Succeeded"
                       else "Error"}}
    pod["status"] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if phase == "Running" else "False",
                        "lastTransitionTime": stamp}],
        "containerStatuses": [{"name": "work", "image": "busybox", "imageID": "",
                               "ready": phase == "Running", "restartCount": restarts,
                               "state": state}],
    }
    await client.update_status("pods", pod)


async def job_condition(client: Client, name: str, condition_type: str) -> Obj | None:
    job = await client.get("jobs.batch", name, NS)
    for condition in job.get("status", {}).get("conditions") or []:
        if condition["type"] == condition_type and condition["status"] == "True":
            return job
    return None


async def events_for(client: Client, name: str) -> list[tuple[str, str, str]]:
    listed = await client.list("events", NS)
    return [(e["type"], e["reason"], e["message"]) for e in listed["items"]
            if e["involvedObject"]["name"] == name]


def conditions_of(job: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in job["status"].get("conditions") or []}


def test_job_completes_with_bounded_parallelism(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, FAST, only={"job"})):
            created = await client.create("jobs.batch", job_manifest(
                "calc", completions=3, parallelism=2))
            finished = 0
            while finished < 3:
                pods = await eventually(lambda: _some_running(client, "calc"), timeout=20)
                assert len(running_pods(pods)) <= 2
                await set_phase(client, running_pods(pods)[0], "Succeeded")
                finished += 1
                await eventually(functools.partial(_counted, client, "calc", finished), timeout=20)
                assert len(running_pods(await pods_of(client, "calc"))) <= 2

            job = await eventually(lambda: job_condition(client, "calc", "Complete"), timeout=20)
            status = job["status"]
            assert status["succeeded"] == 3 and "failed" not in status
            assert "active" not in status and status["ready"] == 0 and status["terminating"] == 0
            assert status["uncountedTerminatedPods"] == {}
            assert status["startTime"] <= status["completionTime"]
            conditions = conditions_of(job)
            for kind in ("SuccessCriteriaMet", "Complete"):
                assert conditions[kind]["reason"] == "CompletionsReached"
                assert conditions[kind]["message"] == "Reached expected number of succeeded pods"
            assert status["completionTime"] == conditions["Complete"]["lastTransitionTime"]

            pods = await pods_of(client, "calc")
            assert len(pods) == 3
            for pod in pods:
                meta = pod["metadata"]
                assert meta["generateName"] == "calc-"
                assert JOB_TRACKING_FINALIZER not in (meta.get("finalizers") or [])
                assert meta["ownerReferences"] == [{
                    "apiVersion": "batch/v1", "kind": "Job", "name": "calc",
                    "uid": created["metadata"]["uid"], "controller": True,
                    "blockOwnerDeletion": True}]
            events = await eventually(lambda: _has_event(client, "calc", "Completed"), timeout=10)
            created_events = [e for e in events if e[1] == "SuccessfulCreate"]
            assert {e[2] for e in created_events} == {
                f"Created pod: {p['metadata']['name']}" for p in pods}
            assert ("Normal", "Completed", "Job completed") in events

    asyncio.run(scenario())


async def _some_running(client: Client, job: str) -> list[Obj] | None:
    pods = await pods_of(client, job)
    return pods if running_pods(pods) else None


async def _counted(client: Client, job: str, succeeded: int) -> bool:
    status = (await client.get("jobs.batch", job, NS)).get("status") or {}
    return int(status.get("succeeded") or 0) == succeeded


async def _has_event(client: Client, name: str, reason: str) -> list[tuple[str, str, str]] | None:
    events = await events_for(client, name)
    return events if any(e[1] == reason for e in events) else None


def test_new_pods_carry_the_tracking_finalizer_until_counted(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, FAST, only={"job"})):
            await client.create("jobs.batch", job_manifest("tracked"))
            pods = await eventually(lambda: _some_running(client, "tracked"), timeout=20)
            assert pods[0]["metadata"]["finalizers"] == [JOB_TRACKING_FINALIZER]
            await set_phase(client, pods[0], "Succeeded")
            await eventually(lambda: job_condition(client, "tracked", "Complete"), timeout=20)
            pod = await client.get("pods", pods[0]["metadata"]["name"], NS)
            assert not pod["metadata"].get("finalizers")
            job = await client.get("jobs.batch", "tracked", NS)
            assert job["status"]["succeeded"] == 1

    asyncio.run(scenario())


def test_work_queue_job_completes_when_one_succeeds_and_others_finish(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, FAST, only={"job"})):
            await client.create("jobs.batch", job_manifest("queue", parallelism=2))
            pods = await eventually(lambda: _count_running(client, "queue", 2), timeout=20)
            await set_phase(client, pods[0], "Succeeded")
            await eventually(lambda: _counted(client, "queue", 1), timeout=20)
            # After one success, no replacement pods: the other keeps running.
            job = await client.get("jobs.batch", "queue", NS)
            assert job["status"]["active"] == 1 and "Complete" not in conditions_of(job)
            assert len(await pods_of(client, "queue")) == 2
            await set_phase(client, pods[1], "Succeeded")
            job = await eventually(lambda: job_condition(client, "queue", "Complete"), timeout=20)
            assert job["status"]["succeeded"] == 2
            assert job["spec"].get("completions") is None

    asyncio.run(scenario())


async def _count_running(client: Client, job: str, count: int) -> list[Obj] | None:
    pods = running_pods(await pods_of(client, job))
    return pods if len(pods) == count else None


def test_failed_pods_are_retried_until_the_backoff_limit(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, FAST, only={"job"})):
            await client.create("jobs.batch", job_manifest("flaky", backoffLimit=2))
            seen: set[str] = set()
            for attempt in range(3):
                pods = await eventually(lambda: _some_running(client, "flaky"), timeout=20)
                assert len(running_pods(pods)) == 1
                pod = running_pods(pods)[0]
                assert pod["metadata"]["name"] not in seen
                seen.add(pod["metadata"]["name"])
                await set_phase(client, pod, "Failed")
                if attempt < 2:
                    await eventually(functools.partial(_failed_is, client, "flaky", attempt + 1),
                                     timeout=20)
            job = await eventually(lambda: job_condition(client, "flaky", "Failed"), timeout=20)
            assert job["status"]["failed"] == 3 and "active" not in job["status"]
            conditions = conditions_of(job)
            for kind in ("FailureTarget", "Failed"):
                assert conditions[kind]["reason"] == "BackoffLimitExceeded"
                assert conditions[kind]["message"] == "Job has reached the specified backoff limit"
            assert "Complete" not in conditions and "completionTime" not in job["status"]
            assert len(await pods_of(client, "flaky")) == 3  # no fourth attempt
            events = await eventually(
                lambda: _has_event(client, "flaky", "BackoffLimitExceeded"), timeout=10)
            assert ("Warning", "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit") in events

    asyncio.run(scenario())


async def _failed_is(client: Client, job: str, failed: int) -> bool:
    status = (await client.get("jobs.batch", job, NS)).get("status") or {}
    return int(status.get("failed") or 0) == failed


def test_on_failure_restarts_count_against_the_backoff_limit(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, FAST, only={"job"})):
            await client.create("jobs.batch", job_manifest(
                "restarts", backoffLimit=2, restartPolicy="OnFailure"))
            pods = await eventually(lambda: _some_running(client, "restarts"), timeout=20)
            await set_phase(client, pods[0], "Running", restarts=1)
            await asyncio.sleep(0.3)
            assert await job_condition(client, "restarts", "FailureTarget") is None
            await set_phase(client, pods[0], "Running", restarts=2)
            job = await eventually(lambda: job_condition(client, "restarts", "Failed"),
                                   timeout=20)
            assert conditions_of(job)["Failed"]["reason"] == "BackoffLimitExceeded"
            # The still-running pod was deleted and counted as failed once.
            assert job["status"]["failed"] == 1 and "active" not in job["status"]
            assert await pods_of(client, "restarts") == []

    asyncio.run(scenario())


def test_indexed_job_runs_each_index_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, FAST, only={"job"})):
            await client.create("jobs.batch", job_manifest(
                "idx", completions=3, parallelism=3, completionMode="Indexed"))
            pods = await eventually(lambda: _count_running(client, "idx", 3), timeout=20)
            by_index: dict[int, Obj] = {}
            for pod in pods:
                meta = pod["metadata"]
                index = int(meta["annotations"][COMPLETION_INDEX_KEY])
                assert meta["labels"][COMPLETION_INDEX_KEY] == str(index)
                assert meta["generateName"] == f"idx-{index}-"
                assert pod["spec"]["hostname"] == f"idx-{index}"
                assert pod["spec"]["containers"][0]["env"] == [{
                    "name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                        "apiVersion": "v1",
                        "fieldPath": f"metadata.annotations['{COMPLETION_INDEX_KEY}']"}}}]
                by_index[index] = pod
            assert sorted(by_index) == [0, 1, 2]

            await set_phase(client, by_index[1], "Succeeded")
            await eventually(lambda: _completed_indexes(client, "idx", "1"), timeout=20)
            # A failed index is retried under the same index.
            await set_phase(client, by_index[0], "Failed")
            replacement = await eventually(lambda: _new_pod_for_index(client, by_index[0]),
                                           timeout=20)
            await set_phase(client, replacement, "Succeeded")
            await eventually(lambda: _completed_indexes(client, "idx", "0,1"), timeout=20)
            await set_phase(client, by_index[2], "Succeeded")
            job = await eventually(lambda: job_condition(client, "idx", "Complete"), timeout=20)
            assert job["status"]["completedIndexes"] == "0-2"
            assert job["status"]["succeeded"] == 3 and job["status"]["failed"] == 1

    asyncio.run(scenario())


async def _completed_indexes(client: Client, job: str, expected: str) -> bool:
    status = (await client.get("jobs.batch", job, NS)).get("status") or {}
    return status.get("completedIndexes") == expected


async def _new_pod_for_index(client: Client, old: Obj) -> Obj | None:
    index = old["metadata"]["annotations"][COMPLETION_INDEX_KEY]
    for pod in running_pods(await pods_of(client, "idx")):
        if pod["metadata"]["annotations"][COMPLETION_INDEX_KEY] == index and \
                pod["metadata"]["name"] != old["metadata"]["name"]:
            return pod
    return None


def test_active_deadline_fails_the_job_and_deletes_its_pods(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, FAST, only={"job"})):
            await client.create("jobs.batch", job_manifest(
                "slow", parallelism=2, completions=4, activeDeadlineSeconds=3))
            pods = await eventually(lambda: _count_running(client, "slow", 2), timeout=20)
            await set_phase(client, pods[0], "Running")
            job = await eventually(lambda: job_condition(client, "slow", "Failed"), timeout=20)
            conditions = conditions_of(job)
            assert conditions["Failed"]["reason"] == "DeadlineExceeded"
            assert conditions["Failed"]["message"] == \
                "Job was active longer than specified deadline"
            assert conditions["FailureTarget"]["reason"] == "DeadlineExceeded"
            assert job["status"]["failed"] == 2 and "active" not in job["status"]
            assert job["status"]["ready"] == 0 and job["status"]["terminating"] == 0
            assert await pods_of(client, "slow") == []

    asyncio.run(scenario())


def test_suspend_and_resume(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, FAST, only={"job"})):
            await client.create("jobs.batch", job_manifest(
                "paused", parallelism=2, completions=2, suspend=True))
            job = await eventually(lambda: job_condition(client, "paused", "Suspended"),
                                   timeout=20)
            suspended = conditions_of(job)["Suspended"]
            assert (suspended["reason"], suspended["message"]) == ("JobSuspended",
                                                                   "Job suspended")
            assert "startTime" not in job["status"]
            assert await pods_of(client, "paused") == []

            await client.patch("jobs.batch", "paused", {"spec": {"suspend": False}}, NS)
            await eventually(lambda: _count_running(client, "paused", 2), timeout=20)
            job = await eventually(lambda: _suspended_is(client, "paused", "False"), timeout=20)
            resumed = conditions_of(job)["Suspended"]
            assert (resumed["reason"], resumed["message"]) == ("JobResumed", "Job resumed")
            assert job["status"]["startTime"]

            await client.patch("jobs.batch", "paused", {"spec": {"suspend": True}}, NS)
            await eventually(lambda: _suspended_is(client, "paused", "True"), timeout=20)
            await eventually(lambda: _no_pods(client, "paused"), timeout=20)
            job = await client.get("jobs.batch", "paused", NS)
            # Pods removed by suspension are not failures.
            assert "active" not in job["status"] and "failed" not in job["status"]
            # Events are recorded asynchronously.
            for reason in ("Suspended", "Resumed", "SuccessfulDelete"):
                await eventually(functools.partial(_has_event, client, "paused", reason),
                                 timeout=20)

    asyncio.run(scenario())


async def _suspended_is(client: Client, job: str, status: str) -> Obj | None:
    found = await client.get("jobs.batch", job, NS)
    condition = conditions_of(found).get("Suspended")
    return found if condition is not None and condition["status"] == status else None


async def _no_pods(client: Client, job: str) -> bool:
    return await pods_of(client, job) == []


def test_ttl_after_finished_deletes_the_job(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, FAST, only={"job", "ttl-after-finished"})):
            await client.create("jobs.batch", job_manifest("brief", ttlSecondsAfterFinished=0))
            await client.create("jobs.batch", job_manifest("kept"))
            for name in ("brief", "kept"):
                pods = await eventually(functools.partial(_some_running, client, name), timeout=20)
                await set_phase(client, pods[0], "Succeeded")
            await eventually(lambda: job_condition(client, "kept", "Complete"), timeout=20)
            await eventually(lambda: _being_deleted(client, "brief"), timeout=20)
            kept = await client.get("jobs.batch", "kept", NS)
            assert not kept["metadata"].get("deletionTimestamp")

    asyncio.run(scenario())


async def _being_deleted(client: Client, name: str) -> bool:
    try:
        job = await client.get("jobs.batch", name, NS)
    except StatusError as err:
        return err.code == 404
    # Foreground deletion waits for the garbage collector to remove the pods.
    return bool(job["metadata"].get("deletionTimestamp")) and \
        "foregroundDeletion" in job["metadata"].get("finalizers", [])


def test_orphan_pod_loses_the_tracking_finalizer(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, FAST, only={"job"})):
            await client.create("pods", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "stray", "namespace": NS,
                             "finalizers": [JOB_TRACKING_FINALIZER, "example.com/keep"]},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
            await eventually(lambda: _finalizers_are(client, "stray", ["example.com/keep"]),
                             timeout=20)

    asyncio.run(scenario())


async def _finalizers_are(client: Client, name: str, expected: list[str]) -> bool:
    pod = await client.get("pods", name, NS)
    return bool(pod["metadata"].get("finalizers") == expected)


def test_invalid_job_is_rejected_and_creates_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, FAST, only={"job"})):
            bad = job_manifest("bad", completionMode="Sometimes")
            try:
                await client.create("jobs.batch", bad)
            except StatusError as err:
                assert err.code == 422
                assert any(c.field == "spec.completionMode" for c in err.causes)
            else:
                raise AssertionError("an unknown completionMode was accepted")
            await client.create("jobs.batch", job_manifest("good"))
            await eventually(lambda: _some_running(client, "good"), timeout=20)
            assert await pods_of(client, "bad") == []

    asyncio.run(scenario())


def test_job_managed_by_another_controller_is_left_alone(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, FAST, only={"job"})):
            created = await client.create("jobs.batch", job_manifest(
                "external", managedBy="example.com/batch-runner"))
            assert created["spec"]["managedBy"] == "example.com/batch-runner"
            await client.create("jobs.batch", job_manifest("internal"))
            await eventually(lambda: _some_running(client, "internal"), timeout=20)
            await asyncio.sleep(0.2)
            assert await pods_of(client, "external") == []
            job = await client.get("jobs.batch", "external", NS)
            assert not (job.get("status") or {}).get("startTime")

    asyncio.run(scenario())


# -- pure helpers ---------------------------------------------------------------------------


def test_completed_indexes_round_trip() -> None:
    assert format_indexes(set()) == ""
    assert format_indexes({0}) == "0"
    assert format_indexes({1, 2}) == "1,2"
    assert format_indexes({0, 1, 2, 5, 7, 8, 9}) == "0-2,5,7-9"
    assert parse_indexes("0-2,5,7-9", 10) == {0, 1, 2, 5, 7, 8, 9}
    assert parse_indexes("1,2", 10) == {1, 2}
    # Out-of-range indexes are cut at completions; malformed parts are ignored.
    assert parse_indexes("3-12", 5) == {3, 4}
    assert parse_indexes("x,1,-3,2-,4", 5) == {1, 4}
    assert parse_indexes(None, 3) == set()


def test_indexed_generate_name_is_truncated_keeping_the_index() -> None:
    assert pod_generate_name_with_index("job", 7) == "job-7-"
    long = "a" * 60
    name = pod_generate_name_with_index(long, 12)
    assert name.endswith("-12-") and len(name) == 58


def test_backoff_doubles_from_the_base_and_is_capped() -> None:
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    assert BackoffRecord().remaining(start, 10, 600) == 0
    assert BackoffRecord(1, start).remaining(start, 10, 600) == 10
    assert BackoffRecord(3, start).remaining(start, 10, 600) == 40
    assert BackoffRecord(20, start).remaining(start, 10, 600) == 600
    later = start + datetime.timedelta(seconds=15)
    assert BackoffRecord(2, start).remaining(later, 10, 600) == 5
    assert BackoffRecord(1, start).remaining(later, 10, 600) == 0


def test_backoff_record_resets_after_a_success() -> None:
    def pod(phase: str, finished: datetime.datetime) -> Obj:
        return {"metadata": {"creationTimestamp": m.rfc3339(finished)},
                "status": {"phase": phase, "containerStatuses": [{"state": {"terminated": {
                    "finishedAt": m.rfc3339(finished)}}}]}}

    t0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    t = [t0 + datetime.timedelta(seconds=i) for i in range(4)]
    record = next_backoff_record(BackoffRecord(), [], [pod("Failed", t[0]), pod("Failed", t[1])])
    assert record == BackoffRecord(2, t[1])
    # Only failures after the last success count.
    record = next_backoff_record(record, [pod("Succeeded", t[2])],
                                 [pod("Failed", t[1]), pod("Failed", t[3])])
    assert record == BackoffRecord(1, t[3])
    assert next_backoff_record(record, [pod("Succeeded", t[3])], []) == BackoffRecord(0, None)
