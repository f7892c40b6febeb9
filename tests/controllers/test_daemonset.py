"""The DaemonSet controller against a real API server, with Node objects made by the test."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

from kubi.api import meta as m
from kubi.client.rest import Client
from kubi.controllers import daemonset as ds_mod
from kubi.controllers._history import REVISION_HASH_LABEL
from kubi.controllers.manager import run_controllers
from tests.harness import api_server, eventually, running

Obj = dict[str, Any]
NS = "default"
DS = "daemonsets.apps"


def node(name: str, labels: dict[str, str] | None = None,
         taints: list[Obj] | None = None) -> Obj:
    stamp = m.rfc3339(m.now())
    obj: Obj = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                      **(labels or {})}},
                "spec": {},
                "status": {"conditions": [{"type": "Ready", "status": "True",
                                           "lastHeartbeatTime": stamp,
                                           "lastTransitionTime": stamp,
                                           "reason": "KubeletReady", "message": "ready"}]}}
    if taints:
        obj["spec"]["taints"] = taints
    return obj


def daemonset(name: str = "agent", *, image: str = "agent:1", node_selector: Obj | None = None,
              tolerations: list[Obj] | None = None, strategy: Obj | None = None) -> Obj:
    pod_spec: Obj = {"containers": [{"name": "a", "image": image}]}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    spec: Obj = {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}}
    if strategy:
        spec["updateStrategy"] = strategy
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


async def add_nodes(client: Client, *nodes: Obj) -> None:
    for obj in nodes:
        await client.create("nodes", obj)


async def pods_by_node(client: Client, app: str = "agent") -> dict[str, list[Obj]]:
    listed = await client.list("pods", NS, label_selector=f"app={app}")
    found: dict[str, list[Obj]] = {}
    for pod in listed["items"]:
        if not pod["metadata"].get("deletionTimestamp"):
            found.setdefault(ds_mod.target_node(pod), []).append(pod)
    return found


async def on_nodes(client: Client, names: set[str], app: str = "agent"
                   ) -> dict[str, list[Obj]] | None:
    found = await pods_by_node(client, app)
    if set(found) != names or any(len(p) != 1 for p in found.values()):
        return None
    return found


async def make_ready(client: Client, pod: Obj) -> None:
    fresh = await client.get("pods", pod["metadata"]["name"], NS)
    stamp = m.rfc3339(m.now())
    fresh["status"] = {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": stamp}]}
    await client.update_status("pods", fresh)


async def status_shows(client: Client, name: str = "agent", **want: Any) -> Obj | None:
    ds = await client.get(DS, name, NS)
    status = ds.get("status") or {}
    if status.get("observedGeneration") != ds["metadata"]["generation"]:
        return None
    return ds if all(status.get(k) == v for k, v in want.items()) else None


def test_one_pod_per_node_pinned_by_affinity(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"daemonset"})):
            await add_nodes(client, node("n1"), node("n2"), node("n3"))
            created = await client.create(DS, daemonset())
            found = await eventually(lambda: on_nodes(client, {"n1", "n2", "n3"}), timeout=20)
            pod = found["n2"][0]
            meta = pod["metadata"]
            assert meta["generateName"] == "agent-"
            assert meta["ownerReferences"] == [{
                "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent",
                "uid": created["metadata"]["uid"], "controller": True,
                "blockOwnerDeletion": True}]
            assert pod["spec"]["affinity"] == {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
                    "matchFields": [{"key": "metadata.name", "operator": "In",
                                     "values": ["n2"]}]}]}}}
            assert "nodeName" not in pod["spec"], "the scheduler binds daemon pods"
            keys = {(t["key"], t["effect"]) for t in pod["spec"]["tolerations"]}
            assert ("node.kubernetes.io/not-ready", "NoExecute") in keys
            assert ("node.kubernetes.io/unschedulable", "NoSchedule") in keys
            assert ("node.kubernetes.io/network-unavailable", "NoSchedule") not in keys

            revisions = (await client.list("controllerrevisions.apps", NS))["items"]
            assert len(revisions) == 1
            revision = revisions[0]
            hash_value = revision["metadata"]["labels"][REVISION_HASH_LABEL]
            assert revision["metadata"]["name"] == f"agent-{hash_value}"
            assert revision["revision"] == 1
            assert revision["data"]["spec"]["template"]["$patch"] == "replace"
            assert meta["labels"][REVISION_HASH_LABEL] == hash_value

            await eventually(lambda: status_shows(
                client, desiredNumberScheduled=3, currentNumberScheduled=3, numberReady=0,
                numberMisscheduled=0, updatedNumberScheduled=3, numberUnavailable=3),
                timeout=20)
            for pods in found.values():
                await make_ready(client, pods[0])
            done = await eventually(lambda: status_shows(
                client, numberReady=3, numberAvailable=3), timeout=20)
            assert "numberUnavailable" not in done["status"]

    asyncio.run(scenario())


def test_taints_tolerations_and_node_selector(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"daemonset"})):
            taint = {"key": "dedicated", "value": "db", "effect": "NoSchedule"}
            await add_nodes(client, node("plain"), node("tainted", taints=[taint]),
                            node("gpu", labels={"accel": "gpu"}))
            await client.create(DS, daemonset("plain"))
            await client.create(DS, daemonset("tolerant", tolerations=[
                {"key": "dedicated", "operator": "Equal", "value": "db",
                 "effect": "NoSchedule"}]))
            await client.create(DS, daemonset("gpu-only", node_selector={"accel": "gpu"}))
            await eventually(lambda: on_nodes(client, {"plain", "gpu"}, "plain"), timeout=20)
            await eventually(lambda: on_nodes(client, {"plain", "tainted", "gpu"}, "tolerant"),
                             timeout=20)
            await eventually(lambda: on_nodes(client, {"gpu"}, "gpu-only"), timeout=20)
            await eventually(lambda: status_shows(client, "plain", desiredNumberScheduled=2,
                                                  currentNumberScheduled=2), timeout=20)

            # A NoSchedule taint added later keeps the running pod; NoExecute evicts it.
            await client.patch("nodes", "plain", {"spec": {"taints": [
                {"key": "maintenance", "effect": "NoSchedule"}]}})
            await eventually(lambda: status_shows(client, "plain", desiredNumberScheduled=1,
                                                  numberMisscheduled=1), timeout=20)
            assert set(await pods_by_node(client, "plain")) == {"plain", "gpu"}
            await client.patch("nodes", "plain", {"spec": {"taints": [
                {"key": "maintenance", "effect": "NoExecute"}]}})
            await eventually(lambda: on_nodes(client, {"gpu"}, "plain"), timeout=20)

            # Labels change: the node-selected set follows.
            await client.patch("nodes", "tainted", {"metadata": {"labels": {"accel": "gpu"}}})
            await eventually(lambda: on_nodes(client, {"gpu"}, "gpu-only"), timeout=20)
            await client.patch("nodes", "plain", {"metadata": {"labels": {"accel": "gpu"}}})
            await eventually(lambda: on_nodes(client, {"gpu"}, "gpu-only"), timeout=20)
            await client.patch("nodes", "plain", {"spec": {"taints": None}})
            await eventually(lambda: on_nodes(client, {"gpu", "plain"}, "gpu-only"), timeout=20)

    asyncio.run(scenario())


def test_nodes_added_and_removed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"daemonset"})):
            await add_nodes(client, node("n1"))
            await client.create(DS, daemonset())
            await eventually(lambda: on_nodes(client, {"n1"}), timeout=20)
            await add_nodes(client, node("n2"), node("n3"))
            await eventually(lambda: on_nodes(client, {"n1", "n2", "n3"}), timeout=20)
            await client.delete("nodes", "n2")
            await eventually(lambda: on_nodes(client, {"n1", "n3"}), timeout=20)
            await eventually(lambda: status_shows(client, desiredNumberScheduled=2,
                                                  currentNumberScheduled=2), timeout=20)
            # A deleted pod comes back; a failed one is replaced.
            pod = (await pods_by_node(client))["n1"][0]
            await client.delete("pods", pod["metadata"]["name"], NS)

            async def replaced_on_n1() -> bool:
                pods = (await pods_by_node(client)).get("n1") or []
                return len(pods) == 1 and pods[0]["metadata"]["uid"] != pod["metadata"]["uid"]

            await eventually(replaced_on_n1, timeout=20)
            pod = (await pods_by_node(client))["n3"][0]
            pod["status"] = {"phase": "Failed"}
            await client.update_status("pods", pod)

            async def replaced_on_n3() -> bool:
                pods = (await pods_by_node(client)).get("n3") or []
                return len(pods) == 1 and pods[0]["metadata"]["uid"] != pod["metadata"]["uid"]

            await eventually(replaced_on_n3, timeout=20)

    asyncio.run(scenario())


def test_rolling_update_within_max_unavailable(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"daemonset"})):
            await add_nodes(client, node("n1"), node("n2"), node("n3"))
            await client.create(DS, daemonset())
            found = await eventually(lambda: on_nodes(client, {"n1", "n2", "n3"}), timeout=20)
            for pods in found.values():
                await make_ready(client, pods[0])
            await eventually(lambda: status_shows(client, numberAvailable=3), timeout=20)

            await client.patch(DS, "agent", {"spec": {"template": {"spec": {"containers": [
                {"name": "a", "image": "agent:2"}]}}}}, NS, patch_type="strategic")

            async def images() -> dict[str, str]:
                return {n: p[0]["spec"]["containers"][0]["image"]
                        for n, p in (await pods_by_node(client)).items() if p}

            # maxUnavailable 1: one node at a time, the next only after it is ready.
            for step in range(1, 4):
                async def updated(count: int = step) -> dict[str, str] | None:
                    shown = await images()
                    fresh = [n for n, i in shown.items() if i == "agent:2"]
                    return shown if len(fresh) == count and len(shown) == 3 else None

                shown = await eventually(updated, timeout=20)
                assert list(shown.values()).count("agent:1") == 3 - step
                current = await pods_by_node(client)
                new_node = next(n for n, i in shown.items() if i == "agent:2" and not any(
                    c.get("type") == "Ready"
                    for c in (current[n][0].get("status") or {}).get("conditions") or []))
                await make_ready(client, current[new_node][0])
            await eventually(lambda: status_shows(client, updatedNumberScheduled=3,
                                                  numberAvailable=3), timeout=20)
            revisions = sorted((await client.list("controllerrevisions.apps", NS))["items"],
                               key=lambda r: r["revision"])
            assert [r["revision"] for r in revisions] == [1, 2]

            # Rolling back to the first template renumbers its revision.
            await client.patch(DS, "agent", revisions[0]["data"], NS, patch_type="strategic")

            async def rolled_back() -> list[Obj] | None:
                items = (await client.list("controllerrevisions.apps", NS))["items"]
                by_name = {r["metadata"]["name"]: r["revision"] for r in items}
                return items if by_name.get(revisions[0]["metadata"]["name"]) == 3 else None

            await eventually(rolled_back, timeout=20)

    asyncio.run(scenario())


def test_surge_and_on_delete(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"daemonset"})):
            await add_nodes(client, node("n1"), node("n2"))
            await client.create(DS, daemonset("surge", strategy={
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}))
            await client.create(DS, daemonset("manual", strategy={"type": "OnDelete"}))
            for app in ("surge", "manual"):
                found = await eventually(functools.partial(on_nodes, client, {"n1", "n2"}, app),
                                         timeout=20)
                for pods in found.values():
                    await make_ready(client, pods[0])
                # An old pod not yet seen available would be replaced at once.
                await eventually(functools.partial(status_shows, client, app, numberAvailable=2),
                                 timeout=20)
            for app in ("surge", "manual"):
                await client.patch(DS, app, {"spec": {"template": {"spec": {"containers": [
                    {"name": "a", "image": "agent:2"}]}}}}, NS, patch_type="strategic")

            # Surge: a new pod starts beside the old one, which stays until it is ready.
            async def doubled() -> tuple[str, list[Obj]] | None:
                for node_name, pods in (await pods_by_node(client, "surge")).items():
                    if len(pods) == 2:
                        return node_name, pods
                return None

            node_name, pods = await eventually(doubled, timeout=20)
            assert len([n for n, p in (await pods_by_node(client, "surge")).items()
                        if len(p) == 2]) == 1, "maxSurge 1: one extra pod at a time"
            new = next(p for p in pods if p["spec"]["containers"][0]["image"] == "agent:2")
            await make_ready(client, new)

            async def old_gone() -> bool:
                left = (await pods_by_node(client, "surge")).get(node_name) or []
                return [p["metadata"]["uid"] for p in left] == [new["metadata"]["uid"]]

            await eventually(old_gone, timeout=20)

            # OnDelete: nothing changes until a pod is deleted by hand.
            await eventually(lambda: status_shows(client, "manual", updatedNumberScheduled=None,
                                                  currentNumberScheduled=2), timeout=20)
            manual = await pods_by_node(client, "manual")
            assert {p[0]["spec"]["containers"][0]["image"] for p in manual.values()} == {
                "agent:1"}
            await client.delete("pods", manual["n1"][0]["metadata"]["name"], NS)

            async def n1_updated() -> bool:
                pods = (await pods_by_node(client, "manual")).get("n1") or []
                return len(pods) == 1 and pods[0]["spec"]["containers"][0]["image"] == "agent:2"

            await eventually(n1_updated, timeout=20)
            still = (await pods_by_node(client, "manual"))["n2"][0]
            assert still["spec"]["containers"][0]["image"] == "agent:1"

    asyncio.run(scenario())


def test_predicates() -> None:
    ds = daemonset(node_selector={"zone": "a"})
    assert ds_mod.node_should_run(node("x", labels={"zone": "a"}), ds) == (True, True)
    assert ds_mod.node_should_run(node("x", labels={"zone": "b"}), ds) == (False, False)
    no_exec = node("x", labels={"zone": "a"},
                   taints=[{"key": "k", "value": "v", "effect": "NoExecute"}])
    assert ds_mod.node_should_run(no_exec, ds) == (False, False)
    no_sched = node("x", labels={"zone": "a"}, taints=[{"key": "k", "effect": "NoSchedule"}])
    assert ds_mod.node_should_run(no_sched, ds) == (False, True)
    not_ready = node("x", labels={"zone": "a"}, taints=[
        {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}])
    assert ds_mod.node_should_run(not_ready, ds) == (True, True), "tolerated by default"
    affinity = daemonset()
    affinity["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "cpu", "operator": "Gt", "values": ["4"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["y"]}]},
        ]}}}
    assert ds_mod.node_should_run(node("x", labels={"cpu": "8"}), affinity)[0]
    assert not ds_mod.node_should_run(node("x", labels={"cpu": "2"}), affinity)[0]
    assert ds_mod.node_should_run(node("y"), affinity)[0]
    assert not ds_mod.node_should_run(node("x", labels={"cpu": "many"}), affinity)[0]
    assert ds_mod.scaled_value("25%", 3, True) == 1
    assert ds_mod.scaled_value("25%", 3, False) == 0
    assert ds_mod.scaled_value("bad%", 3, True) == 0
    assert ds_mod.rolling_limits(daemonset(strategy={
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}),
        4) == (0, 1)
