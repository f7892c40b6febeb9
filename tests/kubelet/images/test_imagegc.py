"""The agent's periodic image GC pass: unused images go, images under a container's root
filesystem stay, and a node event says when not enough could be freed."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from kubi.kubelet.imagegc import ImageGCPolicy, collect_images
from kubi.kubelet.images import ImageStore
from tests.images import build_images, write_docker_save

ECHO = "gihyodocker/echo:latest"


def test_a_pass_keeps_images_in_use_and_reports_what_it_could_not_free(
        tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "data")
    images = build_images()
    for name in ("busybox:latest", ECHO):
        archive = tmp_path / f"{uuid.uuid4().hex}.tar"
        write_docker_save(images[name], archive)
        store.import_archive(archive)
        os.unlink(archive)
    container = tmp_path / "container"
    container.mkdir()
    store.prepare_rootfs("busybox:latest", container, method="copy")
    events: list[tuple[str, str, str]] = []

    async def record(kind: str, reason: str, message: str) -> None:
        events.append((kind, reason, message))

    try:
        # Below the high threshold (100% is never exceeded): nothing goes, nothing said.
        quiet = asyncio.run(collect_images(store, ImageGCPolicy(100, 100), record))
        assert quiet is not None and quiet.removed == [] and events == []
        # A 0% threshold wants the whole disk back: the unused echo image goes, busybox
        # (a container's root filesystem) stays, and the shortfall is reported.
        result = asyncio.run(collect_images(store, ImageGCPolicy(0, 0), record))
        assert result is not None and len(result.removed) == 1
        assert [i.repo_tags for i in store.list_images()] == [
            ["docker.io/library/busybox:latest"]]
        [(kind, reason, message)] = events
        assert (kind, reason) == ("Warning", "FreeDiskSpaceFailed")
        assert message.startswith("Failed to garbage collect required amount of images. "
                                  "Attempted to free ")
        assert f"but only found {result.freed_bytes} bytes eligible to free." in message
    finally:
        store.release_rootfs(container)
        store.close()


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="low"):
        ImageGCPolicy(high_percent=50, low_percent=60)
    with pytest.raises(ValueError, match="100"):
        ImageGCPolicy(high_percent=120, low_percent=80)
    with pytest.raises(ValueError, match="period"):
        ImageGCPolicy(period=0)
