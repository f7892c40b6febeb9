"""Image updates redeploy pods: a tag moved in a real registry restarts the rollout."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kubi.controllers.manager import run_controllers
from kubi.kubelet.freshpod import OBSERVED_ANNOTATION, RESTARTED_AT, ImageWatcher
from kubi.kubelet.images.distribution import DistributionClient, push_image
from kubi.kubelet.images.registries import load_registries
from tests.conftest_registry import LocalRegistry
from tests.harness import api_server, eventually, running
from tests.images import MEDIA_OCI_MANIFEST, build_images, registry_path


def deployment(name: str, image: str, **annotations: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}}


def move_tag(reg: LocalRegistry, source: str, target: str) -> None:
    image = build_images()[source]
    repo, tag = target.rsplit(":", 1)
    with DistributionClient() as client:
        push_image(client, reg.url, registry_path(repo), tag, image.blobs(), image.manifest,
                   MEDIA_OCI_MANIFEST)


def test_a_moved_tag_restarts_only_opted_in_workloads(tmp_path: Path,
                                                      registry: LocalRegistry) -> None:
    move_tag(registry, "gihyodocker/echo:latest", "kubi/fresh:latest")

    async def scenario() -> None:
        async with api_server(tmp_path) as (_, client):
            await client.create("deployments.apps", deployment(
                "watched", "kubi/fresh:latest", **{"kubi.dev/watch-images": "true"}))
            await client.create("deployments.apps", deployment("ignored", "kubi/fresh:latest"))
            pinned = deployment("pinned", "kubi/fresh:latest",
                                **{"kubi.dev/watch-images": "true"})
            pinned["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = \
                "IfNotPresent"
            await client.create("deployments.apps", pinned)
            watcher = ImageWatcher(client, load_registries(registry.registries_yaml))
            async with running(run_controllers(client, only={"deployment", "replicaset"})):
                assert await watcher.check_once() == []  # first sight: record, no restart
                watched = await client.get("deployments.apps", "watched", "default")
                assert "fresh:latest" in watched["metadata"]["annotations"][OBSERVED_ANNOTATION]
                assert await watcher.check_once() == []  # nothing moved

                await asyncio.to_thread(move_tag, registry, "gihyodocker/echo:patched",
                                        "kubi/fresh:latest")
                assert await watcher.check_once() == ["deployments.apps/default/watched"]
                watched = await client.get("deployments.apps", "watched", "default")
                assert RESTARTED_AT in watched["spec"]["template"]["metadata"]["annotations"]

                async def second_replicaset() -> bool:
                    sets = (await client.list("replicasets.apps", "default",
                                              label_selector="app=watched"))["items"]
                    return len(sets) == 2

                await eventually(second_replicaset)
                assert await watcher.check_once() == []  # restarted once, not again
                for name in ("ignored", "pinned"):
                    other = await client.get("deployments.apps", name, "default")
                    assert RESTARTED_AT not in (other["spec"]["template"]["metadata"]
                                                .get("annotations") or {})
                events = (await client.list("events", "default"))["items"]
                assert any(e["reason"] == "ImageUpdated" and
                           e["involvedObject"]["name"] == "watched" for e in events)

    asyncio.run(scenario())
