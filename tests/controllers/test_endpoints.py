"""The endpoints controller against a real API server, plus its subset packing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.client.informer import InformerFactory
from kubi.client.rest import Client
from kubi.controllers.base import ControllerContext
from kubi.controllers.endpoints import (
    EndpointsController,
    find_port,
    repack_subsets,
    truncate_endpoints,
)
from kubi.controllers.manager import run_controllers
from tests.harness import api_server, eventually, running

Obj = dict[str, Any]
NS = "default"


def service(name: str, selector: dict[str, str] | None, ports: list[Obj] | None = None,
            **spec: Any) -> Obj:
    body: Obj = {"ports": ports if ports is not None else [
        {"name": "http", "port": 80, "targetPort": "http"},
        {"name": "metrics", "port": 9090, "targetPort": 9090}], **spec}
    if selector is not None:
        body["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS, "labels": {"team": "blue"}},
            "spec": body}


def pod(name: str, http_port: int = 8080, app: str = "web", node: str = "node-1",
        **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [{
                "name": "c", "image": "nginx",
                "ports": [{"name": "http", "containerPort": http_port}]}], **spec}}


async def start_pod(client: Client, body: Obj, ip: str | None, ready: bool) -> Obj:
    created = await client.create("pods", body)
    status: Obj = {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False",
         "lastTransitionTime": m.rfc3339(m.now())}]}
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    created["status"] = status
    return await client.update_status("pods", created)


async def set_ready(client: Client, name: str, ready: bool) -> None:
    current = await client.get("pods", name, NS)
    current["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False",
                                        "lastTransitionTime": m.rfc3339(m.now())}]
    await client.update_status("pods", current)


async def endpoints_of(client: Client, name: str) -> Obj | None:
    try:
        return await client.get("endpoints", name, NS)
    except StatusError as err:
        if err.code == 404:
            return None
        raise


def ips(subset: Obj, field: str = "addresses") -> list[str]:
    return [a["ip"] for a in subset.get(field) or []]


def test_endpoints_follow_pods_readiness_and_ports(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            web1 = await start_pod(client, pod("web-1", 8080), "10.0.0.1", ready=True)
            await start_pod(client, pod("web-2", 8081), "10.0.0.2", ready=False)
            await start_pod(client, pod("no-ip"), None, ready=True)
            await start_pod(client, pod("other", app="db"), "10.0.0.9", ready=True)
            await client.create("services", service("web", {"app": "web"}))
            async with running(run_controllers(client, only={"endpoints"})):
                async def three_subsets() -> Obj | None:
                    found = await endpoints_of(client, "web")
                    return found if found and len(found.get("subsets") or []) == 3 else None

                ep = await eventually(three_subsets, timeout=20)
                assert ep["metadata"]["labels"] == {"team": "blue"}
                assert "endpoints.kubernetes.io/last-change-trigger-time" in \
                    ep["metadata"]["annotations"]
                by_ports = {tuple((p.get("name"), p["port"]) for p in s["ports"]): s
                            for s in ep["subsets"]}
                # Named targetPorts resolve per pod; the numeric one is shared, so the
                # repacked subsets split by which addresses carry which ports.
                assert set(by_ports) == {(("http", 8080),), (("http", 8081),),
                                         (("metrics", 9090),)}
                assert ips(by_ports[(("http", 8080),)]) == ["10.0.0.1"]
                assert ips(by_ports[(("http", 8081),)], "notReadyAddresses") == ["10.0.0.2"]
                shared = by_ports[(("metrics", 9090),)]
                assert ips(shared) == ["10.0.0.1"]
                assert ips(shared, "notReadyAddresses") == ["10.0.0.2"]
                address = shared["addresses"][0]
                assert address["nodeName"] == "node-1"
                assert address["targetRef"] == {"kind": "Pod", "namespace": NS,
                                                "name": "web-1",
                                                "uid": web1["metadata"]["uid"]}
                assert by_ports[(("http", 8080),)]["ports"][0]["protocol"] == "TCP"

                await set_ready(client, "web-2", True)

                async def all_ready() -> Obj | None:
                    found = await endpoints_of(client, "web")
                    subsets = (found or {}).get("subsets") or []
                    if subsets and all("notReadyAddresses" not in s for s in subsets):
                        return found
                    return None

                ep = await eventually(all_ready, timeout=20)
                metrics = next(s for s in ep["subsets"] if s["ports"][0]["port"] == 9090)
                assert ips(metrics) == ["10.0.0.1", "10.0.0.2"]

                # A terminating pod leaves the endpoints (no publishNotReadyAddresses).
                await client.delete("pods", "web-1", NS)

                async def only_web2() -> bool:
                    found = await endpoints_of(client, "web")
                    return bool(found) and all(
                        ips(s) == ["10.0.0.2"] for s in (found or {}).get("subsets") or [])

                await eventually(only_web2, timeout=20)
                assert (await client.get("pods", "web-1", NS))["metadata"]["deletionTimestamp"]

                await client.delete("services", "web", NS)
                await eventually(lambda: _absent(client, "web"), timeout=20)

    asyncio.run(scenario())


async def _absent(client: Client, name: str) -> bool:
    return await endpoints_of(client, name) is None


def test_headless_publish_not_ready_and_hostnames(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await start_pod(client, pod("db-0", hostname="db-0", subdomain="db", app="db"),
                            "10.0.1.1", ready=False)
            await start_pod(client, pod("db-1", hostname="db-1", subdomain="elsewhere",
                                        app="db"), "10.0.1.2", ready=False)
            await client.create("services", service(
                "db", {"app": "db"}, ports=[{"name": "sql", "port": 5432}],
                clusterIP="None", publishNotReadyAddresses=True))
            async with running(run_controllers(client, only={"endpoints"})):
                async def two_addresses() -> Obj | None:
                    found = await endpoints_of(client, "db")
                    subsets = (found or {}).get("subsets") or []
                    return found if subsets and len(ips(subsets[0])) == 2 else None

                ep = await eventually(two_addresses, timeout=20)
                assert ep["metadata"]["labels"] == {"team": "blue",
                                                    "service.kubernetes.io/headless": ""}
                [subset] = ep["subsets"]
                assert subset["ports"] == [{"name": "sql", "port": 5432, "protocol": "TCP"}]
                by_ip = {a["ip"]: a for a in subset["addresses"]}
                assert by_ip["10.0.1.1"]["hostname"] == "db-0"
                assert "hostname" not in by_ip["10.0.1.2"]  # subdomain names another service

    asyncio.run(scenario())


def test_services_without_selector_are_left_alone(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await client.create("services", service("external", None))
            manual = {"apiVersion": "v1", "kind": "Endpoints",
                      "metadata": {"name": "external", "namespace": NS},
                      "subsets": [{"addresses": [{"ip": "192.0.2.10"}],
                                   "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]}
            await client.create("endpoints", manual)
            await client.create("services", service("empty", {"app": "nothing"}))
            informers = InformerFactory(client)
            controller = EndpointsController(ControllerContext(client, informers))
            informers.start()
            try:
                await informers.wait_synced()
                assert await controller.reconcile(f"{NS}/external") is None
                kept = await client.get("endpoints", "external", NS)
                assert kept["subsets"] == manual["subsets"]
                # A selector matching nothing still gets an (empty) Endpoints.
                assert await controller.reconcile(f"{NS}/empty") is None
                empty = await client.get("endpoints", "empty", NS)
                assert "subsets" not in empty
            finally:
                await informers.stop()

    asyncio.run(scenario())


def _address(ip: str, uid: str) -> Obj:
    return {"ip": ip, "targetRef": {"kind": "Pod", "uid": uid}}


def test_repack_merges_ports_and_not_ready_wins() -> None:
    http = {"name": "http", "port": 80, "protocol": "TCP"}
    dns = {"name": "dns", "port": 53, "protocol": "UDP"}
    packed = repack_subsets([
        {"addresses": [_address("10.0.0.2", "b")], "ports": [http]},
        {"addresses": [_address("10.0.0.1", "a")], "ports": [http]},
        {"addresses": [_address("10.0.0.1", "a")], "ports": [dns]},
        {"notReadyAddresses": [_address("10.0.0.2", "b")], "ports": [dns]},
        {"addresses": [_address("10.0.0.1", "a")], "ports": [dns]},  # duplicate: merged
    ])
    assert packed == [
        {"addresses": [_address("10.0.0.1", "a")],
         "notReadyAddresses": [_address("10.0.0.2", "b")], "ports": [dns]},
        {"addresses": [_address("10.0.0.1", "a"), _address("10.0.0.2", "b")],
         "ports": [http]},
    ]
    # Portless subsets (headless without ports) survive packing.
    assert repack_subsets([{"addresses": [_address("10.0.0.3", "c")]}]) == [
        {"addresses": [_address("10.0.0.3", "c")]}]
    assert repack_subsets([]) == []


def test_truncation_keeps_ready_addresses_first() -> None:
    ready = [_address(f"10.1.{i // 250}.{i % 250}", str(i)) for i in range(900)]
    not_ready = [_address(f"10.2.{i // 250}.{i % 250}", str(i)) for i in range(300)]
    endpoints: Obj = {"subsets": [{"addresses": ready, "notReadyAddresses": not_ready}]}
    assert truncate_endpoints(endpoints)
    [subset] = endpoints["subsets"]
    assert len(subset["addresses"]) == 900
    assert len(subset["notReadyAddresses"]) == 100
    small: Obj = {"subsets": [{"addresses": ready[:10]}]}
    assert not truncate_endpoints(small)
    assert len(small["subsets"][0]["addresses"]) == 10


def test_find_port_resolves_names_per_pod_and_rejects_unknown() -> None:
    body = pod("x", 8443)
    body["spec"]["initContainers"] = [{"name": "sidecar", "image": "envoy",
                                       "restartPolicy": "Always",
                                       "ports": [{"name": "admin", "containerPort": 9901}]}]
    assert find_port(body, {"port": 80, "targetPort": "http"}) == 8443
    assert find_port(body, {"port": 80, "targetPort": "admin"}) == 9901
    assert find_port(body, {"port": 80, "targetPort": 7000}) == 7000
    assert find_port(body, {"port": 80}) == 80
    assert find_port(body, {"port": 80, "targetPort": "nope"}) is None
    # The protocol has to match too.
    assert find_port(body, {"port": 80, "targetPort": "http", "protocol": "UDP"}) is None
