"""The PersistentVolume binder against a real API server, plus its matching helpers."""

from __future__ import annotations

import asyncio
import functools
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from kubi.api.errors import StatusError
from kubi.api.labels import InvalidSelector, label_selector_matches
from kubi.client.rest import Client
from kubi.controllers.manager import run_controllers
from kubi.controllers.persistentvolume import (
    node_affinity_matches,
    parse_quantity,
)
from tests.harness import api_server, eventually, running

Obj = dict[str, Any]
NS = "default"
BINDER = {"persistentvolume-binder"}


def volume(name: str, size: str, modes: list[str] | None = None, *, klass: str = "",
           policy: str = "Retain", labels: dict[str, str] | None = None,
           claim: str = "", annotations: dict[str, str] | None = None,
           **spec: Any) -> Obj:
    body: Obj = {"capacity": {"storage": size}, "accessModes": modes or ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": policy,
                 "hostPath": {"path": f"/data/{name}"}, **spec}
    if klass:
        body["storageClassName"] = klass
    if claim:
        body["claimRef"] = {"namespace": NS, "name": claim}
    meta: Obj = {"name": name, "labels": labels or {}}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": meta, "spec": body}


def claim(name: str, size: str, modes: list[str] | None = None, **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"accessModes": modes or ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": size}}, **spec}}


def storage_class(name: str, provisioner: str, default: bool = False,
                  mode: str = "Immediate") -> Obj:
    annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name, "annotations": annotations},
            "provisioner": provisioner, "volumeBindingMode": mode}


async def pvc(client: Client, name: str) -> Obj:
    return await client.get("persistentvolumeclaims", name, NS)


async def pv(client: Client, name: str) -> Obj:
    return await client.get("persistentvolumes", name)


async def bound_claim(client: Client, name: str) -> Obj | None:
    found = await pvc(client, name)
    return found if found.get("status", {}).get("phase") == "Bound" else None


async def event_about(client: Client, name: str, reason: str) -> Obj | None:
    listed = await client.list("events", NS)
    for event in listed["items"]:
        if event["involvedObject"]["name"] == name and event["reason"] == reason:
            return dict(event)
    return None


async def volume_gone(client: Client, name: str) -> bool:
    try:
        await pv(client, name)
    except StatusError as err:
        return err.code == 404
    return False


def test_claims_bind_to_the_best_fitting_volume(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), \
                running(run_controllers(client, only=BINDER)):
            await client.create("persistentvolumes", volume("pv-small", "1Gi"))
            await client.create("persistentvolumes", volume("pv-big", "10Gi"))
            await client.create("persistentvolumes", volume(
                "pv-rwx", "2Gi", ["ReadWriteOnce", "ReadWriteMany"]))
            await client.create("persistentvolumes", volume("pv-classy", "2Gi", klass="fast"))
            await client.create("persistentvolumes", volume(
                "pv-labelled", "3Gi", ["ReadWriteMany"], labels={"tier": "gold"}))
            await client.create("persistentvolumes", volume(
                "pv-block", "1Gi", ["ReadWriteMany"], volumeMode="Block"))

            async def available(name: str) -> bool:
                return bool((await pv(client, name))["status"]["phase"] == "Available")

            # Only Available volumes are candidates, as upstream: let them all get there.
            for name in ("pv-small", "pv-big", "pv-rwx", "pv-classy", "pv-labelled",
                         "pv-block"):
                await eventually(functools.partial(available, name), timeout=20)
            created = await client.create("persistentvolumeclaims", claim(
                "data", "1500Mi", storageClassName=""))
            await client.create("persistentvolumeclaims", claim(
                "shared", "1Gi", ["ReadWriteMany"], storageClassName="",
                selector={"matchExpressions": [{"key": "tier", "operator": "In",
                                                "values": ["gold", "silver"]}]}))
            await client.create("persistentvolumeclaims", claim(
                "raw", "1Gi", ["ReadWriteMany"], storageClassName="", volumeMode="Block"))
            data = await eventually(lambda: bound_claim(client, "data"), timeout=20)
            # Volumes offering only the asked-for modes come first, then the smallest.
            assert data["spec"]["volumeName"] == "pv-big"
            assert data["metadata"]["annotations"] == {
                "pv.kubernetes.io/bind-completed": "yes",
                "pv.kubernetes.io/bound-by-controller": "yes"}
            assert data["status"]["capacity"] == {"storage": "10Gi"}
            assert data["status"]["accessModes"] == ["ReadWriteOnce"]
            big = await pv(client, "pv-big")
            assert big["status"]["phase"] == "Bound"
            assert big["metadata"]["annotations"] == {
                "pv.kubernetes.io/bound-by-controller": "yes"}
            ref = big["spec"]["claimRef"]
            assert (ref["kind"], ref["namespace"], ref["name"], ref["uid"],
                    ref["apiVersion"]) == ("PersistentVolumeClaim", NS, "data",
                                           created["metadata"]["uid"], "v1")
            shared = await eventually(lambda: bound_claim(client, "shared"), timeout=20)
            assert shared["spec"]["volumeName"] == "pv-labelled"
            raw = await eventually(lambda: bound_claim(client, "raw"), timeout=20)
            assert raw["spec"]["volumeName"] == "pv-block"
            for name in ("pv-small", "pv-rwx", "pv-classy"):
                found = await pv(client, name)
                assert found["status"]["phase"] == "Available"
                assert "claimRef" not in found["spec"]

    asyncio.run(scenario())


