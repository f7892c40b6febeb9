"""The garbage collector against a real API server: background, foreground and orphan
propagation, and dependents with several owners."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kubi.api.errors import StatusError
from kubi.client.rest import Client, resource
from kubi.controllers.garbagecollector import Graph, remove_owner_refs_patch, resolve_kind
from kubi.controllers.manager import run_controllers
from tests.harness import api_server, eventually, running

Obj = dict[str, Any]
NS = "default"


def ref_to(owner: Obj, controller: bool = True, block: bool = True) -> Obj:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": controller, "blockOwnerDeletion": block}


async def make_rs(client: Client, name: str = "echo") -> Obj:
    return await client.create("replicasets.apps", {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})


async def make_pod(client: Client, name: str, owners: list[Obj],
                   finalizers: list[str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": NS, "labels": {"app": "echo"},
                 "ownerReferences": owners}
    if finalizers:
        meta["finalizers"] = finalizers
    return await client.create("pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}})


async def exists(client: Client, res: str, name: str) -> Obj | None:
    try:
        return await client.get(res, name, NS)
    except StatusError as err:
        if err.code == 404:
            return None
        raise


async def gone(client: Client, res: str, name: str) -> bool:
    return await exists(client, res, name) is None


def gc() -> set[str]:
    return {"garbagecollector"}


def test_background_deletion_removes_dependents(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"garbagecollector", "replicaset"})):
            rs = await client.create("replicasets.apps", {
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": "echo", "namespace": NS},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "echo"}},
                         "template": {"metadata": {"labels": {"app": "echo"}},
                                      "spec": {"containers": [{"name": "c",
                                                               "image": "nginx"}]}}}})

            async def two_pods() -> list[Obj] | None:
                pods = (await client.list("pods", NS))["items"]
                return pods if len(pods) == 2 else None

            pods = await eventually(two_pods, timeout=20)
            assert all(p["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
                       for p in pods)
            # A pod with a live owner is not collected meanwhile.
            await asyncio.sleep(0.3)
            assert len((await client.list("pods", NS))["items"]) == 2

            await client.delete("replicasets.apps", "echo", NS, propagation="Background")

            async def no_pods() -> bool:
                return not (await client.list("pods", NS))["items"]

            await eventually(no_pods, timeout=20)
            assert await gone(client, "replicasets.apps", "echo")

    asyncio.run(scenario())


def test_foreground_deletion_waits_for_blocking_dependents(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=gc())):
            rs = await make_rs(client)
            await make_pod(client, "held", [ref_to(rs)], finalizers=["example.com/hold"])
            await make_pod(client, "free", [ref_to(rs)])

            await client.delete("replicasets.apps", "echo", NS, propagation="Foreground")
            await eventually(lambda: gone(client, "pods", "free"), timeout=20)

            async def held_terminating() -> bool:
                pod = await exists(client, "pods", "held")
                return pod is not None and bool(pod["metadata"].get("deletionTimestamp"))

            await eventually(held_terminating, timeout=20)
            # The owner stays, marked, while a blocking dependent remains.
            await asyncio.sleep(0.3)
            owner = await exists(client, "replicasets.apps", "echo")
            assert owner is not None
            assert owner["metadata"]["finalizers"] == ["foregroundDeletion"]
            assert owner["metadata"].get("deletionTimestamp")

            await client.patch("pods", "held", {"metadata": {"finalizers": None}}, NS)
            await eventually(lambda: gone(client, "pods", "held"), timeout=20)
            await eventually(lambda: gone(client, "replicasets.apps", "echo"), timeout=20)

    asyncio.run(scenario())


def test_foreground_cascades_through_levels(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=gc())):
            deployment = await client.create("deployments.apps", {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": NS},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "echo"}},
                         "template": {"metadata": {"labels": {"app": "echo"}},
                                      "spec": {"containers": [{"name": "c",
                                                               "image": "nginx"}]}}}})
            rs = await make_rs(client)
            rs = await client.patch("replicasets.apps", "echo", {
                "metadata": {"ownerReferences": [ref_to(deployment)]}}, NS)
            await make_pod(client, "held", [ref_to(rs)], finalizers=["example.com/hold"])

            await client.delete("deployments.apps", "web", NS, propagation="Foreground")

            async def rs_waits_in_foreground() -> bool:
                got = await exists(client, "replicasets.apps", "echo")
                return got is not None and got["metadata"].get("finalizers") == [
                    "foregroundDeletion"] and bool(got["metadata"].get("deletionTimestamp"))

            await eventually(rs_waits_in_foreground, timeout=20)
            assert await exists(client, "deployments.apps", "web") is not None

            await client.patch("pods", "held", {"metadata": {"finalizers": None}}, NS)
            await eventually(lambda: gone(client, "deployments.apps", "web"), timeout=20)
            assert await gone(client, "replicasets.apps", "echo")
            assert await gone(client, "pods", "held")

    asyncio.run(scenario())


def test_foreground_does_not_wait_for_non_blocking_dependents(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=gc())):
            rs = await make_rs(client)
            await make_pod(client, "loose", [ref_to(rs, block=False)],
                           finalizers=["example.com/hold"])
            await client.delete("replicasets.apps", "echo", NS, propagation="Foreground")
            await eventually(lambda: gone(client, "replicasets.apps", "echo"), timeout=20)
            pod = await exists(client, "pods", "loose")
            assert pod is not None  # held by its own finalizer, but the owner did not wait
            await client.patch("pods", "loose", {"metadata": {"finalizers": None}}, NS)
            await eventually(lambda: gone(client, "pods", "loose"), timeout=20)

    asyncio.run(scenario())


def test_orphan_deletion_keeps_dependents_without_references(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=gc())):
            rs = await make_rs(client)
            other = await make_rs(client, "other")
            await make_pod(client, "a", [ref_to(rs)])
            await make_pod(client, "b", [ref_to(rs), ref_to(other, controller=False)])

            await client.delete("replicasets.apps", "echo", NS, propagation="Orphan")
            await eventually(lambda: gone(client, "replicasets.apps", "echo"), timeout=20)
            a = await exists(client, "pods", "a")
            b = await exists(client, "pods", "b")
            assert a is not None and not a["metadata"].get("ownerReferences")
            assert b is not None
            assert [r["uid"] for r in b["metadata"]["ownerReferences"]] == [
                other["metadata"]["uid"]]
            await asyncio.sleep(0.3)
            assert await exists(client, "pods", "a") is not None

    asyncio.run(scenario())


def test_dependent_with_two_owners_survives_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=gc())):
            rs = await make_rs(client)
            config = await client.create("configmaps", {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": NS}})
            await make_pod(client, "shared", [ref_to(rs), ref_to(config, controller=False)])

            await client.delete("configmaps", "settings", NS)

            async def reference_dropped() -> Obj | None:
                pod = await exists(client, "pods", "shared")
                assert pod is not None, "the pod was collected despite a live owner"
                refs = pod["metadata"].get("ownerReferences") or []
                return pod if [r["uid"] for r in refs] == [rs["metadata"]["uid"]] else None

            await eventually(reference_dropped, timeout=20)

            # Its last owner goes too: now it is collected.
            await client.delete("replicasets.apps", "echo", NS)
            await eventually(lambda: gone(client, "pods", "shared"), timeout=20)

    asyncio.run(scenario())


def test_dependent_of_missing_owner_is_collected(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only=gc())):
            rs = await make_rs(client)
            # Same name as a live owner, but another uid: that owner never existed.
            impostor = dict(ref_to(rs), uid="00000000-0000-0000-0000-000000000001")
            await make_pod(client, "stale", [impostor])
            # An owner of a kind Kubi does not serve is never assumed gone.
            await make_pod(client, "exotic", [{
                "apiVersion": "example.com/v1", "kind": "Widget", "name": "w",
                "uid": "00000000-0000-0000-0000-000000000002"}])
            await eventually(lambda: gone(client, "pods", "stale"), timeout=20)
            await asyncio.sleep(0.3)
            assert await exists(client, "pods", "exotic") is not None
            assert await exists(client, "replicasets.apps", "echo") is not None

    asyncio.run(scenario())


def test_graph_tracks_dependents_by_owner_uid() -> None:
    pods = resource("pods")
    graph = Graph()

    def pod(uid: str, owners: list[str]) -> Obj:
        return {"metadata": {"name": uid, "namespace": NS, "uid": uid,
                             "ownerReferences": [{"uid": o, "kind": "ReplicaSet",
                                                  "apiVersion": "apps/v1", "name": o}
                                                 for o in owners]}}

    assert graph.upsert(pods, pod("p1", ["a", "b"])) == ({"a", "b"}, set())
    assert graph.upsert(pods, pod("p2", ["a"])) == ({"a"}, set())
    assert {n.uid for n in graph.dependents_of("a")} == {"p1", "p2"}
    assert graph.upsert(pods, pod("p1", ["b", "c"])) == ({"c"}, {"a"})
    assert {n.uid for n in graph.dependents_of("a")} == {"p2"}
    graph.remove(pod("p2", ["a"]))
    assert graph.dependents_of("a") == [] and "a" not in graph.dependents
    assert {n.uid for n in graph.dependents_of("b")} == {"p1"}


def test_resolve_kind_and_patch() -> None:
    assert resolve_kind("apps/v1", "ReplicaSet") == resource("replicasets.apps")
    assert resolve_kind("apps/v1beta2", "ReplicaSet") == resource("replicasets.apps")
    assert resolve_kind("v1", "Pod") == resource("pods")
    assert resolve_kind("example.com/v1", "Widget") is None
    assert remove_owner_refs_patch({"metadata": {"uid": "d"}}, ["o1", "o2"]) == {
        "metadata": {"uid": "d", "ownerReferences": [
            {"$patch": "delete", "uid": "o1"}, {"$patch": "delete", "uid": "o2"}]}}
