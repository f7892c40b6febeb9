"""Cluster scale with simulated nodes: how long 5,000 nodes take to register and be Ready,
and 10,000 pods (as Deployments) to be scheduled and Running, all in ONE Python process:
the API server over SQLite, the controller manager, the scheduler and the simulated
nodes, talking through the in-process client. Printed beside KWOK's reference numbers
(5,000 nodes in 60 s, 10,000 pods in 60 s, with a separate Go API server and etcd).

    .venv/bin/python bench/scale.py [--nodes 5000] [--pods 10000] [--deployments 100]
                                    [--pods-directly] [--timeout 600]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kubi.client.rest import Client
from kubi.controllers.manager import run_controllers
from kubi.kubelet.simulated import SimulatedNodes, simulated_pool
from kubi.util.aio import cancel_and_wait
from tests.harness import api_server

KWOK_NODES_SECONDS = 60.0  # KWOK: 5,000 nodes in about a minute
KWOK_PODS_SECONDS = 60.0  # KWOK: 10,000 pods in about a minute


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def wait_until(done: Callable[[], bool], tasks: list[asyncio.Task[Any]],
                     timeout: float, progress: Callable[[], str] = lambda: "") -> float:
    """Seconds until `done()`; progress goes to stderr every 5 s."""
    began = time.perf_counter()
    reported = began
    while not done():
        for task in tasks:
            if task.done():
                task.result()
        now = time.perf_counter()
        if now - began > timeout:
            raise TimeoutError(f"not done in {timeout:.0f}s ({progress()})")
        if now - reported >= 5 and progress():
            print(f"  {now - began:6.1f}s {progress()}", file=sys.stderr, flush=True)
            reported = now
        await asyncio.sleep(0.05)
    return time.perf_counter() - began


def deployment(name: str, replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{
                                      "name": "app", "image": "registry.k8s.io/pause:3.10",
                                      "resources": {"requests": {"cpu": "10m",
                                                                 "memory": "16Mi"}}}]}}}}


def pod(index: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"pod-{index}", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}}


def ready_nodes(pool: SimulatedNodes) -> int:
    count = 0
    for node in pool.node_informer.cache.list():
        for condition in (node.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready" and condition.get("status") == "True":
                count += 1
    return count


def running_pods(pool: SimulatedNodes) -> int:
    return sum(1 for p in pool.pod_informer.cache.list()
               if (p.get("status") or {}).get("phase") == "Running")


def registered_nodes(pool: SimulatedNodes) -> int:
    """Nodes whose create returned: they are Ready from that moment (status is set on
    create), as `kubectl get nodes` would show."""
    return sum(1 for n in pool.nodes.values() if n.registered)


async def create_pods(client: Client, count: int, how: str, nodes: int) -> None:
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            await client.create("pods", pod(index), "default")
            if how == "by hand":
                name = f"pod-{index}"
                await client.post("pods", name, "binding", {
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": name, "namespace": "default"},
                    "target": {"apiVersion": "v1", "kind": "Node",
                               "name": f"kubi-sim-{index % nodes}"}}, "default")

    await asyncio.gather(*(worker() for _ in range(16)))


async def measure(nodes: int, pods: int, deployments: int, timeout: float,
                  pods_directly: bool = False) -> dict[str, Any]:
    have_scheduler = importlib.util.find_spec("kubi.scheduler") is not None
    have_workloads = all(importlib.util.find_spec(f"kubi.controllers.{name}") is not None
                         for name in ("deployment", "replicaset"))
    how = ("Deployments" if have_workloads and have_scheduler and not pods_directly else
           "pods + kubi.scheduler" if have_scheduler else "pods bound by hand")
    with tempfile.TemporaryDirectory() as data:
        async with api_server(Path(data)) as (_api, client):
            tasks: list[asyncio.Task[Any]] = []
            try:
                return await _measure(client, tasks, how, nodes, pods, deployments, timeout)
            finally:
                await cancel_and_wait(tasks)


async def _measure(client: Client, tasks: list[asyncio.Task[Any]], how: str, nodes: int,
                   pods: int, deployments: int, timeout: float) -> dict[str, Any]:
    pool = simulated_pool(client, nodes)
    began = time.perf_counter()
    tasks.append(asyncio.create_task(pool.run()))
    nodes_ready = await wait_until(
        lambda: registered_nodes(pool) >= nodes, tasks, timeout,
        lambda: f"{registered_nodes(pool):,} nodes registered")
    await wait_until(
        lambda: ready_nodes(pool) >= nodes, tasks, timeout,
        lambda: f"{ready_nodes(pool):,} Ready nodes seen by a watch")
    nodes_seen = time.perf_counter() - began
    await wait_until(
        lambda: all(n.lease is not None for n in pool.nodes.values()), tasks, timeout)
    leases_done = time.perf_counter() - began
    if how == "Deployments":
        tasks.append(asyncio.create_task(run_controllers(client)))
    if how != "pods bound by hand":
        from kubi.scheduler import run_scheduler
        tasks.append(asyncio.create_task(run_scheduler(client)))
    await asyncio.sleep(1.0)  # informers sync on an idle cluster (not timed)
    began = time.perf_counter()
    if how == "Deployments":
        per = [pods // deployments + (1 if i < pods % deployments else 0)
               for i in range(deployments)]
        for i, replicas in enumerate(per):
            await client.create("deployments.apps", deployment(f"scale-{i}", replicas),
                                "default")
    else:
        await create_pods(client, pods, "by hand" if how == "pods bound by hand" else "",
                          nodes)
    await wait_until(lambda: running_pods(pool) >= pods, tasks, timeout,
                     lambda: f"{len(pool.pod_informer.cache.keys()):,} pods bound, "
                             f"{running_pods(pool):,} Running")
    pods_running = time.perf_counter() - began
    return {"how": how, "nodes_ready": nodes_ready, "nodes_seen": nodes_seen,
            "leases": leases_done, "pods_running": pods_running,
            "rss": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5_000)
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--pods-directly", action="store_true",
                        help="create bare pods (bound by kubi.scheduler) instead of Deployments")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    try:
        result = asyncio.run(measure(args.nodes, args.pods, args.deployments, args.timeout,
                                     args.pods_directly))
    except TimeoutError as err:
        print(f"| a phase did not finish: {err} | peak RSS {peak_rss_mib():,.0f} MiB |")
        raise SystemExit(1) from None
    print(f"pods created as: {result['how']}; one process, {args.nodes:,} simulated nodes")
    print("| measurement | Kubi | KWOK reference |")
    print("|---|---|---|")
    print(f"| {args.nodes:,} nodes registered and Ready | {result['nodes_ready']:.1f} s | "
          f"{KWOK_NODES_SECONDS:.0f} s (5,000 nodes) |")
    print(f"| ... all seen Ready through a watch | {result['nodes_seen']:.1f} s | - |")
    print(f"| ... and every node Lease created | {result['leases']:.1f} s | - |")
    print(f"| {args.pods:,} pods scheduled and Running | {result['pods_running']:.1f} s | "
          f"{KWOK_PODS_SECONDS:.0f} s (10,000 pods) |")
    print(f"| peak RSS | {result['rss']:,.0f} MiB | - |")


if __name__ == "__main__":
    main()