def test_pre_bound_volumes_and_requested_volume_names(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await client.create("persistentvolumes", volume("any", "1Gi"))
            await client.create("persistentvolumes", volume("reserved", "50Gi", claim="mine"))
            await client.create("persistentvolumes", volume("named", "5Gi"))
            await client.create("persistentvolumes", volume("tiny", "100Mi"))
            await client.create("persistentvolumeclaims", claim("mine", "1Gi",
                                                                storageClassName=""))
            await client.create("persistentvolumeclaims", claim(
                "by-name", "1Gi", storageClassName="", volumeName="named"))
            await client.create("persistentvolumeclaims", claim(
                "too-big", "1Gi", storageClassName="", volumeName="tiny"))
            async with running(run_controllers(client, only=BINDER)):
                mine = await eventually(lambda: bound_claim(client, "mine"), timeout=20)
                assert mine["spec"]["volumeName"] == "reserved"
                reserved = await pv(client, "reserved")
                # The user made this binding: the controller does not claim it as its own.
                assert "pv.kubernetes.io/bound-by-controller" not in \
                    (reserved["metadata"].get("annotations") or {})
                assert reserved["spec"]["claimRef"]["uid"] == mine["metadata"]["uid"]

                by_name = await eventually(lambda: bound_claim(client, "by-name"), timeout=20)
                assert by_name["spec"]["volumeName"] == "named"
                assert by_name["metadata"]["annotations"] == {
                    "pv.kubernetes.io/bind-completed": "yes"}

                event = await eventually(lambda: event_about(client, "too-big",
                                                             "VolumeMismatch"), timeout=20)
                assert event["type"] == "Warning"
                assert event["message"] == \
                    'Cannot bind to requested volume "tiny": requested PV is too small'
                assert (await pvc(client, "too-big"))["status"]["phase"] == "Pending"
                assert "claimRef" not in (await pv(client, "tiny"))["spec"]

    asyncio.run(scenario())


def test_unmatched_claims_wait_with_an_event(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await client.create("persistentvolumes", volume("small", "1Gi"))
            await client.create("persistentvolumeclaims", claim("huge", "100Gi"))
            async with running(run_controllers(client, only=BINDER)):
                event = await eventually(lambda: event_about(client, "huge", "FailedBinding"),
                                         timeout=20)
                assert event["message"] == ("no persistent volumes available for this claim "
                                            "and no storage class is set")
                assert event["source"]["component"] == "persistentvolume-controller"
                found = await pvc(client, "huge")
                assert found["status"]["phase"] == "Pending"
                assert "volumeName" not in found["spec"]

                # A fitting volume showing up later is found.
                await client.create("persistentvolumes", volume("roomy", "200Gi"))
                bound = await eventually(lambda: bound_claim(client, "huge"), timeout=20)
                assert bound["spec"]["volumeName"] == "roomy"

    asyncio.run(scenario())


def test_default_class_is_assigned_retroactively_and_handed_to_provisioner(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await client.create("persistentvolumeclaims", claim("late", "1Gi"))
            await client.create("persistentvolumeclaims", claim("classless", "1Gi",
                                                                storageClassName=""))
            async with running(run_controllers(client, only=BINDER)):
                await eventually(lambda: event_about(client, "late", "FailedBinding"),
                                 timeout=20)
                await client.create("storageclasses.storage.k8s.io",
                                    storage_class("standard", "example.com/hostpath",
                                                  default=True))

                async def annotated() -> Obj | None:
                    found = await pvc(client, "late")
                    annotations = found["metadata"].get("annotations") or {}
                    return found if "volume.kubernetes.io/storage-provisioner" in \
                        annotations else None

                late = await eventually(annotated, timeout=20)
                assert late["spec"]["storageClassName"] == "standard"
                assert late["metadata"]["annotations"] == {
                    "volume.kubernetes.io/storage-provisioner": "example.com/hostpath",
                    "volume.beta.kubernetes.io/storage-provisioner": "example.com/hostpath"}
                event = await eventually(lambda: event_about(client, "late",
                                                             "ExternalProvisioning"),
                                         timeout=20)
                assert "external provisioner 'example.com/hostpath'" in event["message"]
                # An explicit "" asks for volumes without a class: no default for it.
                classless = await pvc(client, "classless")
                assert classless["spec"]["storageClassName"] == ""

    asyncio.run(scenario())


def test_released_volumes_follow_their_reclaim_policy(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await client.create("persistentvolumes", volume("keep", "1Gi", klass="a"))
            await client.create("persistentvolumes", volume(
                "dynamic", "1Gi", klass="b", policy="Delete",
                annotations={"pv.kubernetes.io/provisioned-by": "example.com/hostpath"}))
            await client.create("persistentvolumes", volume("static", "1Gi", klass="c",
                                                            policy="Delete"))
            for name, klass in (("ka", "a"), ("kb", "b"), ("kc", "c")):
                await client.create("persistentvolumeclaims", claim(name, "1Gi",
                                                                    storageClassName=klass))
            async with running(run_controllers(client, only=BINDER)):
                for name in ("ka", "kb", "kc"):
                    await eventually(functools.partial(bound_claim, client, name), timeout=20)
                    await client.delete("persistentvolumeclaims", name, NS)

                async def released() -> Obj | None:
                    found = await pv(client, "keep")
                    return found if found["status"]["phase"] == "Released" else None

                keep = await eventually(released, timeout=20)
                assert keep["spec"]["claimRef"]["name"] == "ka"  # Retain: data stays claimed
                await eventually(lambda: volume_gone(client, "dynamic"), timeout=20)

                async def failed() -> Obj | None:
                    found = await pv(client, "static")
                    return found if found["status"]["phase"] == "Failed" else None

                static = await eventually(failed, timeout=20)
                assert static["status"]["message"] == (
                    'error getting deleter volume plugin for volume "static": no deletable '
                    "volume plugin matched")

    asyncio.run(scenario())


def test_wait_for_first_consumer_binds_once_a_node_is_chosen(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            for node in ("node-1", "node-2"):
                await client.create("nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {
                    "name": node, "labels": {"kubernetes.io/hostname": node}}})
            await client.create("storageclasses.storage.k8s.io", storage_class(
                "local", "kubernetes.io/no-provisioner", mode="WaitForFirstConsumer"))
            affinity = {"required": {"nodeSelectorTerms": [{"matchExpressions": [{
                "key": "kubernetes.io/hostname", "operator": "In", "values": ["node-2"]}]}]}}
            await client.create("persistentvolumes", volume(
                "disk-2", "5Gi", klass="local", nodeAffinity=affinity))
            await client.create("persistentvolumeclaims", claim("local-data", "1Gi",
                                                                storageClassName="local"))
            async with running(run_controllers(client, only=BINDER)):
                event = await eventually(lambda: event_about(client, "local-data",
                                                             "WaitForFirstConsumer"),
                                         timeout=20)
                assert event["message"] == \
                    "waiting for first consumer to be created before binding"
                assert (await pvc(client, "local-data"))["status"]["phase"] == "Pending"

                await client.create("pods", {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "user", "namespace": NS},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}],
                             "volumes": [{"name": "d", "persistentVolumeClaim": {
                                 "claimName": "local-data"}}]}})
                await client.patch("persistentvolumeclaims", "local-data", {
                    "metadata": {"annotations": {"volume.kubernetes.io/selected-node":
                                                 "node-2"}}}, NS)
                bound = await eventually(lambda: bound_claim(client, "local-data"),
                                         timeout=20)
                assert bound["spec"]["volumeName"] == "disk-2"

    asyncio.run(scenario())


