"""The Deployment controller, with the ReplicaSet controller, against a real API server.

No nodes run here: the tests move pods to Running+Ready themselves (`keep_ready`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.client.rest import Client
from kubi.controllers import _deployment_util as du
from kubi.controllers.manager import run_controllers
from tests.harness import api_server, eventually, running

Obj = dict[str, Any]
NS = "default"
DEPLOYMENTS = "deployments.apps"
REPLICA_SETS = "replicasets.apps"
CONTROLLERS = {"deployment", "replicaset"}


def deployment(name: str = "echo", replicas: int = 3, image: str = "nginx:1",
               **spec: Any) -> Obj:
    body: Obj = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "web", "image": image}]}},
    }
    body.update(spec)
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS}, "spec": body}


def rolling(surge: int | str, unavailable: int | str) -> Obj:
    return {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}


def image_of(obj: Obj) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"]) if "template" in (
        obj.get("spec") or {}) else str(obj["spec"]["containers"][0]["image"])


# -- moving pods along -------------------------------------------------------------------------


async def make_ready(client: Client, pod: Obj) -> None:
    stamp = m.rfc3339(m.now())
    pod = m.deep_copy(pod)
    pod["status"] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp}],
        "containerStatuses": [{"name": "web", "image": image_of(pod), "imageID": "",
                               "ready": True, "restartCount": 0,
                               "state": {"running": {"startedAt": stamp}}}],
    }
    with contextlib.suppress(StatusError):  # deleted or changed meanwhile: next round
        await client.update_status("pods", pod)


def is_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


async def ready_all(client: Client, which: Callable[[Obj], bool] = lambda _: True,
                    bind: bool = False) -> int:
    """Mark every pod of the namespace (that `which` accepts) Running and Ready; with
    `bind`, first put it on a node, so deleting it waits for its grace period."""
    listed = await client.list("pods", NS)
    pending = [p for p in listed["items"] if not is_ready(p) and which(p)
               and not p["metadata"].get("deletionTimestamp")]
    for pod in pending:
        if bind and not pod["spec"].get("nodeName"):
            with contextlib.suppress(StatusError):
                await client.post("pods", pod["metadata"]["name"], "binding", {
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": pod["metadata"]["name"]},
                    "target": {"kind": "Node", "name": "node-1"}}, NS)
            pod = await client.get("pods", pod["metadata"]["name"], NS)
        await make_ready(client, pod)
    return len(pending)


async def keep_ready(client: Client, which: Callable[[Obj], bool] = lambda _: True,
                     bind: bool = False) -> None:
    """What kubelets would do: pods become ready soon after they are created."""
    while True:
        with contextlib.suppress(StatusError):
            await ready_all(client, which, bind)
        await asyncio.sleep(0.02)


# -- reading state -----------------------------------------------------------------------------


async def owned_replica_sets(client: Client, name: str = "echo") -> list[Obj]:
    owner = await client.get(DEPLOYMENTS, name, NS)
    listed = await client.list(REPLICA_SETS, NS)
    owned = [rs for rs in listed["items"]
             if any(ref.get("uid") == owner["metadata"]["uid"] and ref.get("controller")
                    for ref in rs["metadata"].get("ownerReferences") or [])]
    return sorted(owned, key=du.revision)


async def live_pods(client: Client) -> list[Obj]:
    listed = await client.list("pods", NS)
    return [p for p in listed["items"] if not p["metadata"].get("deletionTimestamp")]


def condition(obj: Obj, kind: str) -> Obj | None:
    return du.get_condition(obj.get("status") or {}, kind)


async def rolled_out(client: Client, name: str = "echo") -> Obj | None:
    """The Deployment once its rollout finished (as `kubectl rollout status` decides)."""
    d = await client.get(DEPLOYMENTS, name, NS)
    status = d.get("status") or {}
    want = d["spec"]["replicas"]
    done = (status.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and status.get("updatedReplicas", 0) == want
            and status.get("replicas", 0) == want
            and status.get("availableReplicas", 0) == want)
    return d if done else None


async def observed(client: Client, name: str = "echo") -> Obj | None:
    """The Deployment once the controller has seen its latest spec."""
    d = await client.get(DEPLOYMENTS, name, NS)
    seen = (d.get("status") or {}).get("observedGeneration", 0)
    return d if seen >= d["metadata"]["generation"] else None


async def set_image(client: Client, image: str, name: str = "echo") -> None:
    await client.patch(DEPLOYMENTS, name, {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": image}]}}}}, NS, patch_type="strategic")


# -- tests -------------------------------------------------------------------------------------


def test_create_makes_hashed_replica_set_with_revision_1(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=CONTROLLERS), keep_ready(client)):
            body = deployment()
            body["metadata"]["annotations"] = {
                "kubernetes.io/change-cause": "kubectl create deployment echo",
                du.LAST_APPLIED: "{}"}
            created = await client.create(DEPLOYMENTS, body)
            d = await eventually(lambda: rolled_out(client), timeout=20)

            [rs] = await owned_replica_sets(client)
            pod_hash = du.compute_hash(created["spec"]["template"], None)
            assert rs["metadata"]["name"] == f"echo-{pod_hash}"
            assert rs["metadata"]["labels"] == {"app": "echo", du.HASH_LABEL: pod_hash}
            assert rs["spec"]["selector"] == {"matchLabels": {"app": "echo",
                                                              du.HASH_LABEL: pod_hash}}
            assert rs["spec"]["template"]["metadata"]["labels"][du.HASH_LABEL] == pod_hash
            assert rs["spec"]["replicas"] == 3
            assert rs["metadata"]["ownerReferences"] == [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": "echo",
                "uid": created["metadata"]["uid"], "controller": True,
                "blockOwnerDeletion": True}]
            annotations = rs["metadata"]["annotations"]
            # maxSurge 25% of 3 rounds up to 1.
            assert annotations == {du.REVISION: "1", du.DESIRED_REPLICAS: "3",
                                   du.MAX_REPLICAS: "4",
                                   "kubernetes.io/change-cause": "kubectl create deployment echo"}
            pods = await live_pods(client)
            assert len(pods) == 3
            assert all(p["metadata"]["labels"][du.HASH_LABEL] == pod_hash for p in pods)

            assert d["metadata"]["annotations"][du.REVISION] == "1"
            status = d["status"]
            assert {k: status.get(k) for k in ("replicas", "updatedReplicas", "readyReplicas",
                                               "availableReplicas")} == {
                "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}
            assert "unavailableReplicas" not in status
            available = condition(d, du.AVAILABLE)
            assert available is not None
            assert (available["status"], available["reason"], available["message"]) == (
                "True", du.MIN_REPLICAS_AVAILABLE, "Deployment has minimum availability.")
            progressing = await eventually(lambda: _progressing(client, du.NEW_RS_AVAILABLE))
            assert progressing["status"] == "True"
            assert progressing["message"] == (
                f'ReplicaSet "echo-{pod_hash}" has successfully progressed.')

            events = (await client.list("events", NS))["items"]
            scaling = [(e["reason"], e["message"], e["source"]["component"]) for e in events
                       if e["involvedObject"]["name"] == "echo"]
            assert ("ScalingReplicaSet", f"Scaled up replica set echo-{pod_hash} from 0 to 3",
                    "deployment-controller") in scaling

    asyncio.run(scenario())


async def _progressing(client: Client, reason: str, name: str = "echo") -> Obj | None:
    d = await client.get(DEPLOYMENTS, name, NS)
    found = condition(d, du.PROGRESSING)
    return found if found is not None and found["reason"] == reason else None


def test_scaling_keeps_the_replica_set_and_revision(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=CONTROLLERS), keep_ready(client)):
            await client.create(DEPLOYMENTS, deployment(replicas=3))
            await eventually(lambda: rolled_out(client), timeout=20)
            [before] = await owned_replica_sets(client)

            await client.patch(DEPLOYMENTS, "echo", {"spec": {"replicas": 4}}, NS)
            d = await eventually(lambda: rolled_out(client), timeout=20)
            [after] = await owned_replica_sets(client)
            assert after["metadata"]["uid"] == before["metadata"]["uid"]
            assert after["spec"]["replicas"] == 4
            annotations = after["metadata"]["annotations"]
            assert annotations[du.REVISION] == "1"
            assert annotations[du.DESIRED_REPLICAS] == "4"
            assert annotations[du.MAX_REPLICAS] == "5"
            assert d["metadata"]["annotations"][du.REVISION] == "1"
            assert len(await live_pods(client)) == 4

            await client.patch(DEPLOYMENTS, "echo", {"spec": {"replicas": 1}}, NS)
            await eventually(lambda: rolled_out(client), timeout=20)
            [last] = await owned_replica_sets(client)
            assert last["metadata"]["uid"] == before["metadata"]["uid"]
            assert last["spec"]["replicas"] == 1

    asyncio.run(scenario())


def test_rolling_update_stays_within_surge_and_unavailability(tmp_path: Path) -> None:
    replicas, surge, unavailable = 4, 1, 1

    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=CONTROLLERS), keep_ready(client)):
            await client.create(DEPLOYMENTS, deployment(
                replicas=replicas, strategy=rolling(surge, unavailable)))
            await eventually(lambda: rolled_out(client), timeout=20)

            violations: list[str] = []
            mixed_states = 0

            async def watch_invariants() -> None:
                nonlocal mixed_states
                while True:
                    rss = await owned_replica_sets(client)
                    sizes = [rs["spec"]["replicas"] for rs in rss]
                    if sum(sizes) > replicas + surge:
                        violations.append(f"replica sets sized {sizes}")
                    if len([s for s in sizes if s]) > 1:
                        mixed_states += 1
                    ready = [p for p in await live_pods(client) if is_ready(p)]
                    if len(ready) < replicas - unavailable:
                        violations.append(f"only {len(ready)} ready pods")
                    await asyncio.sleep(0)

            async with running(watch_invariants()):
                await set_image(client, "nginx:2")
                d = await eventually(lambda: _rolled_to(client, "nginx:2"), timeout=30)
            assert violations == []
            assert mixed_states > 0  # the observer did see the rollout in flight

            old, new = await owned_replica_sets(client)
            assert du.revision(old) == 1 and du.revision(new) == 2
            assert old["spec"]["replicas"] == 0 and new["spec"]["replicas"] == replicas
            assert image_of(new) == "nginx:2"
            assert d["metadata"]["annotations"][du.REVISION] == "2"
            pods = await live_pods(client)
            assert sorted(image_of(p) for p in pods) == ["nginx:2"] * replicas
            events = [e["message"] for e in (await client.list("events", NS))["items"]
                      if e["reason"] == "ScalingReplicaSet"]
            assert f"Scaled down replica set {old['metadata']['name']} from 1 to 0" in events

    asyncio.run(scenario())


async def _rolled_to(client: Client, image: str) -> Obj | None:
    d = await rolled_out(client)
    if d is None or image_of(d) != image:
        return None
    rss = await owned_replica_sets(client)
    active = [rs for rs in rss if rs["spec"]["replicas"]]
    pods = await live_pods(client)
    if len(active) != 1 or len(pods) != d["spec"]["replicas"]:
        return None
    return d


def test_undo_brings_the_old_replica_set_back_as_next_revision(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=CONTROLLERS), keep_ready(client)):
            await client.create(DEPLOYMENTS, deployment(replicas=2))
            await eventually(lambda: rolled_out(client), timeout=20)
            [first] = await owned_replica_sets(client)
            # As `kubectl apply --record`: the new template and its cause in one write.
            await client.patch(DEPLOYMENTS, "echo", {
                "metadata": {"annotations": {"kubernetes.io/change-cause": "to nginx:2"}},
                "spec": {"template": {"spec": {"containers": [
                    {"name": "web", "image": "nginx:2"}]}}}}, NS, patch_type="strategic")
            await eventually(lambda: _rolled_to(client, "nginx:2"), timeout=30)

            # What `kubectl rollout undo` sends: revision 1's template, and annotations
            # of revision 1 plus the Deployment's own ones.
            current = await client.get(DEPLOYMENTS, "echo", NS)
            annotations = {k: v for k, v in current["metadata"]["annotations"].items()
                           if k in du.SKIPPED_ANNOTATIONS}
            annotations.update({k: v for k, v in first["metadata"]["annotations"].items()
                                if k not in du.SKIPPED_ANNOTATIONS})
            await client.patch(DEPLOYMENTS, "echo", [
                {"op": "replace", "path": "/spec/template",
                 "value": du.template_from_replica_set(first)},
                {"op": "replace", "path": "/metadata/annotations", "value": annotations},
            ], NS, patch_type="json")
            d = await eventually(lambda: _rolled_to(client, "nginx:1"), timeout=30)

            rss = await owned_replica_sets(client)
            assert len(rss) == 2
            second, back = rss  # sorted by revision: 2, then 3
            assert back["metadata"]["uid"] == first["metadata"]["uid"]
            assert back["metadata"]["annotations"][du.REVISION] == "3"
            assert back["metadata"]["annotations"][du.REVISION_HISTORY] == "1"
            assert back["spec"]["replicas"] == 2
            assert du.revision(second) == 2 and second["spec"]["replicas"] == 0
            assert second["metadata"]["annotations"]["kubernetes.io/change-cause"] == (
                "to nginx:2")
            assert "kubernetes.io/change-cause" not in back["metadata"]["annotations"]
            assert d["metadata"]["annotations"][du.REVISION] == "3"

    asyncio.run(scenario())


def test_recreate_waits_for_old_pods_to_be_gone(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=CONTROLLERS), keep_ready(client, bind=True)):
            await client.create(DEPLOYMENTS, deployment(replicas=3,
                                                        strategy={"type": "Recreate"}))
            await eventually(lambda: rolled_out(client), timeout=20)
            [old] = await owned_replica_sets(client)

            violations: list[str] = []

            async def watch_invariants() -> None:
                while True:
                    pods = (await client.list("pods", NS))["items"]
                    images = {image_of(p) for p in pods}
                    if len(images) > 1:
                        violations.append(f"old and new pods together: {images}")
                    rss = await owned_replica_sets(client)
                    if len([rs for rs in rss if rs["spec"]["replicas"]]) > 1:
                        violations.append("two active replica sets")
                    await asyncio.sleep(0)

            async with running(watch_invariants()):
                await set_image(client, "nginx:2")
                # Bound pods stay, terminating, until their kubelet is done with them.
                await eventually(lambda: _scaled_down_with_pods_terminating(client),
                                 timeout=20)
                assert [rs["metadata"]["uid"] for rs in await owned_replica_sets(client)] == [
                    old["metadata"]["uid"]]
                for pod in (await client.list("pods", NS))["items"]:
                    await client.delete("pods", pod["metadata"]["name"], NS, grace_period=0)
                await eventually(lambda: _rolled_to(client, "nginx:2"), timeout=30)
            assert violations == []

            old, new = await owned_replica_sets(client)
            assert old["spec"]["replicas"] == 0 and new["spec"]["replicas"] == 3
            assert new["metadata"]["annotations"][du.MAX_REPLICAS] == "3"  # no surge
            events = [e["message"] for e in (await client.list("events", NS))["items"]
                      if e["reason"] == "ScalingReplicaSet"]
            assert f"Scaled down replica set {old['metadata']['name']} from 3 to 0" in events
            assert f"Scaled up replica set {new['metadata']['name']} from 0 to 3" in events

    asyncio.run(scenario())


async def _scaled_down_with_pods_terminating(client: Client) -> bool:
    """The controller has seen the old ReplicaSet at zero while its pods still terminate."""
    d = await observed(client)
    pods = (await client.list("pods", NS))["items"]
    return (d is not None and not d["status"].get("replicas") and len(pods) == 3
            and all(p["metadata"].get("deletionTimestamp") for p in pods))


def test_paused_deployment_scales_but_does_not_roll_out(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=CONTROLLERS), keep_ready(client)):
            await client.create(DEPLOYMENTS, deployment(replicas=2))
            await eventually(lambda: rolled_out(client), timeout=20)

            await client.patch(DEPLOYMENTS, "echo", {"spec": {"paused": True}}, NS)
            paused = await eventually(lambda: _progressing(client, du.PAUSED), timeout=20)
            assert (paused["status"], paused["message"]) == ("Unknown", "Deployment is paused")

            await set_image(client, "nginx:2")
            await client.patch(DEPLOYMENTS, "echo", {"spec": {"replicas": 3}}, NS)
            await eventually(lambda: rolled_out_paused(client), timeout=20)
            [only] = await owned_replica_sets(client)
            assert image_of(only) == "nginx:1"
            assert only["spec"]["replicas"] == 3

            await client.patch(DEPLOYMENTS, "echo", {"spec": {"paused": False}}, NS)
            await eventually(lambda: _rolled_to(client, "nginx:2"), timeout=30)
            old, new = await owned_replica_sets(client)
            assert du.revision(new) == 2 and new["spec"]["replicas"] == 3
            assert old["spec"]["replicas"] == 0

    asyncio.run(scenario())


async def rolled_out_paused(client: Client) -> Obj | None:
    """Paused: the new spec is observed and the old ReplicaSet resized, nothing rolled."""
    d = await observed(client)
    if d is None or (d.get("status") or {}).get("availableReplicas") != 3:
        return None
    return d


def test_progress_deadline_exceeded_when_pods_never_get_ready(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=CONTROLLERS)):
            await client.create(DEPLOYMENTS, deployment(replicas=1,
                                                        progressDeadlineSeconds=1))
            timed_out = await eventually(lambda: _progressing(client, du.TIMED_OUT),
                                         timeout=20)
            [rs] = await owned_replica_sets(client)
            assert timed_out["status"] == "False"
            assert timed_out["message"] == (
                f'ReplicaSet "{rs["metadata"]["name"]}" has timed out progressing.')
            d = await client.get(DEPLOYMENTS, "echo", NS)
            available = condition(d, du.AVAILABLE)
            assert available is not None
            assert (available["status"], available["reason"], available["message"]) == (
                "False", du.MIN_REPLICAS_UNAVAILABLE,
                "Deployment does not have minimum availability.")
            assert d["status"]["unavailableReplicas"] == 1

            # Pods that finally get ready complete the rollout after all.
            await ready_all(client)
            done = await eventually(lambda: _progressing(client, du.NEW_RS_AVAILABLE),
                                    timeout=20)
            assert done["status"] == "True"

    asyncio.run(scenario())


def test_revision_history_limit_keeps_one_old_replica_set(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=CONTROLLERS), keep_ready(client)):
            await client.create(DEPLOYMENTS, deployment(replicas=1, revisionHistoryLimit=1))
            await eventually(lambda: rolled_out(client), timeout=20)
            for image in ("nginx:2", "nginx:3", "nginx:4"):
                await set_image(client, image)
                await eventually(functools.partial(_rolled_to, client, image), timeout=30)

            async def history_trimmed() -> list[Obj] | None:
                rss = await owned_replica_sets(client)
                return rss if len(rss) == 2 else None

            old, new = await eventually(history_trimmed, timeout=20)
            assert (du.revision(old), image_of(old)) == (3, "nginx:3")
            assert (du.revision(new), image_of(new)) == (4, "nginx:4")

    asyncio.run(scenario())


def test_proportional_scaling_during_a_stuck_rollout(tmp_path: Path) -> None:
    """As upstream's e2e: 10 replicas, maxSurge 3, maxUnavailable 2, new pods never
    get ready; scaling to 30 shares the 20 extra pods out in proportion."""
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=CONTROLLERS),
                keep_ready(client, lambda pod: image_of(pod) == "nginx:1")):
            await client.create(DEPLOYMENTS, deployment(replicas=10, strategy=rolling(3, 2)))
            await eventually(lambda: rolled_out(client), timeout=30)
            await set_image(client, "nginx:broken")

            async def sizes_are(expected: list[int]) -> list[Obj] | None:
                rss = await owned_replica_sets(client)
                return rss if [rs["spec"]["replicas"] for rs in rss] == expected else None

            await eventually(lambda: sizes_are([8, 5]), timeout=30)
            await client.patch(DEPLOYMENTS, "echo", {"spec": {"replicas": 30}}, NS)
            old, new = await eventually(lambda: sizes_are([20, 13]), timeout=30)
            assert old["metadata"]["annotations"][du.DESIRED_REPLICAS] == "30"
            assert new["metadata"]["annotations"][du.MAX_REPLICAS] == "33"

    asyncio.run(scenario())


def test_orphan_replica_set_is_adopted_and_a_relabelled_one_released(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=CONTROLLERS), keep_ready(client)):
            template = deployment(replicas=2)["spec"]["template"]
            orphan = await client.create(REPLICA_SETS, {
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": "echo-orphan", "namespace": NS,
                             "labels": {"app": "echo"}},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "echo"}},
                         "template": template}})
            await client.create(DEPLOYMENTS, deployment(replicas=2))
            await eventually(lambda: rolled_out(client), timeout=20)
            [rs] = await owned_replica_sets(client)
            # Same template: the adopted ReplicaSet is the new one, no second is made.
            assert rs["metadata"]["uid"] == orphan["metadata"]["uid"]
            assert rs["metadata"]["annotations"][du.REVISION] == "1"

            rs["metadata"]["labels"] = {"app": "other"}
            await client.update(REPLICA_SETS, rs)

            async def released() -> Obj | None:
                found = await client.get(REPLICA_SETS, "echo-orphan", NS)
                return found if not found["metadata"].get("ownerReferences") else None

            await eventually(released, timeout=20)

    asyncio.run(scenario())


def test_hash_collision_bumps_collision_count(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=CONTROLLERS), keep_ready(client)):
            defaulted = await client.create(DEPLOYMENTS, deployment(replicas=1), dry_run=True)
            taken = du.compute_hash(defaulted["spec"]["template"], None)
            # Someone else's ReplicaSet already has the name the Deployment would use.
            other = deployment("other", replicas=0)["spec"]
            await client.create(REPLICA_SETS, {
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": f"echo-{taken}", "namespace": NS,
                             "labels": {"app": "other"}},
                "spec": {"replicas": 0, "selector": other["selector"],
                         "template": other["template"]}})
            await client.create(DEPLOYMENTS, deployment(replicas=1))
            d = await eventually(lambda: rolled_out(client), timeout=20)
            assert d["status"]["collisionCount"] == 1
            [rs] = await owned_replica_sets(client)
            assert rs["metadata"]["name"] == (
                f"echo-{du.compute_hash(defaulted['spec']['template'], 1)}")
            assert rs["metadata"]["name"] != f"echo-{taken}"

    asyncio.run(scenario())


def test_invalid_updates_are_rejected_and_change_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=CONTROLLERS), keep_ready(client)):
            await client.create(DEPLOYMENTS, deployment(replicas=2))
            before = await eventually(lambda: rolled_out(client), timeout=20)
            with pytest.raises(StatusError) as caught:
                await client.patch(DEPLOYMENTS, "echo", {"spec": {"strategy": {
                    "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}}, NS)
            assert caught.value.code == 422
            after = await client.get(DEPLOYMENTS, "echo", NS)
            assert after["metadata"]["generation"] == before["metadata"]["generation"]
            assert len(await owned_replica_sets(client)) == 1

    asyncio.run(scenario())


# -- pure helpers --------------------------------------------------------------------------------


def test_fenceposts_round_surge_up_and_unavailable_down() -> None:
    assert du.resolve_fenceposts("25%", "25%", 10) == (3, 2)
    assert du.resolve_fenceposts("25%", "25%", 3) == (1, 0)
    assert du.resolve_fenceposts(0, "10%", 5) == (0, 1)  # both zero: one may be unavailable
    assert du.resolve_fenceposts(2, 1, 10) == (2, 1)
    rolling_deployment = deployment(replicas=3, strategy=rolling("50%", "100%"))
    assert du.max_surge(rolling_deployment) == 2
    assert du.max_unavailable(rolling_deployment) == 3
    recreate = deployment(replicas=3, strategy={"type": "Recreate"})
    assert du.max_surge(recreate) == 0 and du.max_unavailable(recreate) == 0
    for bad in ("5", "abc%", 1.5, True):
        with pytest.raises(ValueError):
            du.scaled_value(bad, 10, True)


def test_template_hash_is_stable_and_tracks_the_template() -> None:
    template = deployment()["spec"]["template"]
    first = du.compute_hash(template, None)
    assert first == du.compute_hash(m.deep_copy(template), None)
    assert set(first) <= set("bcdfghjklmnpqrstvwxz2456789")
    labelled = m.deep_copy(template)
    labelled["metadata"]["labels"][du.HASH_LABEL] = first
    assert du.compute_hash(labelled, None) == first
    changed = deployment(image="nginx:2")["spec"]["template"]
    assert du.compute_hash(changed, None) != first
    assert du.compute_hash(template, 1) not in (first, du.compute_hash(template, 2))
    assert du.equal_ignore_hash(template, labelled)
    assert not du.equal_ignore_hash(template, changed)


def test_revision_annotations_on_rollback() -> None:
    owner = deployment(strategy=rolling("25%", "25%"))
    owner["metadata"]["annotations"] = {"team": "a", du.LAST_APPLIED: "{}", du.REVISION: "9"}
    rs: Obj = {"metadata": {"annotations": {du.REVISION: "1"}}, "spec": {"replicas": 0}}
    assert du.set_new_replica_set_annotations(owner, rs, "3", exists=True)
    assert rs["metadata"]["annotations"] == {du.REVISION: "3", du.REVISION_HISTORY: "1",
                                             "team": "a"}
    assert du.set_new_replica_set_annotations(owner, rs, "5", exists=True)
    assert rs["metadata"]["annotations"][du.REVISION_HISTORY] == "1,3"
    assert not du.set_new_replica_set_annotations(owner, rs, "4", exists=True)  # never lower
    fresh: Obj = {"metadata": {}, "spec": {"replicas": 0}}
    du.set_new_replica_set_annotations(owner, fresh, "1", exists=False)
    assert fresh["metadata"]["annotations"] == {du.REVISION: "1", "team": "a",
                                                du.DESIRED_REPLICAS: "3",
                                                du.MAX_REPLICAS: "4"}


def test_conditions_keep_transition_time_and_ignore_same_reason() -> None:
    status: Obj = {}
    first = du.new_condition(du.PROGRESSING, "True", du.NEW_RS_CREATED, "created")
    first["lastTransitionTime"] = first["lastUpdateTime"] = "2020-01-01T00:00:00Z"
    du.set_condition(status, first)
    du.set_condition(status, du.new_condition(du.PROGRESSING, "True", du.NEW_RS_CREATED,
                                              "other message"))
    assert status["conditions"] == [first]
    du.set_condition(status, du.new_condition(du.PROGRESSING, "True", du.NEW_RS_AVAILABLE,
                                              "done"))
    [kept] = status["conditions"]
    assert kept["reason"] == du.NEW_RS_AVAILABLE
    assert kept["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    du.remove_condition(status, du.PROGRESSING)
    assert "conditions" not in status
