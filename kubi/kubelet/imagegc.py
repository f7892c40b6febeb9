"""Periodic image garbage collection, as the kubelet's image GC manager runs it.

Every `period` seconds: when the image filesystem is used above `high_percent`, unused
images go, least recently used first, until use would be at `low_percent`. Images that
containers use hold a lease on their root filesystem in the store, so they are never
candidates. When not enough could be freed the node gets a `FreeDiskSpaceFailed`
warning; when collection itself fails, `ImageGCFailed`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kubi.kubelet.images import ImageStore
from kubi.kubelet.images.store import GCResult

log = logging.getLogger("kubi.kubelet.imagegc")

# (event type, reason, message) about the node.
Recorder = Callable[[str, str, str], Awaitable[None]]


@dataclass(frozen=True)
class ImageGCPolicy:
    """The kubelet's defaults: imageGCHighThresholdPercent 85, low 80, every 5 minutes."""

    high_percent: int = 85
    low_percent: int = 80
    period: float = 300.0

    def __post_init__(self) -> None:
        if not 0 <= self.low_percent <= self.high_percent <= 100:
            raise ValueError(f"image GC thresholds: need 0 <= low ({self.low_percent}) <= "
                             f"high ({self.high_percent}) <= 100")
        if self.period <= 0:
            raise ValueError(f"image GC period must be positive, not {self.period}")


async def collect_images(images: ImageStore, policy: ImageGCPolicy,
                         record: Recorder) -> GCResult | None:
    """One pass; the store's file work runs off the event loop."""
    try:
        capacity, available = await asyncio.to_thread(images.disk_usage)
        result = await asyncio.to_thread(images.gc, policy.high_percent, policy.low_percent,
                                         capacity=capacity, available=available)
    except OSError as err:
        await record("Warning", "ImageGCFailed", f"failed to garbage collect images: {err}")
        return None
    if result.usage_percent >= policy.high_percent:
        wanted = (capacity - available) - capacity * policy.low_percent // 100
        if result.freed_bytes < wanted:
            await record("Warning", "FreeDiskSpaceFailed",
                         f"Failed to garbage collect required amount of images. Attempted to "
                         f"free {wanted} bytes, but only found {result.freed_bytes} bytes "
                         f"eligible to free.")
    if result.removed:
        log.info("image GC removed %d image(s), %d bytes", len(result.removed),
                 result.freed_bytes)
    return result


async def run_image_gc(images: ImageStore, policy: ImageGCPolicy, record: Recorder) -> None:
    while True:
        await asyncio.sleep(policy.period)
        await collect_images(images, policy, record)
