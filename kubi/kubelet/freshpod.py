"""Image updates redeploy pods (the book's `freshpod`).

For workloads that opt in (the `kubi.dev/watch-images: "true"` annotation, or every
workload with `kubi server --watch-images`), the watcher resolves each image pulled
with `imagePullPolicy: Always` in its registry. When a tag moves to a new digest it
restarts the workload the way `kubectl rollout restart` does (a pod-template
annotation), so the rollout pulls the new image. The digests last seen are kept on
the workload itself, so a restart of the watcher neither misses nor repeats one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from kubi.api import meta as m
from kubi.api.errors import StatusError
from kubi.client.events import NORMAL, EventRecorder
from kubi.client.rest import Client
from kubi.kubelet.images.distribution import DistributionClient, DistributionError
from kubi.kubelet.images.reference import InvalidReferenceError, parse_reference
from kubi.kubelet.images.registries import RegistriesConfig

log = logging.getLogger("kubi.freshpod")

Obj = dict[str, Any]

WATCH_ANNOTATION = "kubi.dev/watch-images"
OBSERVED_ANNOTATION = "kubi.dev/observed-image-digests"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
WORKLOADS = ("deployments.apps", "statefulsets.apps", "daemonsets.apps")


def watched_images(workload: Obj) -> list[str]:
    """Images the workload pulls on every start (policy Always), in spec order."""
    spec = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
    images: list[str] = []
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        image = container.get("image")
        if image and container.get("imagePullPolicy") == "Always" and image not in images:
            images.append(image)
    return images


class ImageWatcher:
    def __init__(self, client: Client, registries: RegistriesConfig | None = None, *,
                 watch_all: bool = False, interval: float = 30.0) -> None:
        self.client = client
        self.registries = registries
        self.watch_all = watch_all
        self.interval = interval
        self.recorder = EventRecorder(client, "kubi-image-watcher")

    def _opted_in(self, workload: Obj) -> bool:
        annotations = workload["metadata"].get("annotations") or {}
        return self.watch_all or annotations.get(WATCH_ANNOTATION) == "true"

    def _resolve(self, images: list[str]) -> dict[str, str]:
        """image -> current repo digest; images that cannot be resolved are left out."""
        digests: dict[str, str] = {}
        with DistributionClient(self.registries) as registry:
            for image in images:
                try:
                    digests[image] = registry.resolve(parse_reference(image)).digest
                except (DistributionError, InvalidReferenceError) as err:
                    log.info("cannot resolve %s: %s", image, err)
        return digests

    async def check_once(self) -> list[str]:
        """One pass over every opted-in workload; returns those restarted."""
        candidates: list[tuple[str, Obj]] = []
        for resource in WORKLOADS:
            items, _ = await self.client.list_all(resource)
            candidates += [(resource, w) for w in items if self._opted_in(w)]
        wanted = sorted({i for _, w in candidates for i in watched_images(w)})
        digests = await asyncio.to_thread(self._resolve, wanted) if wanted else {}
        restarted = []
        for resource, workload in candidates:
            if await self._check(resource, workload, digests):
                meta = workload["metadata"]
                restarted.append(f"{resource}/{meta['namespace']}/{meta['name']}")
        return restarted

    async def _check(self, resource: str, workload: Obj, digests: dict[str, str]) -> bool:
        meta = workload["metadata"]
        raw = (meta.get("annotations") or {}).get(OBSERVED_ANNOTATION, "{}")
        try:
            observed = orjson.loads(raw)
            if not isinstance(observed, dict):
                observed = {}
        except orjson.JSONDecodeError:
            observed = {}
        current = {i: digests[i] for i in watched_images(workload) if i in digests}
        moved = [i for i, d in current.items() if i in observed and observed[i] != d]
        if current == {i: observed.get(i) for i in current}:
            return False
        patch: Obj = {"metadata": {"annotations": {
            OBSERVED_ANNOTATION: orjson.dumps({**observed, **current}).decode()}}}
        if moved:
            patch["spec"] = {"template": {"metadata": {"annotations": {
                RESTARTED_AT: m.rfc3339(m.now())}}}}
        try:
            await self.client.patch(resource, meta["name"], patch, meta["namespace"],
                                    patch_type="strategic")
        except StatusError as err:
            log.warning("cannot update %s %s/%s: %s", resource, meta["namespace"],
                        meta["name"], err)
            return False
        for image in moved:
            await self.recorder.event(workload, NORMAL, "ImageUpdated",
                                      f"Image {image} moved to {current[image]}; restarting "
                                      f"the rollout")
        return bool(moved)

    async def run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception as err:  # the API or a registry is down: try again later
                log.warning("image watch pass failed: %s", err)
            await asyncio.sleep(self.interval)
