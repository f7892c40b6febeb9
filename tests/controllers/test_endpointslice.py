"""The EndpointSlice controller against a real API server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kubi.client.rest import Client
from kubi.controllers.manager import run_controllers
from tests.controllers.test_endpoints import pod, service, start_pod
from tests.harness import api_server, eventually, running

Obj = dict[str, Any]
NS = "default"
SLICES = "endpointslices.discovery.k8s.io"


async def make_node(client: Client, name: str, zone: str = "") -> None:
    labels = {"topology.kubernetes.io/zone": zone} if zone else {}
    await client.create("nodes", {"apiVersion": "v1", "kind": "Node",
                                  "metadata": {"name": name, "labels": labels}})


async def slices_of(client: Client, service_name: str) -> list[Obj]:
    listed = await client.list(SLICES, NS,
                               label_selector=f"kubernetes.io/service-name={service_name}")
    return list(listed["items"])


def endpoints_by_pod(slices: list[Obj]) -> dict[str, Obj]:
    return {e["targetRef"]["name"]: e for s in slices for e in s.get("endpoints") or []}


def test_slices_carry_endpoints_with_conditions_and_topology(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await make_node(client, "node-1", "zone-a")
            web1 = await start_pod(client, pod("web-1"), "10.0.0.1", ready=True)
            await start_pod(client, pod("web-2"), "10.0.0.2", ready=False)
            await start_pod(client, pod("lost", node="node-gone"), "10.0.0.3", ready=True)
            svc = await client.create("services", service("web", {"app": "web"}))
            async with running(run_controllers(client, only={"endpointslice"})):
                async def two_endpoints() -> list[Obj] | None:
                    slices = await slices_of(client, "web")
                    return slices if len(endpoints_by_pod(slices)) == 2 else None

                [found] = await eventually(two_endpoints, timeout=20)
                meta = found["metadata"]
                assert meta["name"].startswith("web-") and len(meta["name"]) == len("web-") + 5
                assert meta["labels"] == {
                    "team": "blue", "kubernetes.io/service-name": "web",
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
                assert meta["ownerReferences"] == [{
                    "apiVersion": "v1", "kind": "Service", "name": "web",
                    "uid": svc["metadata"]["uid"], "controller": True,
                    "blockOwnerDeletion": True}]
                assert "endpoints.kubernetes.io/last-change-trigger-time" in meta["annotations"]
                assert found["addressType"] == "IPv4"
                assert sorted(found["ports"], key=lambda p: p["port"]) == [
                    {"name": "http", "port": 8080, "protocol": "TCP"},
                    {"name": "metrics", "port": 9090, "protocol": "TCP"}]
                endpoints = endpoints_by_pod([found])
                assert endpoints["web-1"] == {
                    "addresses": ["10.0.0.1"],
                    "conditions": {"ready": True, "serving": True, "terminating": False},
                    "targetRef": {"kind": "Pod", "namespace": NS, "name": "web-1",
                                  "uid": web1["metadata"]["uid"]},
                    "nodeName": "node-1", "zone": "zone-a"}
                assert endpoints["web-2"]["conditions"] == {
                    "ready": False, "serving": False, "terminating": False}
                # The pod on a node that does not exist is left out.
                assert "lost" not in endpoints

                await client.delete("pods", "web-1", NS)  # graceful: stays, terminating

                async def terminating() -> Obj | None:
                    endpoint = endpoints_by_pod(await slices_of(client, "web")).get("web-1")
                    return endpoint if endpoint and endpoint["conditions"]["terminating"] \
                        else None

                endpoint = await eventually(terminating, timeout=20)
                assert endpoint["conditions"] == {"ready": False, "serving": True,
                                                  "terminating": True}

                await client.delete("services", "web", NS)

                async def none_left() -> bool:
                    return not await slices_of(client, "web")

                await eventually(none_left, timeout=20)

    asyncio.run(scenario())


def test_placeholder_slice_until_pods_appear(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await make_node(client, "node-1")
            await client.create("services", service("quiet", {"app": "quiet"}))
            async with running(run_controllers(client, only={"endpointslice"})):
                [placeholder] = await eventually(lambda: slices_of(client, "quiet"),
                                                 timeout=20)
                assert not placeholder.get("endpoints")
                assert not placeholder.get("ports")
                await start_pod(client, pod("q", app="quiet"), "10.0.0.7", ready=True)

                async def replaced() -> list[Obj] | None:
                    slices = await slices_of(client, "quiet")
                    if len(slices) == 1 and slices[0].get("endpoints"):
                        return slices
                    return None

                [real] = await eventually(replaced, timeout=20)
                assert real["endpoints"][0]["addresses"] == ["10.0.0.7"]

    asyncio.run(scenario())


def test_port_sets_and_the_hundred_endpoint_limit_split_slices(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await make_node(client, "node-1")
            for i in range(103):
                await start_pod(client, pod(f"a-{i}", 8080), f"10.1.{i // 200}.{i % 200 + 1}",
                                ready=True)
            await start_pod(client, pod("odd", 9999), "10.2.0.1", ready=True)
            await client.create("services", service("big", {"app": "web"}))
            async with running(run_controllers(client, only={"endpointslice"})):
                async def all_placed() -> list[Obj] | None:
                    slices = await slices_of(client, "big")
                    return slices if len(endpoints_by_pod(slices)) == 104 else None

                slices = await eventually(all_placed, timeout=30)
                sizes = sorted((len(s["endpoints"]),
                                sorted(p["port"] for p in s["ports"])) for s in slices)
                assert sizes == [(1, [9090, 9999]), (3, [8080, 9090]), (100, [8080, 9090])]

    asyncio.run(scenario())
