"""The namespace controller against a real API server: content goes, then the namespace."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kubi.api.errors import StatusError
from kubi.client.informer import InformerFactory
from kubi.client.rest import Client
from kubi.controllers.base import ControllerContext
from kubi.controllers.manager import run_controllers
from kubi.controllers.namespace import (
    CONTENT_FAILURE,
    CONTENT_REMAINING,
    FINALIZERS_REMAINING,
    NamespaceController,
    apply_conditions,
    deletable_resources,
)
from tests.harness import api_server, eventually, running

Obj = dict[str, Any]


async def gone(client: Client, resource: str, name: str, namespace: str = "") -> bool:
    try:
        await client.get(resource, name, namespace)
    except StatusError as err:
        return err.code == 404
    return False


async def make_namespace(client: Client, name: str, finalizers: list[str] | None = None) -> None:
    ns: Obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    if finalizers:
        ns["spec"] = {"finalizers": finalizers}
    await client.create("namespaces", ns)


def configmap(name: str, namespace: str, finalizers: list[str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace}
    if finalizers:
        meta["finalizers"] = finalizers
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}


def pod(name: str, namespace: str, node: str = "", grace: int | None = None) -> Obj:
    spec: Obj = {"containers": [{"name": "c", "image": "nginx"}]}
    if node:
        spec["nodeName"] = node
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def condition(ns: Obj, kind: str) -> Obj | None:
    return next((c for c in (ns.get("status") or {}).get("conditions") or []
                 if c["type"] == kind), None)


async def touch(client: Client, name: str, value: str) -> None:
    """Any update brings the namespace back to the controller at once."""
    await client.patch("namespaces", name, {"metadata": {"labels": {"touched": value}}})


def test_deleting_a_namespace_removes_its_content_then_the_namespace(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await make_namespace(client, "doomed")
            await make_namespace(client, "kept")
            await client.create("configmaps", configmap("settings", "doomed"))
            await client.create("configmaps", configmap("settings", "kept"))
            await client.create("secrets", {"apiVersion": "v1", "kind": "Secret",
                                            "metadata": {"name": "s", "namespace": "doomed"},
                                            "stringData": {"a": "b"}})
            await client.create("pods", pod("unscheduled", "doomed"))
            await client.create("roles.rbac.authorization.k8s.io", {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "r", "namespace": "doomed"}, "rules": []})
            async with running(run_controllers(client, only={"namespace"})):
                await client.delete("namespaces", "doomed")
                await eventually(lambda: gone(client, "namespaces", "doomed"), timeout=20)
            for resource, name in (("configmaps", "settings"), ("secrets", "s"),
                                   ("pods", "unscheduled"),
                                   ("roles.rbac.authorization.k8s.io", "r")):
                assert await gone(client, resource, name, "doomed"), resource
            # The other namespace and its content are untouched.
            kept = await client.get("namespaces", "kept")
            assert kept["status"]["phase"] == "Active"
            assert (await client.get("configmaps", "settings", "kept"))["data"] == {"k": "v"}

    asyncio.run(scenario())


def test_finalizers_on_content_hold_the_namespace_and_are_reported(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await make_namespace(client, "held")
            await client.create("configmaps", configmap("a", "held", ["example.com/hold"]))
            await client.create("configmaps", configmap("b", "held", ["example.com/hold"]))
            await client.create("configmaps", configmap("plain", "held"))
            async with running(run_controllers(client, only={"namespace"})):
                await client.delete("namespaces", "held")

                async def reported() -> Obj | None:
                    ns = await client.get("namespaces", "held")
                    found = condition(ns, FINALIZERS_REMAINING)
                    return ns if found and found["status"] == "True" else None

                ns = await eventually(reported, timeout=20)
                assert ns["status"]["phase"] == "Terminating"
                assert ns["spec"]["finalizers"] == ["kubernetes"]
                finalizers = condition(ns, FINALIZERS_REMAINING)
                assert finalizers is not None
                assert finalizers["reason"] == "SomeFinalizerRemain"
                assert finalizers["message"] == \
                    "Some finalizers are remaining: example.com/hold in 2 resource instances"
                remaining = condition(ns, CONTENT_REMAINING)
                assert remaining is not None
                assert remaining["reason"] == "SomeResourcesRemain"
                assert remaining["message"] == \
                    "Some resources are remaining: configmaps. has 2 resource instances"
                failure = condition(ns, CONTENT_FAILURE)
                assert failure is not None
                assert (failure["status"], failure["reason"]) == ("False", "ContentDeleted")
                assert [c["type"] for c in ns["status"]["conditions"]] == [
                    "NamespaceDeletionDiscoveryFailure",
                    "NamespaceDeletionGroupVersionParsingFailure",
                    "NamespaceDeletionContentFailure", "NamespaceContentRemaining",
                    "NamespaceFinalizersRemaining"]
                assert await gone(client, "configmaps", "plain", "held")

                for name in ("a", "b"):
                    await client.patch("configmaps", name, {"metadata": {"finalizers": None}},
                                       "held")
                await touch(client, "held", "1")
                await eventually(lambda: gone(client, "namespaces", "held"), timeout=20)

    asyncio.run(scenario())


def test_pods_get_their_grace_period_and_the_namespace_waits(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await make_namespace(client, "graceful")
            await client.create("pods", pod("web", "graceful", node="node-1", grace=45))
            async with running(run_controllers(client, only={"namespace"})):
                await client.delete("namespaces", "graceful")

                async def terminating_pod() -> Obj | None:
                    found = await client.get("pods", "web", "graceful")
                    return found if found["metadata"].get("deletionTimestamp") else None

                found = await eventually(terminating_pod, timeout=20)
                assert found["metadata"]["deletionGracePeriodSeconds"] == 45

                async def remaining_reported() -> bool:
                    ns = await client.get("namespaces", "graceful")
                    found = condition(ns, CONTENT_REMAINING)
                    return bool(found and found["message"] ==
                                "Some resources are remaining: pods. has 1 resource instances")

                await eventually(remaining_reported, timeout=20)
                assert not await gone(client, "namespaces", "graceful")
                # The node agent finishes the pod; the namespace follows.
                await client.delete("pods", "web", "graceful", grace_period=0)
                await touch(client, "graceful", "1")
                await eventually(lambda: gone(client, "namespaces", "graceful"), timeout=20)

    asyncio.run(scenario())


def test_only_the_kubernetes_finalizer_is_removed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await make_namespace(client, "shared", ["example.com/other"])
            await client.create("configmaps", configmap("x", "shared"))
            async with running(run_controllers(client, only={"namespace"})):
                await client.delete("namespaces", "shared")

                async def finalized() -> Obj | None:
                    ns = await client.get("namespaces", "shared")
                    return ns if "kubernetes" not in ns["spec"]["finalizers"] else None

                ns = await eventually(finalized, timeout=20)
                assert ns["spec"]["finalizers"] == ["example.com/other"]
                assert ns["status"]["phase"] == "Terminating"
                assert await gone(client, "configmaps", "x", "shared")

    asyncio.run(scenario())


def test_active_and_missing_namespaces_are_left_alone(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await make_namespace(client, "alive")
            await client.create("configmaps", configmap("c", "alive"))
            controller = NamespaceController(ControllerContext(client, InformerFactory(client)))
            await controller.delete_namespace("alive")
            await controller.delete_namespace("no-such-namespace")
            assert await controller.reconcile("no-such-namespace") is None
            ns = await client.get("namespaces", "alive")
            assert ns["status"]["phase"] == "Active"
            assert "conditions" not in ns["status"]
            assert (await client.get("configmaps", "c", "alive"))["data"] == {"k": "v"}

    asyncio.run(scenario())


def test_conditions_keep_their_transition_time_until_the_status_flips() -> None:
    status: Obj = {}
    assert apply_conditions(status, {})
    first = {c["type"]: dict(c) for c in status["conditions"]}
    assert not apply_conditions(status, {})  # nothing new: no write needed
    status["conditions"][3]["lastTransitionTime"] = "2000-01-01T00:00:00Z"
    failing = {CONTENT_REMAINING: {"status": "True", "reason": "SomeResourcesRemain",
                                   "message": "Some resources are remaining: x"}}
    assert apply_conditions(status, failing)
    remaining = status["conditions"][3]
    assert remaining["type"] == CONTENT_REMAINING
    assert remaining["status"] == "True"
    assert remaining["lastTransitionTime"] != "2000-01-01T00:00:00Z"
    # A new message with the same status keeps the transition time.
    remaining["lastTransitionTime"] = "2000-01-01T00:00:00Z"
    failing[CONTENT_REMAINING]["message"] = "Some resources are remaining: y"
    assert apply_conditions(status, failing)
    assert status["conditions"][3]["lastTransitionTime"] == "2000-01-01T00:00:00Z"
    assert first[CONTENT_FAILURE]["reason"] == "ContentDeleted"


def test_deletable_resources_cover_each_storage_once() -> None:
    names = [f"{r.plural}.{r.group}" for r in deletable_resources()]
    assert "pods." in names and "deployments.apps" in names
    assert "events." in names and "events.events.k8s.io" not in names
    assert names.count("ingresses.networking.k8s.io") == 1
    assert "ingresses.extensions" not in names
    assert "localsubjectaccessreviews.authorization.k8s.io" not in names
    assert "namespaces." not in names and "nodes." not in names
