"""The node lifecycle controller with simulated nodes: a node that stops heartbeating goes
Unknown and tainted, its pods are marked not ready and evicted per their tolerations, and
everything recovers when the heartbeats resume."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kubi.api.errors import StatusError
from kubi.client.rest import Client
from kubi.controllers.base import ControllerOptions
from kubi.controllers.manager import run_controllers
from kubi.controllers.nodelifecycle import (
    matching_tolerations,
    min_toleration_seconds,
    no_schedule_taints,
    tolerates,
    zone_state,
)
from kubi.kubelet.simulated import simulated_pool
from tests.harness import api_server, eventually, running

Obj = dict[str, Any]
NS = "default"
SICK = "kubi-sim-1"


def pod(name: str, tolerations: list[Obj] | None = None) -> Obj:
    spec: Obj = {"containers": [{"name": "c", "image": "nginx"}]}
    if tolerations is not None:
        spec["tolerations"] = tolerations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": spec}


async def run_on(client: Client, manifest: Obj, node: str) -> None:
    name = manifest["metadata"]["name"]
    await client.create("pods", manifest, NS)
    await client.post("pods", name, "binding", {
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": NS},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}}, NS)

    async def ready() -> bool:
        got = await client.get("pods", name, NS)
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in got["status"].get("conditions") or [])
    await eventually(ready, 20)


def taint_keys(node: Obj) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in node["spec"].get("taints") or []}


def conditions(node: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in node["status"]["conditions"]}


async def events_for(client: Client, name: str, reason: str) -> list[Obj]:
    items = (await client.list("events", NS))["items"]
    return [e for e in items if e["involvedObject"]["name"] == name and e["reason"] == reason]


def test_silent_node_goes_unknown_tainted_evicted_and_recovers(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_api, client):
            pool = simulated_pool(client, 3, heartbeat=0.2, job_duration=0.2)
            options = ControllerOptions(node_monitor_grace_period=1.5)
            async with running(pool.run(), run_controllers(client, options,
                                                           only={"nodelifecycle"})):
                await run_on(client, pod("quick", [
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                     "effect": "NoExecute", "tolerationSeconds": 1}]), SICK)
                await run_on(client, pod("forever", [
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                     "effect": "NoExecute"}]), SICK)
                await run_on(client, pod("elsewhere"), "kubi-sim-0")
                # The API server's default tolerations: 300 s for unreachable/not-ready.
                defaulted = await client.get("pods", "elsewhere", NS)
                assert {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                        "effect": "NoExecute", "tolerationSeconds": 300} in \
                    defaulted["spec"]["tolerations"]

                pool.nodes[SICK].stop()

                async def unknown() -> Obj | None:
                    node = await client.get("nodes", SICK)
                    wanted = {("node.kubernetes.io/unreachable", "NoExecute"),
                              ("node.kubernetes.io/unreachable", "NoSchedule")}
                    return node if wanted <= taint_keys(node) else None
                node = await eventually(unknown, 20)
                for kind in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure"):
                    condition = conditions(node)[kind]
                    assert (condition["status"], condition["reason"], condition["message"]) == (
                        "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
                assert all(t.get("timeAdded") for t in node["spec"]["taints"])

                async def evicted() -> Obj | None:
                    got = await client.get("pods", "quick", NS)
                    return got if got["metadata"].get("deletionTimestamp") else None
                quick = await eventually(evicted, 20)
                target = next(c for c in quick["status"]["conditions"]
                              if c["type"] == "DisruptionTarget")
                assert (target["status"], target["reason"]) == ("True", "DeletionByTaintManager")
                assert await eventually(lambda: events_for(client, "quick",
                                                           "TaintManagerEviction"), 10)
                marking = (await events_for(client, "quick", "TaintManagerEviction"))[0]
                assert marking["message"] == "Marking for deletion Pod default/quick"
                assert await eventually(lambda: events_for(client, SICK, "NodeNotReady"), 10)

                forever = await client.get("pods", "forever", NS)
                assert "deletionTimestamp" not in forever["metadata"]
                ready = next(c for c in forever["status"]["conditions"] if c["type"] == "Ready")
                assert ready["status"] == "False"
                # Pods on healthy nodes are untouched.
                elsewhere = await client.get("pods", "elsewhere", NS)
                assert "deletionTimestamp" not in elsewhere["metadata"]
                healthy = await client.get("nodes", "kubi-sim-0")
                assert not taint_keys(healthy)

                pool.nodes[SICK].start()

                async def recovered() -> Obj | None:
                    node = await client.get("nodes", SICK)
                    ok = conditions(node)["Ready"]["status"] == "True" and not taint_keys(node)
                    return node if ok else None
                node = await eventually(recovered, 20)
                assert conditions(node)["Ready"]["reason"] == "KubeletReady"

                async def ready_again() -> bool:
                    got = await client.get("pods", "forever", NS)
                    return any(c["type"] == "Ready" and c["status"] == "True"
                               for c in got["status"]["conditions"])
                await eventually(ready_again, 20)

    asyncio.run(scenario())


def test_not_ready_cordon_and_untolerated_taints(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_api, client):
            pool = simulated_pool(client, 3, heartbeat=0.2)
            options = ControllerOptions(node_monitor_grace_period=5)
            async with running(pool.run(), run_controllers(client, options,
                                                           only={"nodelifecycle"})):
                await run_on(client, pod("victim"), "kubi-sim-0")
                await run_on(client, pod("survivor", [
                    {"key": "example.com/drain", "operator": "Exists", "effect": "NoExecute"}]),
                    "kubi-sim-0")

                # A kubelet reporting NotReady: not-ready taints, swapped back when Ready.
                pool.nodes[SICK].set_ready(False)

                async def not_ready() -> bool:
                    node = await client.get("nodes", SICK)
                    return {("node.kubernetes.io/not-ready", "NoExecute"),
                            ("node.kubernetes.io/not-ready", "NoSchedule")} <= taint_keys(node)
                await eventually(not_ready, 20)
                node = await client.get("nodes", SICK)
                ready = conditions(node)["Ready"]
                assert (ready["status"], ready["reason"]) == ("False", "KubeletNotReady")
                pool.nodes[SICK].set_ready(True)

                async def clean(name: str) -> bool:
                    return not taint_keys(await client.get("nodes", name))
                await eventually(lambda: clean(SICK), 20)

                # kubectl cordon / uncordon.
                await client.patch("nodes", "kubi-sim-2", {"spec": {"unschedulable": True}})

                async def cordoned() -> bool:
                    node = await client.get("nodes", "kubi-sim-2")
                    return ("node.kubernetes.io/unschedulable", "NoSchedule") in taint_keys(node)
                await eventually(cordoned, 20)
                await client.patch("nodes", "kubi-sim-2", {"spec": {"unschedulable": False}})
                await eventually(lambda: clean("kubi-sim-2"), 20)

                # A user's NoExecute taint evicts every pod that does not tolerate it, at once.
                node = await client.get("nodes", "kubi-sim-0")
                node["spec"]["taints"] = [{"key": "example.com/drain", "effect": "NoExecute"}]
                await client.update("nodes", node)

                async def victim_evicted() -> bool:
                    try:
                        got = await client.get("pods", "victim", NS)
                    except StatusError as err:
                        return err.code == 404
                    return bool(got["metadata"].get("deletionTimestamp"))
                await eventually(victim_evicted, 20)
                survivor = await client.get("pods", "survivor", NS)
                assert "deletionTimestamp" not in survivor["metadata"]
                # A user's taint is not the controller's to remove.
                node = await client.get("nodes", "kubi-sim-0")
                assert taint_keys(node) == {("example.com/drain", "NoExecute")}

    asyncio.run(scenario())


def test_toleration_matching_and_zone_states() -> None:
    taint = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}
    assert tolerates({"operator": "Exists"}, taint)
    assert tolerates({"key": "node.kubernetes.io/unreachable", "operator": "Exists"}, taint)
    assert not tolerates({"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                          "effect": "NoSchedule"}, taint)
    valued = {"key": "k", "value": "v", "effect": "NoExecute"}
    assert tolerates({"key": "k", "value": "v"}, valued)
    assert not tolerates({"key": "k", "value": "w"}, valued)
    # Equal needs a key: an empty key with Equal tolerates nothing.
    # As upstream's ToleratesTaint: an empty key matches every key (validation forbids
    # an empty key with Equal, so stored pods never carry this toleration).
    assert tolerates({"operator": "Equal", "value": "v"}, valued)
    ok, used = matching_tolerations([taint, valued], [
        {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
        {"key": "k", "value": "v", "tolerationSeconds": 5}])
    assert ok and min_toleration_seconds(used) == 60  # the first match is used for each
    assert not matching_tolerations([valued], [{"key": "other", "operator": "Exists"}])[0]
    assert min_toleration_seconds([{"operator": "Exists"}]) == -1
    assert min_toleration_seconds([{"tolerationSeconds": -5}, {"tolerationSeconds": 9}]) == 0
    assert zone_state(["True", "True", "Unknown"]) == "Normal"
    assert zone_state(["Unknown", "False"]) == "FullDisruption"
    assert zone_state(["True", "Unknown", "Unknown", "False"]) == "PartialDisruption"
    node = {"spec": {"unschedulable": True}, "status": {"conditions": [
        {"type": "Ready", "status": "Unknown"}, {"type": "DiskPressure", "status": "True"},
        {"type": "MemoryPressure", "status": "False"}]}}
    assert {t["key"] for t in no_schedule_taints(node)} == {
        "node.kubernetes.io/unreachable", "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/unschedulable"}