def test_wait_for_first_consumer_names_the_waiting_pod(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await client.create("storageclasses.storage.k8s.io", storage_class(
                "local", "kubernetes.io/no-provisioner", mode="WaitForFirstConsumer"))
            await client.create("pods", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "waiter", "namespace": NS},
                "spec": {"containers": [{"name": "c", "image": "nginx"}],
                         "volumes": [{"name": "d", "persistentVolumeClaim": {
                             "claimName": "pending"}}]}})
            await client.create("persistentvolumeclaims", claim("pending", "1Gi",
                                                                storageClassName="local"))
            async with running(run_controllers(client, only=BINDER)):
                event = await eventually(lambda: event_about(client, "pending",
                                                             "WaitForPodScheduled"),
                                         timeout=20)
                assert event["message"] == "waiting for pod waiter to be scheduled"

    asyncio.run(scenario())


def test_quantities_selectors_and_affinity() -> None:
    assert parse_quantity("1Gi") == 2**30
    assert parse_quantity("1500Mi") == 1500 * 2**20
    assert parse_quantity("1.5G") == 1_500_000_000
    assert parse_quantity("500m") == Fraction(1, 2)
    assert parse_quantity("2e3") == 2000
    assert parse_quantity(3) == 3
    for bad in ("", "Gi", "1.2.3", "12XB", None, True):
        assert parse_quantity(bad) is None, bad

    selector = {"matchLabels": {"tier": "gold"},
                "matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["x"]},
                                     {"key": "ssd", "operator": "Exists"}]}
    assert label_selector_matches(selector, {"tier": "gold", "ssd": "1", "zone": "y"})
    assert not label_selector_matches(selector, {"tier": "gold", "ssd": "1", "zone": "x"})
    assert not label_selector_matches(selector, {"tier": "gold"})
    with pytest.raises(InvalidSelector):
        label_selector_matches(
            {"matchExpressions": [{"key": "a", "operator": "Bogus", "values": ["1"]}]},
            {"a": "1"})

    node = {"metadata": {"name": "n1", "labels": {"rack": "7"}}}
    def with_terms(*terms: Obj) -> Obj:
        return {"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": list(terms)}}}}
    assert node_affinity_matches({"spec": {}}, node)
    assert node_affinity_matches(with_terms(
        {"matchExpressions": [{"key": "rack", "operator": "Gt", "values": ["5"]}]}), node)
    assert node_affinity_matches(with_terms(
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}), node)
    assert not node_affinity_matches(with_terms({}), node)
    assert not node_affinity_matches(with_terms(
        {"matchExpressions": [{"key": "rack", "operator": "Lt", "values": ["x"]}]}), node)
