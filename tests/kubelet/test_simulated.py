"""Simulated nodes against a real API server: registration, Leases, and pods moved
through their lives (running, completing, failing, restarting, graceful deletion)."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

from kubi.api.errors import StatusError
from kubi.client.rest import Client
from kubi.kubelet import status as st
from kubi.kubelet.simulated import SimulatedNodes, pod_cidr, simulated_pool
from tests.harness import api_server, eventually, running

Obj = dict[str, Any]
NS = "default"


def fast_pool(client: Client, count: int = 2, **extra: Any) -> SimulatedNodes:
    return simulated_pool(client, count, heartbeat=0.5, job_duration=0.2,
                          restart_backoff=0.2, **extra)


def pod_manifest(name: str, *, policy: str = "Always", annotations: dict[str, str] | None = None,
                 init: bool = False, grace: int | None = None) -> Obj:
    spec: Obj = {"restartPolicy": policy,
                 "containers": [{"name": "app", "image": "nginx",
                                 "volumeMounts": [{"name": "data", "mountPath": "/data",
                                                   "readOnly": True}]},
                                {"name": "side", "image": "busybox:1.36"}],
                 "volumes": [{"name": "data", "emptyDir": {}}]}
    if init:
        spec["initContainers"] = [{"name": "setup", "image": "busybox:1.36"}]
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "annotations": annotations or {}},
            "spec": spec}


async def bind(client: Client, name: str, node: str) -> None:
    await client.post("pods", name, "binding", {
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": NS},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}}, NS)


async def create_bound(client: Client, manifest: Obj, node: str = "kubi-sim-0") -> Obj:
    created = await client.create("pods", manifest, NS)
    await bind(client, manifest["metadata"]["name"], node)
    return created


def phase_is(client: Client, name: str, phase: str) -> Any:
    async def check() -> Obj | None:
        pod = await client.get("pods", name, NS)
        return pod if pod["status"].get("phase") == phase else None
    return check


def condition(obj: Obj, kind: str) -> Obj:
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


def test_nodes_register_ready_with_leases(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_api, client):
            pool = fast_pool(client, 3)
            async with running(pool.run()):
                async def all_leased() -> list[Obj]:
                    leases = (await client.list("leases.coordination.k8s.io",
                                                "kube-node-lease"))["items"]
                    return leases if len(leases) == 3 else []
                leases = await eventually(all_leased, 20)
                nodes = {n["metadata"]["name"]: n for n in (await client.list("nodes"))["items"]}
                assert set(nodes) == {"kubi-sim-0", "kubi-sim-1", "kubi-sim-2"}
                node = nodes["kubi-sim-1"]
                assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "kubi-sim-1"
                assert node["metadata"]["labels"]["kubernetes.io/os"] == "linux"
                assert node["metadata"]["labels"]["node.kubernetes.io/instance-type"] == \
                    "kubi-simulated"
                assert node["metadata"]["annotations"]["kubi.dev/simulated"] == "true"
                assert node["spec"]["podCIDR"] == "10.42.1.0/24"
                assert node["spec"]["podCIDRs"] == ["10.42.1.0/24"]
                types = [c["type"] for c in node["status"]["conditions"]]
                assert types == ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
                ready = condition(node, "Ready")
                assert (ready["status"], ready["reason"], ready["message"]) == \
                    ("True", "KubeletReady", "kubelet is posting ready status")
                memory = condition(node, "MemoryPressure")
                assert (memory["status"], memory["reason"]) == \
                    ("False", "KubeletHasSufficientMemory")
                assert node["status"]["capacity"]["pods"] == "110"
                assert node["status"]["allocatable"]["cpu"] == "32"
                addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
                assert addresses["Hostname"] == "kubi-sim-1"
                assert ipaddress.ip_address(addresses["InternalIP"]).is_private
                for lease in leases:
                    name = lease["metadata"]["name"]
                    assert lease["spec"]["holderIdentity"] == name
                    assert lease["spec"]["leaseDurationSeconds"] == 40
                    assert lease["metadata"]["ownerReferences"] == [{
                        "apiVersion": "v1", "kind": "Node", "name": name,
                        "uid": nodes[name]["metadata"]["uid"]}]
                first = leases[0]["spec"]["renewTime"]

                async def renewed() -> bool:
                    lease = await client.get("leases.coordination.k8s.io",
                                             leases[0]["metadata"]["name"], "kube-node-lease")
                    return bool(lease["spec"]["renewTime"] != first)
                await eventually(renewed, 20)

    asyncio.run(scenario())


def test_bound_pod_runs_ready_with_ip(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_api, client):
            pool = fast_pool(client)
            async with running(pool.run()):
                await create_bound(client, pod_manifest("web", init=True))
                pod = await eventually(phase_is(client, "web", "Running"), 20)
                node = await client.get("nodes", "kubi-sim-0")
                status = pod["status"]
                assert ipaddress.ip_address(status["podIP"]) in \
                    ipaddress.ip_network(node["spec"]["podCIDR"])
                assert status["podIPs"] == [{"ip": status["podIP"]}]
                internal = next(a["address"] for a in node["status"]["addresses"]
                                if a["type"] == "InternalIP")
                assert status["hostIP"] == internal
                assert status["hostIPs"] == [{"ip": internal}]
                assert status["qosClass"] == "BestEffort"
                assert status["startTime"]
                assert [c["type"] for c in status["conditions"]] == [
                    "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
                    "PodScheduled"]
                assert all(c["status"] == "True" for c in status["conditions"])
                (init,) = status["initContainerStatuses"]
                assert init["state"]["terminated"]["reason"] == "Completed"
                assert init["ready"] is True and init["started"] is False
                app, side = status["containerStatuses"]
                assert app["name"] == "app" and "running" in app["state"]
                assert app["ready"] is True and app["started"] is True
                assert app["restartCount"] == 0 and app["lastState"] == {}
                assert app["image"] == "docker.io/library/nginx:latest"
                assert app["imageID"].startswith("docker.io/library/nginx@sha256:")
                assert app["containerID"].startswith("kubi-simulated://")
                assert app["volumeMounts"] == [{"name": "data", "mountPath": "/data",
                                                "readOnly": True,
                                                "recursiveReadOnly": "Disabled"}]
                assert side["image"] == "docker.io/library/busybox:1.36"
                # Once Running, the kubelet leaves it alone: no further writes.
                rv = pod["metadata"]["resourceVersion"]
                await asyncio.sleep(0.5)
                assert (await client.get("pods", "web", NS))["metadata"]["resourceVersion"] == rv

                await create_bound(client, pod_manifest(
                    "lazy", annotations={"kubi.dev/simulate-not-ready": "true"}))
                lazy = await eventually(phase_is(client, "lazy", "Running"), 20)
                ready = condition(lazy, "Ready")
                assert (ready["status"], ready["reason"], ready["message"]) == (
                    "False", "ContainersNotReady", "containers with unready status: [app side]")
                ips = {pod["status"]["podIP"], lazy["status"]["podIP"]}
                assert len(ips) == 2

    asyncio.run(scenario())


def test_run_to_completion_and_failures(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_api, client):
            pool = fast_pool(client)
            async with running(pool.run()):
                await create_bound(client, pod_manifest("done", policy="Never"))
                await create_bound(client, pod_manifest(
                    "broken", policy="Never", annotations={"kubi.dev/simulate-exit-code": "3"}))
                await create_bound(client, pod_manifest(
                    "retry", policy="OnFailure",
                    annotations={"kubi.dev/simulate-exit-code": "2"}), "kubi-sim-1")
                await create_bound(client, pod_manifest(
                    "garbled", policy="Never",
                    annotations={"kubi.dev/simulate-exit-code": "three"}))

                done = await eventually(phase_is(client, "done", "Succeeded"), 20)
                for cs in done["status"]["containerStatuses"]:
                    term = cs["state"]["terminated"]
                    assert (term["exitCode"], term["reason"]) == (0, "Completed")
                    assert cs["ready"] is False and cs["started"] is False
                assert (condition(done, "Ready")["status"],
                        condition(done, "Ready")["reason"]) == ("False", "PodCompleted")
                assert condition(done, "PodReadyToStartContainers")["status"] == "False"
                assert done["status"]["podIP"]  # kept after completion, as upstream

                broken = await eventually(phase_is(client, "broken", "Failed"), 20)
                term = broken["status"]["containerStatuses"][0]["state"]["terminated"]
                assert (term["exitCode"], term["reason"]) == (3, "Error")

                # An unparseable exit code is ignored: the pod exits 0.
                await eventually(phase_is(client, "garbled", "Succeeded"), 20)

                async def restarted() -> Obj | None:
                    pod = await client.get("pods", "retry", NS)
                    statuses = pod["status"].get("containerStatuses") or []
                    return pod if statuses and statuses[0]["restartCount"] >= 2 else None
                retry = await eventually(restarted, 20)
                assert retry["status"]["phase"] == "Running"
                last = retry["status"]["containerStatuses"][0]["lastState"]["terminated"]
                assert (last["exitCode"], last["reason"]) == (2, "Error")

    asyncio.run(scenario())


def test_deletion_after_grace_period(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_api, client):
            pool = fast_pool(client)
            async with running(pool.run()):
                await create_bound(client, pod_manifest("slow", grace=1))
                await eventually(phase_is(client, "slow", "Running"), 20)
                await client.delete("pods", "slow", NS)
                # Graceful: still there, terminating, until the node finishes it.
                pod = await client.get("pods", "slow", NS)
                assert pod["metadata"]["deletionTimestamp"]

                async def gone() -> bool:
                    try:
                        await client.get("pods", "slow", NS)
                    except StatusError as err:
                        return err.code == 404
                    return False
                await eventually(gone, 20)

                # A pod holding a finalizer ends terminal, with its containers killed.
                manifest = pod_manifest("held", grace=0)
                manifest["metadata"]["finalizers"] = ["example.com/hold"]
                await create_bound(client, manifest)
                await eventually(phase_is(client, "held", "Running"), 20)
                await client.delete("pods", "held", NS, grace_period=0)
                held = await eventually(phase_is(client, "held", "Failed"), 20)
                term = held["status"]["containerStatuses"][0]["state"]["terminated"]
                assert term["exitCode"] == 137
                await client.patch("pods", "held", {"metadata": {"finalizers": None}}, NS)

    asyncio.run(scenario())


def test_stopped_node_leaves_pods_alone_until_started(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_api, client):
            pool = fast_pool(client)
            async with running(pool.run()):
                await eventually(lambda: _leases(client, 2), 20)
                pool.nodes["kubi-sim-1"].stop()
                await create_bound(client, pod_manifest("waiting"), "kubi-sim-1")
                await create_bound(client, pod_manifest("other"), "kubi-sim-0")
                await eventually(phase_is(client, "other", "Running"), 20)
                assert (await client.get("pods", "waiting", NS))["status"]["phase"] == "Pending"
                pool.nodes["kubi-sim-1"].start()
                await eventually(phase_is(client, "waiting", "Running"), 20)
                # A pod bound to a node no pool runs is nobody's business here.
                await create_bound(client, pod_manifest("stray"), "elsewhere")
                await asyncio.sleep(0.3)
                assert (await client.get("pods", "stray", NS))["status"]["phase"] == "Pending"

    asyncio.run(scenario())


async def _leases(client: Client, count: int) -> bool:
    items = (await client.list("leases.coordination.k8s.io", "kube-node-lease"))["items"]
    return len(items) == count


def test_pod_cidrs_and_status_helpers() -> None:
    assert pod_cidr("10.42.0.0/16", 0, 3) == "10.42.0.0/24"
    assert pod_cidr("10.42.0.0/16", 255, 256) == "10.42.255.0/24"
    # More nodes than /24s in the base: smaller equal slices, all inside the base.
    slices = {pod_cidr("10.42.0.0/16", i, 5000) for i in range(5000)}
    assert len(slices) == 5000
    base = ipaddress.IPv4Network("10.42.0.0/16")
    assert all(ipaddress.IPv4Network(s).subnet_of(base) for s in slices)
    assert st.normalize_image("nginx") == "docker.io/library/nginx:latest"
    assert st.normalize_image("bitnami/redis:7") == "docker.io/bitnami/redis:7"
    assert st.normalize_image("registry.k8s.io/pause:3.10") == "registry.k8s.io/pause:3.10"
    assert st.normalize_image("localhost:5000/app") == "localhost:5000/app:latest"
    facts = st.NodeFacts(name="n", internal_ip="10.254.0.1")
    first = st.node_status(facts, heartbeat="2024-01-01T00:00:00Z")
    later = st.node_status(facts, first, heartbeat="2024-01-01T00:05:00Z")
    ready = next(c for c in later["conditions"] if c["type"] == "Ready")
    assert ready["lastHeartbeatTime"] == "2024-01-01T00:05:00Z"
    assert ready["lastTransitionTime"] == "2024-01-01T00:00:00Z"
    assert not st.node_status_changed(first, later)
    facts.not_ready_reason = "container runtime is down"
    down = st.node_status(facts, later, heartbeat="2024-01-01T00:06:00Z")
    ready = next(c for c in down["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == (
        "False", "KubeletNotReady", "2024-01-01T00:06:00Z")
    assert st.node_status_changed(later, down)
