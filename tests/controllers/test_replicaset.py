"""The ReplicaSet and ReplicationController controllers against a real API server."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Any

from kubi.api import meta as m
from kubi.client.rest import Client
from kubi.controllers._pods import slow_start_batch
from kubi.controllers.manager import run_controllers
from kubi.controllers.replicaset import calculate_status
from tests.harness import api_server, eventually, running

Obj = dict[str, Any]
NS = "default"


def replicaset(name: str, replicas: int, app: str = "echo", min_ready: int = 0) -> Obj:
    return {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "minReadySeconds": min_ready,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app, "tier": "web"},
                             "annotations": {"note": "from-template"}},
                "spec": {"containers": [{"name": "echo", "image": "nginx"}]},
            },
        },
    }


async def pods_of(client: Client, selector: str = "app=echo") -> list[Obj]:
    listed = await client.list("pods", NS, label_selector=selector)
    return [p for p in listed["items"] if not p["metadata"].get("deletionTimestamp")]


async def count_is(client: Client, n: int, selector: str = "app=echo") -> list[Obj] | None:
    pods = await pods_of(client, selector)
    return pods if len(pods) == n else None


async def make_running(client: Client, pod: Obj, ready: bool = True) -> None:
    pod = await client.get("pods", pod["metadata"]["name"], NS)
    stamp = m.rfc3339(m.now())
    pod["status"] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                        "lastTransitionTime": stamp}],
        "containerStatuses": [{"name": "echo", "image": "nginx", "imageID": "", "ready": ready,
                               "restartCount": 0, "state": {"running": {"startedAt": stamp}}}],
    }
    await client.update_status("pods", pod)


async def scale(client: Client, resource: str, name: str, replicas: int) -> None:
    await client.patch(resource, name, {"spec": {"replicas": replicas}}, NS)


def test_replicaset_creates_pods_from_template(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"replicaset"})):
            rs = await client.create("replicasets.apps", replicaset("echo", 3))
            pods = await eventually(lambda: count_is(client, 3), timeout=20)
            for pod in pods:
                meta = pod["metadata"]
                assert meta["generateName"] == "echo-"
                assert meta["name"].startswith("echo-") and len(meta["name"]) == 10
                assert meta["labels"] == {"app": "echo", "tier": "web"}
                assert meta["annotations"] == {"note": "from-template"}
                assert meta["ownerReferences"] == [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "echo",
                    "uid": rs["metadata"]["uid"], "controller": True,
                    "blockOwnerDeletion": True}]
                assert pod["spec"]["containers"][0]["image"] == "nginx"

            async def status_counts_three() -> Obj | None:
                got = await client.get("replicasets.apps", "echo", NS)
                status = got.get("status") or {}
                return got if status.get("replicas") == 3 and status.get(
                    "fullyLabeledReplicas") == 3 and status.get("observedGeneration") else None

            await eventually(status_counts_three, timeout=20)

            async def events() -> list[str] | None:
                listed = await client.list("events", NS)
                found = [e["message"] for e in listed["items"]
                         if e["reason"] == "SuccessfulCreate"
                         and e["involvedObject"]["name"] == "echo"]
                return found if len(found) == 3 else None

            messages = await eventually(events, timeout=20)
            names = {p["metadata"]["name"] for p in pods}
            assert {msg.removeprefix("Created pod: ") for msg in messages} == names
            # Exactly three: nothing extra gets created once the cache catches up.
            await asyncio.sleep(0.3)
            assert len(await pods_of(client)) == 3

    asyncio.run(scenario())


def test_replicaset_scales_and_replaces(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"replicaset"})):
            await client.create("replicasets.apps", replicaset("echo", 3))
            pods = await eventually(lambda: count_is(client, 3), timeout=20)
            keeper = pods[1]
            await make_running(client, keeper)

            # Scale down 3 -> 1: the Pending pods go before the Running one.
            await scale(client, "replicasets.apps", "echo", 1)
            left = await eventually(lambda: count_is(client, 1), timeout=20)
            assert left[0]["metadata"]["name"] == keeper["metadata"]["name"]

            # Scale up 1 -> 4.
            await scale(client, "replicasets.apps", "echo", 4)
            pods = await eventually(lambda: count_is(client, 4), timeout=20)

            # A deleted pod is replaced by a new one.
            victim = next(p for p in pods if p["metadata"]["name"] != keeper["metadata"]["name"])
            await client.delete("pods", victim["metadata"]["name"], NS)

            async def replaced() -> list[Obj] | None:
                now = await pods_of(client)
                names = {p["metadata"]["name"] for p in now}
                return now if len(now) == 4 and victim["metadata"]["name"] not in names else None

            await eventually(replaced, timeout=20)

            async def deleted_events() -> bool:
                listed = await client.list("events", NS)
                return any(e["reason"] == "SuccessfulDelete"
                           and e["message"].startswith("Deleted pod: echo-")
                           for e in listed["items"])

            await eventually(deleted_events, timeout=20)

    asyncio.run(scenario())


def test_replicaset_adopts_and_releases(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"replicaset"})):
            orphan = await client.create("pods", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "orphan", "namespace": NS, "labels": {"app": "echo"}},
                "spec": {"containers": [{"name": "echo", "image": "nginx"}]}})
            stranger = await client.create("pods", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "stranger", "namespace": NS, "labels": {"app": "other"}},
                "spec": {"containers": [{"name": "echo", "image": "nginx"}]}})
            rs = await client.create("replicasets.apps", replicaset("echo", 2))
            uid = rs["metadata"]["uid"]

            async def adopted() -> Obj | None:
                pod = await client.get("pods", "orphan", NS)
                refs = pod["metadata"].get("ownerReferences") or []
                return pod if [r["uid"] for r in refs if r.get("controller")] == [uid] else None

            await eventually(adopted, timeout=20)
            # The orphan counts: only one more pod is created.
            await eventually(lambda: count_is(client, 2), timeout=20)
            await asyncio.sleep(0.3)
            assert len(await pods_of(client)) == 2
            assert orphan["metadata"]["uid"] == (await client.get("pods", "orphan", NS))[
                "metadata"]["uid"]
            untouched = await client.get("pods", "stranger", NS)
            assert not untouched["metadata"].get("ownerReferences")
            assert untouched["metadata"]["uid"] == stranger["metadata"]["uid"]

            # Relabel the adopted pod: it is released and replaced.
            await client.patch("pods", "orphan", {"metadata": {"labels": {"app": "moved"}}}, NS)

            async def released() -> bool:
                pod = await client.get("pods", "orphan", NS)
                return not pod["metadata"].get("ownerReferences")

            await eventually(released, timeout=20)
            await eventually(lambda: count_is(client, 2), timeout=20)
            assert (await client.get("pods", "orphan", NS))["metadata"]["labels"] == {
                "app": "moved"}

    asyncio.run(scenario())


def test_replicaset_status_counts_ready_and_available(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"replicaset"})):
            await client.create("replicasets.apps", replicaset("echo", 3))
            pods = await eventually(lambda: count_is(client, 3), timeout=20)
            await make_running(client, pods[0])
            await make_running(client, pods[1])
            await make_running(client, pods[2], ready=False)

            async def status() -> Obj | None:
                got = (await client.get("replicasets.apps", "echo", NS)).get("status") or {}
                want = {"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 2,
                        "availableReplicas": 2}
                return got if {k: got.get(k) for k in want} == want else None

            got = await eventually(status, timeout=20)
            assert got["observedGeneration"] == 1
            assert "conditions" not in got

    asyncio.run(scenario())


def test_replicaset_min_ready_seconds_delays_availability(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"replicaset"})):
            await client.create("replicasets.apps", replicaset("echo", 1, min_ready=1))
            pods = await eventually(lambda: count_is(client, 1), timeout=20)
            await make_running(client, pods[0])

            async def ready_not_available() -> Obj | None:
                got = (await client.get("replicasets.apps", "echo", NS)).get("status") or {}
                return got if got.get("readyReplicas") == 1 else None

            first = await eventually(ready_not_available, timeout=20)
            assert not first.get("availableReplicas")

            async def available() -> bool:
                got = (await client.get("replicasets.apps", "echo", NS)).get("status") or {}
                return got.get("availableReplicas") == 1

            # Nothing changes in the cluster: the controller must look again by itself.
            await eventually(available, timeout=20)

    asyncio.run(scenario())


def test_status_reports_replica_failure_and_clears_it() -> None:
    rs = replicaset("echo", 3)
    rs["metadata"].update({"generation": 4, "uid": "u1"})
    now = m.now()
    failed = calculate_status(rs, [], ValueError("quota exceeded"), now)
    assert failed["replicas"] == 0
    assert failed["observedGeneration"] == 4
    assert failed["conditions"] == [{
        "type": "ReplicaFailure", "status": "True", "lastTransitionTime": m.rfc3339(now),
        "reason": "FailedCreate", "message": "quota exceeded"}]
    # An existing condition is kept as it is while failures continue...
    rs["status"] = failed
    again = calculate_status(rs, [], ValueError("other"), now)
    assert again["conditions"] == failed["conditions"]
    # ...and removed by the first sync that succeeds.
    assert "conditions" not in calculate_status(rs, [], None, now)


def test_status_counts_fully_labeled_ready_available() -> None:
    rs = replicaset("echo", 3, min_ready=10)
    rs["metadata"]["generation"] = 1
    now = m.now()
    long_ago = m.rfc3339(now - datetime.timedelta(minutes=5))
    just_now = m.rfc3339(now)

    def pod(labels: dict[str, str], ready_since: str | None) -> Obj:
        conditions = ([{"type": "Ready", "status": "True", "lastTransitionTime": ready_since}]
                      if ready_since else [])
        return {"metadata": {"labels": labels},
                "status": {"phase": "Running", "conditions": conditions}}

    pods = [pod({"app": "echo", "tier": "web"}, long_ago),
            pod({"app": "echo", "tier": "web"}, just_now),
            pod({"app": "echo"}, None)]
    assert calculate_status(rs, pods, None, now) == {
        "replicas": 3, "fullyLabeledReplicas": 2, "readyReplicas": 2,
        "availableReplicas": 1, "observedGeneration": 1}


def test_slow_start_batches_stop_at_first_failing_batch() -> None:
    async def scenario() -> None:
        calls = 0

        async def create() -> None:
            nonlocal calls
            calls += 1
            if calls > 4:
                raise ValueError("forbidden")

        # Batches 1, 2, 4: the third batch (calls 4..7) fails from call 5 on.
        successes, error = await slow_start_batch(10, 1, create)
        assert (calls, successes) == (7, 4)
        assert isinstance(error, ValueError)

        calls = -100  # never fails
        successes, error = await slow_start_batch(10, 1, create)
        assert (successes, error, calls) == (10, None, -90)

        assert await slow_start_batch(0, 1, create) == (0, None)

    asyncio.run(scenario())


def test_replication_controller(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"replicationcontroller"})):
            rc = await client.create("replicationcontrollers", {
                "apiVersion": "v1", "kind": "ReplicationController",
                "metadata": {"name": "legacy", "namespace": NS},
                "spec": {"replicas": 2, "selector": {"app": "legacy"},
                         "template": {"metadata": {"labels": {"app": "legacy"}},
                                      "spec": {"containers": [{"name": "c",
                                                               "image": "nginx"}]}}}})
            pods = await eventually(lambda: count_is(client, 2, "app=legacy"), timeout=20)
            for pod in pods:
                assert pod["metadata"]["generateName"] == "legacy-"
                ref = pod["metadata"]["ownerReferences"][0]
                assert (ref["kind"], ref["apiVersion"], ref["uid"]) == (
                    "ReplicationController", "v1", rc["metadata"]["uid"])
            await make_running(client, pods[0])
            await scale(client, "replicationcontrollers", "legacy", 1)
            left = await eventually(lambda: count_is(client, 1, "app=legacy"), timeout=20)
            assert left[0]["metadata"]["name"] == pods[0]["metadata"]["name"]

            async def status() -> bool:
                got = (await client.get("replicationcontrollers", "legacy", NS)).get(
                    "status") or {}
                return (got.get("replicas"), got.get("readyReplicas"),
                        got.get("observedGeneration")) == (1, 1, 2)

            await eventually(status, timeout=20)

    asyncio.run(scenario())
