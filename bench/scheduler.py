"""Scheduler throughput: pods bound per second on 1,000 and 5,000 nodes, 10,000 pods.

Nodes and pods are created first through the in-process client (not timed); then the
scheduler starts, syncs its informers and binds every pod through the same client, so
the API server, SQLite and the watch fan-out share this one Python process with it.
Printed beside upstream's reference: scheduler_perf SchedulingBasic, 5,000 nodes /
10,000 pods, >= 680 pods/s (Go, many cores, separate API server).

    .venv/bin/python bench/scheduler.py [--pods 10000] [--nodes 1000 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kubi.scheduler import Scheduler
from tests.harness import api_server

UPSTREAM_PODS_PER_SECOND = 680


def node(index: int) -> dict[str, Any]:
    resources = {"cpu": "4", "memory": "32Gi", "pods": "110"}
    name = f"node-{index}"
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"capacity": resources, "allocatable": resources,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(index: int) -> dict[str, Any]:
    # scheduler_perf's pod-default.yaml: one container requesting 100m / 500Mi.
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"pod-{index}", "namespace": "default"},
            "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                     "resources": {"requests": {"cpu": "100m",
                                                                "memory": "500Mi"}}}]}}


async def create_all(count: int, make: Callable[[int], Awaitable[Any]], workers: int = 16
                     ) -> None:
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            await make(index)

    await asyncio.gather(*(worker() for _ in range(workers)))


async def measure(nodes: int, pods: int) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as data:
        async with api_server(Path(data)) as (_api, client):
            await create_all(nodes, lambda i: client.create("nodes", node(i)))
            await create_all(pods, lambda i: client.create("pods", pod(i), "default"))
            scheduler = Scheduler(client, seed=1)
            began = time.perf_counter()
            task = asyncio.create_task(scheduler.run())
            await scheduler.informers.wait_synced()
            synced = time.perf_counter()
            while scheduler.scheduled < pods:
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
            finished = time.perf_counter()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return pods / (finished - synced), pods / (finished - began), \
                scheduler.events.dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1_000, 5_000])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print("| nodes | pods | Kubi pods/s (after sync) | incl. informer sync | "
          "events dropped | upstream reference |")
    print("|---|---|---|---|---|---|")
    for count in args.nodes:
        rate, overall, dropped = asyncio.run(measure(count, args.pods))
        reference = f">= {UPSTREAM_PODS_PER_SECOND}/s" if count == 5_000 else "-"
        print(f"| {count:,} | {args.pods:,} | {rate:,.0f} | {overall:,.0f} | {dropped:,} | "
              f"{reference} |", flush=True)


if __name__ == "__main__":
    main()
