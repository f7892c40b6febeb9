"""The StatefulSet controller against a real API server; tests move pods along themselves."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from pathlib import Path
from typing import Any

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.client.rest import Client
from kubi.controllers import statefulset as sts_mod
from kubi.controllers._history import REVISION_HASH_LABEL, template_patch
from kubi.controllers.manager import run_controllers
from tests.harness import api_server, eventually, running

Obj = dict[str, Any]
NS = "default"
STS = "statefulsets.apps"
REVS = "controllerrevisions.apps"


def statefulset(name: str = "web", replicas: int = 3, *, policy: str = "OrderedReady",
                claims: bool = True, image: str = "nginx:1",
                retention: Obj | None = None, partition: int | None = None) -> Obj:
    spec: Obj = {
        "replicas": replicas,
        "serviceName": "nginx",
        "podManagementPolicy": policy,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": image}]},
        },
    }
    if claims:
        spec["volumeClaimTemplates"] = [{
            "metadata": {"name": "www", "labels": {"disk": "fast"}},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}},
        }]
    if retention:
        spec["persistentVolumeClaimRetentionPolicy"] = retention
    if partition is not None:
        spec["updateStrategy"] = {"type": "RollingUpdate",
                                  "rollingUpdate": {"partition": partition}}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


async def live_pods(client: Client, app: str = "web") -> dict[str, Obj]:
    listed = await client.list("pods", NS, label_selector=f"app={app}")
    return {p["metadata"]["name"]: p for p in listed["items"]
            if not p["metadata"].get("deletionTimestamp")}


async def names_are(client: Client, names: set[str], app: str = "web") -> dict[str, Obj] | None:
    pods = await live_pods(client, app)
    return pods if set(pods) == names else None


async def set_running(client: Client, name: str, ready: bool = True,
                      phase: str = "Running") -> None:
    pod = await client.get("pods", name, NS)
    stamp = m.rfc3339(m.now())
    pod["status"] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                        "lastTransitionTime": stamp}],
    }
    await client.update_status("pods", pod)


async def status_shows(client: Client, name: str = "web", **want: Any) -> Obj | None:
    sts = await client.get(STS, name, NS)
    status = sts.get("status") or {}
    if status.get("observedGeneration") != sts["metadata"]["generation"]:
        return None
    return sts if all(status.get(k) == v for k, v in want.items()) else None


async def bring_up(client: Client, names: list[str], app: str = "web") -> None:
    """Mark each pod ready as it appears, in order."""
    for index, name in enumerate(names):
        await eventually(functools.partial(names_are, client, set(names[:index + 1]), app),
                         timeout=20)
        await set_running(client, name)


async def revisions_of(client: Client, app: str = "web") -> list[Obj]:
    listed = await client.list(REVS, NS, label_selector=f"app={app}")
    return sorted(listed["items"], key=lambda r: r["revision"])


@contextlib.asynccontextmanager
async def deletions(client: Client) -> Any:
    """Collect the names of pods as they are deleted, in order."""
    seen: list[str] = []
    start = await client.list("pods", NS)

    async def watch() -> None:
        async for kind, obj in client.watch("pods", NS,
                                            resource_version=start["metadata"]["resourceVersion"]):
            if kind == "DELETED":
                seen.append(obj["metadata"]["name"])

    task = asyncio.ensure_future(watch())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def test_ordered_creation_identity_and_claims(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"statefulset"})):
            created = await client.create(STS, statefulset())
            uid = created["metadata"]["uid"]
            await eventually(lambda: names_are(client, {"web-0"}), timeout=20)
            # The controller has seen web-0 (counted in status) and waits for it.
            await eventually(lambda: status_shows(client, replicas=1), timeout=20)
            assert set(await live_pods(client)) == {"web-0"}

            await set_running(client, "web-0", ready=False)
            await eventually(lambda: status_shows(client, replicas=1, readyReplicas=None),
                             timeout=20)
            assert set(await live_pods(client)) == {"web-0"}, "a not-ready pod blocks the next"

            await set_running(client, "web-0")
            pods = await eventually(lambda: names_are(client, {"web-0", "web-1"}), timeout=20)
            pod = pods["web-1"]
            meta = pod["metadata"]
            sts = await client.get(STS, "web", NS)
            revision = sts["status"]["updateRevision"]
            assert revision.startswith("web-")
            assert meta["labels"] == {"app": "web",
                                      "statefulset.kubernetes.io/pod-name": "web-1",
                                      "apps.kubernetes.io/pod-index": "1",
                                      "controller-revision-hash": revision}
            assert meta["generateName"] == "web-"
            assert meta["ownerReferences"] == [{
                "apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": uid,
                "controller": True, "blockOwnerDeletion": True}]
            assert pod["spec"]["hostname"] == "web-1"
            assert pod["spec"]["subdomain"] == "nginx"
            assert {"name": "www", "persistentVolumeClaim": {"claimName": "www-web-1"}} in [
                {k: v for k, v in vol.items() if k in ("name", "persistentVolumeClaim")}
                for vol in pod["spec"]["volumes"]]

            claim = await client.get("persistentvolumeclaims", "www-web-1", NS)
            assert claim["metadata"]["labels"] == {"disk": "fast", "app": "web"}
            assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
            assert "ownerReferences" not in claim["metadata"], "Retain: no owners"

            await set_running(client, "web-1")
            await eventually(lambda: names_are(client, {"web-0", "web-1", "web-2"}), timeout=20)
            await set_running(client, "web-2")
            done = await eventually(lambda: status_shows(
                client, replicas=3, readyReplicas=3, availableReplicas=3, currentReplicas=3,
                updatedReplicas=3), timeout=20)
            assert done["status"]["currentRevision"] == done["status"]["updateRevision"]
            claims = await client.list("persistentvolumeclaims", NS)
            assert {c["metadata"]["name"] for c in claims["items"]} == {
                "www-web-0", "www-web-1", "www-web-2"}
            events = await client.list("events", NS)
            messages = {e["message"] for e in events["items"]}
            assert "create Pod web-0 in StatefulSet web successful" in messages
            assert "create Claim www-web-0 Pod web-0 in StatefulSet web success" in messages

    asyncio.run(scenario())


def test_scale_down_from_highest_ordinal_when_healthy(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"statefulset"})):
            await client.create(STS, statefulset())
            await bring_up(client, ["web-0", "web-1", "web-2"])
            await eventually(lambda: status_shows(client, readyReplicas=3), timeout=20)

            # An unhealthy survivor blocks scale-down.
            await set_running(client, "web-0", ready=False)
            await eventually(lambda: status_shows(client, readyReplicas=2), timeout=20)
            await client.patch(STS, "web", {"spec": {"replicas": 1}}, NS)
            await eventually(lambda: status_shows(client, replicas=3), timeout=20)
            assert set(await live_pods(client)) == {"web-0", "web-1", "web-2"}

            async with deletions(client) as deleted:
                await set_running(client, "web-0")
                await eventually(lambda: names_are(client, {"web-0"}), timeout=20)
                await eventually(lambda: asyncio.sleep(0, len(deleted) == 2), timeout=20)
                assert deleted == ["web-2", "web-1"]
            await eventually(lambda: status_shows(client, replicas=1, readyReplicas=1),
                             timeout=20)
            claims = await client.list("persistentvolumeclaims", NS)
            assert len(claims["items"]) == 3, "claims are retained on scale-down"

            # Scaling up again reuses the retained claims.
            await client.patch(STS, "web", {"spec": {"replicas": 2}}, NS)
            pods = await eventually(lambda: names_are(client, {"web-0", "web-1"}), timeout=20)
            volumes = pods["web-1"]["spec"]["volumes"]
            assert any(v.get("persistentVolumeClaim", {}).get("claimName") == "www-web-1"
                       for v in volumes)

    asyncio.run(scenario())


def test_rolling_update_with_partition_history_and_undo(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"statefulset"})):
            await client.create(STS, statefulset(claims=False, partition=2))
            await bring_up(client, ["web-0", "web-1", "web-2"])
            first = await eventually(lambda: status_shows(client, readyReplicas=3), timeout=20)
            rev1 = first["status"]["currentRevision"]

            await client.patch(STS, "web", {"spec": {"template": {"spec": {"containers": [
                {"name": "c", "image": "nginx:2"}]}}}}, NS, patch_type="strategic")
            updated = await eventually(lambda: status_shows(client, updatedReplicas=1),
                                       timeout=20)
            rev2 = updated["status"]["updateRevision"]
            assert rev2 != rev1 and updated["status"]["currentRevision"] == rev1
            pods = await live_pods(client)
            assert pods["web-2"]["spec"]["containers"][0]["image"] == "nginx:2"
            assert pods["web-2"]["metadata"]["labels"][REVISION_HASH_LABEL] == rev2
            for name in ("web-0", "web-1"):  # below the partition: untouched
                assert pods[name]["metadata"]["labels"][REVISION_HASH_LABEL] == rev1
                assert pods[name]["spec"]["containers"][0]["image"] == "nginx:1"

            revisions = await revisions_of(client)
            assert [(r["metadata"]["name"], r["revision"]) for r in revisions] == [
                (rev1, 1), (rev2, 2)]
            sts = await client.get(STS, "web", NS)
            assert revisions[1]["data"] == template_patch(sts)
            assert revisions[1]["metadata"]["ownerReferences"][0]["uid"] == \
                sts["metadata"]["uid"]

            # Lowering the partition rolls the rest, highest ordinal first.
            await set_running(client, "web-2")
            async with deletions(client) as deleted:
                await client.patch(STS, "web", {"spec": {"updateStrategy": {
                    "rollingUpdate": {"partition": 0}}}}, NS)
                for name in ("web-1", "web-0"):
                    await eventually(functools.partial(_at_revision, client, name, rev2),
                                     timeout=20)
                    await set_running(client, name)
                assert deleted == ["web-1", "web-0"]
            done = await eventually(lambda: status_shows(
                client, updatedReplicas=3, currentReplicas=3, currentRevision=rev2), timeout=20)
            assert done["status"]["updateRevision"] == rev2

            # Undo as kubectl does it: apply revision 1's recorded patch.
            await client.patch(STS, "web", revisions[0]["data"], NS, patch_type="strategic")
            for name in ("web-2", "web-1", "web-0"):
                await eventually(functools.partial(_at_revision, client, name, rev1),
                                 timeout=20)
                await set_running(client, name)
            await eventually(lambda: status_shows(client, currentRevision=rev1,
                                                  updateRevision=rev1, updatedReplicas=3),
                             timeout=20)
            revisions = await revisions_of(client)
            assert [(r["metadata"]["name"], r["revision"]) for r in revisions] == [
                (rev2, 2), (rev1, 3)], "the rollback renumbers the old revision"
            pods = await live_pods(client)
            assert {p["spec"]["containers"][0]["image"] for p in pods.values()} == {"nginx:1"}

    asyncio.run(scenario())


async def _at_revision(client: Client, name: str, revision: str) -> bool:
    pods = await live_pods(client)
    pod = pods.get(name)
    return pod is not None and pod["metadata"]["labels"].get(REVISION_HASH_LABEL) == revision


def test_revision_history_limit_truncates_unused_revisions(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"statefulset"})):
            manifest = statefulset(replicas=0, claims=False)
            manifest["spec"]["revisionHistoryLimit"] = 1
            await client.create(STS, manifest)
            await eventually(lambda: status_shows(client), timeout=20)
            for tag in range(2, 5):
                await client.patch(STS, "web", {"spec": {"template": {"metadata": {
                    "annotations": {"tag": str(tag)}}}}}, NS)
                await eventually(lambda: status_shows(client), timeout=20)
            sts = await client.get(STS, "web", NS)

            async def kept() -> list[Obj] | None:
                revisions = await revisions_of(client)
                return revisions if len(revisions) == 2 else None

            revisions = await eventually(kept, timeout=20)
            # The live (update) revision plus one historic one.
            assert revisions[-1]["metadata"]["name"] == sts["status"]["updateRevision"]
            assert [r["revision"] for r in revisions] == [3, 4]

    asyncio.run(scenario())


def test_parallel_policy_creates_and_deletes_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"statefulset"})):
            await client.create(STS, statefulset(policy="Parallel", replicas=4))
            # No pod is ever made ready, yet all are created.
            await eventually(lambda: names_are(client, {"web-0", "web-1", "web-2", "web-3"}),
                             timeout=20)
            claims = await client.list("persistentvolumeclaims", NS)
            assert len(claims["items"]) == 4
            await client.patch(STS, "web", {"spec": {"replicas": 1}}, NS)
            await eventually(lambda: names_are(client, {"web-0"}), timeout=20)
            await eventually(lambda: status_shows(client, replicas=1), timeout=20)

    asyncio.run(scenario())


def test_failed_and_deleted_pods_come_back_with_the_same_name(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"statefulset"})):
            await client.create(STS, statefulset(replicas=2, claims=False))
            await bring_up(client, ["web-0", "web-1"])
            old = (await live_pods(client))["web-1"]["metadata"]["uid"]
            await set_running(client, "web-1", ready=False, phase="Failed")

            async def replaced() -> bool:
                pod = (await live_pods(client)).get("web-1")
                return pod is not None and pod["metadata"]["uid"] != old

            await eventually(replaced, timeout=20)
            old = (await live_pods(client))["web-0"]["metadata"]["uid"]
            await client.delete("pods", "web-0", NS)

            async def recreated() -> bool:
                pod = (await live_pods(client)).get("web-0")
                return pod is not None and pod["metadata"]["uid"] != old

            await eventually(recreated, timeout=20)

    asyncio.run(scenario())


def test_retention_policy_sets_claim_owners(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"statefulset"})):
            created = await client.create(STS, statefulset(
                replicas=2, retention={"whenDeleted": "Delete", "whenScaled": "Delete"}))
            await bring_up(client, ["web-0", "web-1"])

            async def owners(claim: str) -> list[tuple[str, str]]:
                found = await client.get("persistentvolumeclaims", claim, NS)
                return [(r["kind"], r["name"])
                        for r in found["metadata"].get("ownerReferences") or []]

            async def owned_by_set() -> bool:
                return (await owners("www-web-0") == [("StatefulSet", "web")]
                        and await owners("www-web-1") == [("StatefulSet", "web")])

            await eventually(owned_by_set, timeout=20)
            claim = await client.get("persistentvolumeclaims", "www-web-0", NS)
            assert claim["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
            assert claim["metadata"]["ownerReferences"][0]["controller"] is True

            # Scaled down: the condemned pod's claim is handed to the pod before it goes.
            await client.patch(STS, "web", {"spec": {"replicas": 1}}, NS)
            await eventually(lambda: names_are(client, {"web-0"}), timeout=20)
            assert await owners("www-web-1") == [("Pod", "web-1")]
            assert await owners("www-web-0") == [("StatefulSet", "web")]

    asyncio.run(scenario())


def test_foreign_pods_are_left_alone(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client), running(
                run_controllers(client, only={"statefulset"})):
            # Matches the selector but is not named like a member: never adopted.
            await client.create("pods", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "stray", "namespace": NS, "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
            await client.create(STS, statefulset(replicas=1, claims=False))
            await eventually(lambda: status_shows(client, replicas=1), timeout=20)
            stray = await client.get("pods", "stray", NS)
            assert "ownerReferences" not in stray["metadata"]
            # An orphan named like a member is adopted instead of duplicated.
            await client.create("pods", {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-1", "namespace": NS, "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
            await client.patch(STS, "web", {"spec": {"replicas": 2}}, NS)

            async def adopted() -> bool:
                pod = await client.get("pods", "web-1", NS)
                return bool(pod["metadata"].get("ownerReferences"))

            await eventually(adopted, timeout=20)
            # A bad update is refused by the API and changes nothing.
            try:
                await client.patch(STS, "web", {"spec": {"replicas": -1}}, NS)
            except StatusError as err:
                assert err.code == 422
            else:
                raise AssertionError("negative replicas accepted")
            assert (await client.get(STS, "web", NS))["spec"]["replicas"] == 2

    asyncio.run(scenario())


def test_pure_helpers() -> None:
    pod = {"metadata": {"name": "my-set-12"}}
    assert sts_mod.parent_and_ordinal(pod) == ("my-set", 12)
    assert sts_mod.parent_and_ordinal({"metadata": {"name": "nodigits"}}) == ("", -1)
    sts = statefulset("db", replicas=2)
    sts["metadata"]["uid"] = "u1"
    sts["spec"]["ordinals"] = {"start": 5}
    assert sts_mod.in_ordinal_range({"metadata": {"name": "db-5"}}, sts)
    assert sts_mod.in_ordinal_range({"metadata": {"name": "db-6"}}, sts)
    assert not sts_mod.in_ordinal_range({"metadata": {"name": "db-7"}}, sts)
    assert not sts_mod.in_ordinal_range({"metadata": {"name": "db-4"}}, sts)
    made = sts_mod.new_pod(sts, 5)
    assert made["metadata"]["name"] == "db-5"
    assert sts_mod.identity_matches(sts, made) and sts_mod.storage_matches(sts, made)
    made["metadata"]["labels"].pop(sts_mod.POD_NAME_LABEL)
    assert not sts_mod.identity_matches(sts, made)


def test_kubectl_rollout_history_and_undo(tmp_path: Path) -> None:
    """The real kubectl reads the revisions and rolls back through them."""
    from tests.cluster import start_cluster

    cluster = start_cluster(tmp_path, "--disable-controller-manager", "--disable-scheduler",
                            "--disable-admission-plugins", "ServiceAccount")

    async def scenario() -> None:
        client = Client.from_kubeconfig(cluster.kubeconfig)
        try:
            async with running(run_controllers(client, only={"statefulset"})):
                await client.create(STS, statefulset(replicas=1, claims=False))
                await bring_up(client, ["web-0"])
                await eventually(lambda: status_shows(client, readyReplicas=1), timeout=30)
                await asyncio.to_thread(
                    cluster.kubectl, "set", "image", "statefulset/web", "c=nginx:2")
                await eventually(lambda: _at_image(client, "nginx:2"), timeout=30)
                await set_running(client, "web-0")
                await eventually(lambda: status_shows(client, updatedReplicas=1,
                                                      readyReplicas=1), timeout=30)

                history = await asyncio.to_thread(
                    cluster.kubectl, "rollout", "history", "statefulset/web")
                rows = [line.split()[0] for line in history.stdout.splitlines()[2:] if line]
                assert rows == ["1", "2"], history.stdout
                shown = await asyncio.to_thread(
                    cluster.kubectl, "rollout", "history", "statefulset/web", "--revision=1")
                assert "nginx:1" in shown.stdout

                undo = await asyncio.to_thread(
                    cluster.kubectl, "rollout", "undo", "statefulset/web")
                assert "rolled back" in undo.stdout
                await eventually(lambda: _at_image(client, "nginx:1"), timeout=30)
                await set_running(client, "web-0")
                history = await asyncio.to_thread(
                    cluster.kubectl, "rollout", "history", "statefulset/web")
                rows = [line.split()[0] for line in history.stdout.splitlines()[2:] if line]
                assert rows == ["2", "3"], history.stdout
                bad = await asyncio.to_thread(
                    lambda: cluster.kubectl("rollout", "undo", "statefulset/web",
                                            "--to-revision=9", check=False))
                assert bad.returncode != 0 and "unable to find specified revision" in \
                    bad.stderr, bad.stderr
        finally:
            await client.close()

    try:
        asyncio.run(scenario())
    finally:
        cluster.stop(signal.SIGKILL)  # a throwaway server: no need to wait for a clean exit


async def _at_image(client: Client, image: str) -> bool:
    pod = (await live_pods(client)).get("web-0")
    return pod is not None and pod["spec"]["containers"][0]["image"] == image
