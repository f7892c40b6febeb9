"""The scheduler against a real in-process API server: pods go where upstream would put
them, and unschedulable pods say why in upstream's words."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kubi.client.rest import Client
from kubi.scheduler import Scheduler, run_scheduler
from tests.harness import api_server, eventually, running

Obj = dict[str, Any]
PREEMPTION_3 = ("preemption: 0/3 nodes are available: 3 Preemption is not helpful for "
                "scheduling.")


def make_node(name: str, cpu: str = "4", memory: str = "8Gi", pods: str = "110", *,
              labels: dict[str, str] | None = None, taints: list[Obj] | None = None,
              ready: bool = True, unschedulable: bool = False) -> Obj:
    resources = {"cpu": cpu, "memory": memory, "pods": pods}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name,
                     "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {"capacity": resources, "allocatable": resources,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def make_pod(name: str, cpu: str = "100m", memory: str = "64Mi", *,
             labels: dict[str, str] | None = None, **spec: Any) -> Obj:
    container: Obj = {"name": "c", "image": "busybox:1.36",
                      "resources": {"requests": {"cpu": cpu, "memory": memory}}}
    if "ports" in spec:
        container["ports"] = spec.pop("ports")
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels or {}},
            "spec": {"containers": [container], **spec}}


async def add_nodes(client: Client, *nodes: Obj) -> None:
    for node in nodes:
        await client.create("nodes", node)


async def add_pods(client: Client, *pods: Obj) -> None:
    for pod in pods:
        await client.create("pods", pod, "default")


async def node_of(client: Client, name: str) -> str:
    return str((await client.get("pods", name, "default"))["spec"].get("nodeName") or "")


async def bound(client: Client, *names: str) -> dict[str, str]:
    """Wait until every named pod is bound; their nodes."""
    async def check() -> dict[str, str] | None:
        found = {n: await node_of(client, n) for n in names}
        return found if all(found.values()) else None
    return await eventually(check, timeout=20)


async def condition(client: Client, name: str) -> Obj:
    async def check() -> Obj | None:
        pod = await client.get("pods", name, "default")
        return next((c for c in (pod.get("status") or {}).get("conditions") or []
                     if c["type"] == "PodScheduled" and c["status"] == "False"), None)
    return await eventually(check, timeout=20)


async def events_for(client: Client, name: str, reason: str) -> list[Obj]:
    async def check() -> list[Obj] | None:
        listed = await client.list("events", "default")
        found = [e for e in listed["items"] if e["involvedObject"]["name"] == name
                 and e["reason"] == reason]
        return found or None
    return await eventually(check, timeout=20)


def scenario(body: Any, tmp_path: Path) -> None:
    async def main() -> None:
        async with api_server(tmp_path) as (_api, client):
            await body(client)
    asyncio.run(main())


def test_pods_spread_over_nodes_by_resources(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        await add_nodes(client, *(make_node(f"node-{i}", cpu="1") for i in range(3)))
        async with running(run_scheduler(client)):
            await add_pods(client, *(make_pod(f"p{i}", cpu="300m") for i in range(9)))
            placed = await bound(client, *(f"p{i}" for i in range(9)))
        per_node: dict[str, int] = {}
        for node in placed.values():
            per_node[node] = per_node.get(node, 0) + 1
        # 3 x 300m fit a 1-cpu node; LeastAllocated spreads them evenly.
        assert per_node == {"node-0": 3, "node-1": 3, "node-2": 3}
        events = await events_for(client, "p0", "Scheduled")
        assert events[0]["message"] == f"Successfully assigned default/p0 to {placed['p0']}"
        assert events[0]["type"] == "Normal"
        pod = await client.get("pods", "p0", "default")
        scheduled = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
        assert scheduled["status"] == "True"
    scenario(body, tmp_path)


def test_insufficient_cpu_and_taint_message(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        # Upstream prints a taint as {key: value}.
        taint = [{"key": "node-role", "value": "infra", "effect": "NoSchedule"}]
        await add_nodes(client, make_node("node-1", cpu="1"),
                        make_node("node-2", taints=taint), make_node("node-3", taints=taint))
        async with running(run_scheduler(client)):
            await add_pods(client, make_pod("big", cpu="2"))
            found = await condition(client, "big")
            message = ("0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated "
                       "taint {node-role: infra}. " + PREEMPTION_3)
            assert found["reason"] == "Unschedulable"
            assert found["message"] == message
            events = await events_for(client, "big", "FailedScheduling")
            assert events[0]["type"] == "Warning"
            assert events[0]["message"] == message
            assert await node_of(client, "big") == ""
    scenario(body, tmp_path)


def test_taint_value_in_message_and_toleration(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        taint = [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]
        await add_nodes(client, make_node("node-1", taints=taint))
        async with running(run_scheduler(client)):
            await add_pods(client, make_pod("plain"), make_pod("tolerant", tolerations=[
                {"key": "dedicated", "operator": "Equal", "value": "gpu",
                 "effect": "NoSchedule"}]))
            assert await bound(client, "tolerant") == {"tolerant": "node-1"}
            found = await condition(client, "plain")
            assert found["message"] == (
                "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}. "
                "preemption: 0/1 nodes are available: 1 Preemption is not helpful for "
                "scheduling.")
    scenario(body, tmp_path)


def test_node_selector_and_node_affinity(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        await add_nodes(client, make_node("node-a", labels={"disk": "ssd", "zone": "a"}),
                        make_node("node-b", labels={"disk": "hdd", "zone": "b"}),
                        make_node("node-c", labels={"zone": "c"}))
        affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["b", "c"]},
                {"key": "disk", "operator": "DoesNotExist"}]}]}}}
        preferred = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "preference": {"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["b"]}]}}]}}
        async with running(run_scheduler(client)):
            await add_pods(client, make_pod("ssd", nodeSelector={"disk": "ssd"}),
                           make_pod("affine", affinity=affinity),
                           make_pod("prefers-b", affinity=preferred),
                           make_pod("nowhere", nodeSelector={"disk": "nvme"}))
            placed = await bound(client, "ssd", "affine", "prefers-b")
            assert placed == {"ssd": "node-a", "affine": "node-c", "prefers-b": "node-b"}
            found = await condition(client, "nowhere")
            assert found["message"] == (
                "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. "
                + PREEMPTION_3)
    scenario(body, tmp_path)


def test_pod_anti_affinity_puts_replicas_on_different_nodes(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        await add_nodes(client, *(make_node(f"node-{i}") for i in range(3)))
        anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}},
             "topologyKey": "kubernetes.io/hostname"}]}}
        async with running(run_scheduler(client)):
            await add_pods(client, *(make_pod(f"web-{i}", labels={"app": "web"}, affinity=anti)
                                     for i in range(4)))
            placed = await bound(client, "web-0", "web-1", "web-2")
            assert sorted(placed.values()) == ["node-0", "node-1", "node-2"]
            found = await condition(client, "web-3")
            assert found["message"] == (
                "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. "
                + PREEMPTION_3)
    scenario(body, tmp_path)


def test_pod_affinity_follows_the_target(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        await add_nodes(client, *(make_node(f"node-{i}") for i in range(3)))
        affinity = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}},
             "topologyKey": "kubernetes.io/hostname"}]}}
        async with running(run_scheduler(client)):
            await add_pods(client, make_pod("db", labels={"app": "db"}))
            target = (await bound(client, "db"))["db"]
            await add_pods(client, make_pod("cache", affinity=affinity))
            assert (await bound(client, "cache"))["cache"] == target
    scenario(body, tmp_path)


def test_host_port_conflict(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        await add_nodes(client, make_node("node-1"))
        ports = [{"containerPort": 80, "hostPort": 8080}]
        async with running(run_scheduler(client)):
            await add_pods(client, make_pod("first", ports=ports))
            assert await bound(client, "first") == {"first": "node-1"}
            await add_pods(client, make_pod("second", ports=[dict(p) for p in ports]),
                           make_pod("udp", ports=[{"containerPort": 80, "hostPort": 8080,
                                                   "protocol": "UDP"}]))
            assert await bound(client, "udp") == {"udp": "node-1"}
            found = await condition(client, "second")
            assert found["message"] == (
                "0/1 nodes are available: 1 node(s) didn't have free ports for the requested "
                "pod ports. preemption: 0/1 nodes are available: 1 Preemption is not helpful "
                "for scheduling.")
    scenario(body, tmp_path)


def test_pending_pod_scheduled_when_a_fitting_node_arrives(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        await add_nodes(client, make_node("small", cpu="1"))
        async with running(run_scheduler(client)):
            await add_pods(client, make_pod("big", cpu="3"))
            found = await condition(client, "big")
            assert found["message"].startswith("0/1 nodes are available: 1 Insufficient cpu.")
            await add_nodes(client, make_node("large", cpu="8"))
            assert await bound(client, "big") == {"big": "large"}
    scenario(body, tmp_path)


def test_pending_pod_scheduled_when_a_pod_is_deleted(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        await add_nodes(client, make_node("only", cpu="1"))
        async with running(run_scheduler(client)):
            await add_pods(client, make_pod("hog", cpu="800m"))
            await bound(client, "hog")
            await add_pods(client, make_pod("waiting", cpu="500m"))
            await condition(client, "waiting")
            await client.delete("pods", "hog", "default", grace_period=0)
            assert await bound(client, "waiting") == {"waiting": "only"}
    scenario(body, tmp_path)


def test_cordoned_and_not_ready_nodes_are_skipped(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        await add_nodes(client, make_node("cordoned", unschedulable=True),
                        make_node("down", ready=False), make_node("fine", cpu="1"))
        async with running(run_scheduler(client)):
            await add_pods(client, *(make_pod(f"p{i}") for i in range(3)),
                           make_pod("big", cpu="2"))
            placed = await bound(client, "p0", "p1", "p2")
            assert set(placed.values()) == {"fine"}
            found = await condition(client, "big")
            assert found["message"] == (
                "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint "
                "{node.kubernetes.io/not-ready: }, 1 node(s) were unschedulable. " + PREEMPTION_3)
            # Uncordoning is a cluster event that brings the pod back.
            await client.patch("nodes", "cordoned", {"spec": {"unschedulable": False}})
            assert await bound(client, "big") == {"big": "cordoned"}
    scenario(body, tmp_path)


def test_other_scheduler_name_and_bound_pods_are_ignored(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        await add_nodes(client, make_node("node-1", cpu="1"), make_node("node-2", cpu="1"))
        scheduler = Scheduler(client)
        async with running(scheduler.run()):
            await add_pods(client, make_pod("theirs", schedulerName="other-scheduler"),
                           make_pod("preset", cpu="900m", nodeName="node-2"),
                           make_pod("mine", cpu="500m"))
            # node-2 is full with the pre-bound pod: ours must land on node-1.
            assert await bound(client, "mine") == {"mine": "node-1"}
            await eventually(lambda: _settled(scheduler), timeout=10)
            assert await node_of(client, "theirs") == ""
            pod = await client.get("pods", "theirs", "default")
            assert not (pod.get("status") or {}).get("conditions")
            assert scheduler.scheduled == 1
            assert scheduler.queue.where("default/theirs") == ""
    scenario(body, tmp_path)


async def _settled(scheduler: Scheduler) -> bool:
    return not scheduler.queue.pending()["active"] and not scheduler.cache.assumed


def test_no_nodes(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        async with running(run_scheduler(client)):
            await add_pods(client, make_pod("alone"))
            found = await condition(client, "alone")
            assert found == {**found, "reason": "Unschedulable",
                             "message": "no nodes available to schedule pods"}
    scenario(body, tmp_path)


def test_topology_spread_do_not_schedule(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        await add_nodes(client, make_node("a1", labels={"zone": "a"}),
                        make_node("a2", labels={"zone": "a"}),
                        make_node("b1", labels={"zone": "b"}), make_node("nolabel"))
        spread = [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                   "labelSelector": {"matchLabels": {"app": "s"}}}]
        async with running(run_scheduler(client)):
            names = [f"s{i}" for i in range(4)]
            for name in names:  # one at a time so each sees the previous placements
                await add_pods(client, make_pod(name, labels={"app": "s"},
                                                topologySpreadConstraints=spread))
                await bound(client, name)
            placed = await bound(client, *names)
        zones = [("b" if n == "b1" else "a") for n in placed.values()]
        assert "nolabel" not in placed.values()
        assert zones.count("a") == 2 and zones.count("b") == 2
    scenario(body, tmp_path)


def test_wait_for_first_consumer_claim_gets_selected_node(tmp_path: Path) -> None:
    async def body(client: Client) -> None:
        await add_nodes(client, make_node("node-1"))
        await client.create("storageclasses.storage.k8s.io", {
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "late"}, "provisioner": "example.com/disk",
            "volumeBindingMode": "WaitForFirstConsumer"})
        await client.create("persistentvolumeclaims", {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "default"},
            "spec": {"storageClassName": "late", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}, "default")
        volume = [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]
        missing = [{"name": "v", "persistentVolumeClaim": {"claimName": "nope"}}]
        async with running(run_scheduler(client)):
            await add_pods(client, make_pod("user", volumes=volume),
                           make_pod("orphan", volumes=missing))
            assert await bound(client, "user") == {"user": "node-1"}
            claim = await client.get("persistentvolumeclaims", "data", "default")
            assert claim["metadata"]["annotations"][
                "volume.kubernetes.io/selected-node"] == "node-1"
            found = await condition(client, "orphan")
            assert found["message"] == (
                '0/1 nodes are available: persistentvolumeclaim "nope" not found. '
                "preemption: 0/1 nodes are available: 1 Preemption is not helpful for "
                "scheduling.")
    scenario(body, tmp_path)
