"""Pod start-up latency with real containers (runc), the image already present.

Starts a local registry with the book's images, a `kubi server` whose node agent keeps
pod networking in a network namespace of its own, pre-pulls the image, then creates N
pods at once and measures, through a watch, creation -> Running and creation -> Ready.
Reference: the upstream SLO is p99 <= 5 s (pod startup, image present); Kubi aims at
p99 < 500 ms and 100 pods Running on one 2-core node in < 30 s.

    .venv/bin/python bench/pods.py [--pods 100]     (root, runc, docker-registry)
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kubi.kubelet.agent import AgentConfig
from tests.cluster import Cluster, start_cluster
from tests.conftest_registry import run_registry
from tests.images import push_images
from tests.kubelet.agent_env import AgentNode, cleanup_node


def pod(name: str) -> bytes:
    return orjson.dumps({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": name, "labels": {"bench": "pods"}},
                         "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
                             "name": "c", "image": "busybox:latest",
                             "imagePullPolicy": "IfNotPresent",
                             "command": ["sleep", "3600"]}]}})


def measure(cluster: Cluster, count: int) -> tuple[list[float], list[float], float]:
    created: dict[str, float] = {}
    running: dict[str, float] = {}
    ready: dict[str, float] = {}
    done = threading.Event()
    with cluster.http() as client:
        rv = client.get("/api/v1/namespaces/default/pods").json()["metadata"][
            "resourceVersion"]

        def watch() -> None:
            with cluster.http() as watcher, watcher.stream(
                    "GET", "/api/v1/namespaces/default/pods",
                    params={"watch": "true", "resourceVersion": rv}, timeout=None) as stream:
                for line in stream.iter_lines():
                    obj = orjson.loads(line)["object"]
                    name = obj["metadata"]["name"]
                    now = time.perf_counter()
                    if obj.get("status", {}).get("phase") == "Running":
                        running.setdefault(name, now)
                    if any(c.get("type") == "Ready" and c.get("status") == "True"
                           for c in obj.get("status", {}).get("conditions") or []):
                        ready.setdefault(name, now)
                    if len(ready) >= count:
                        done.set()
                        return

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        time.sleep(0.5)
        began = time.perf_counter()
        for i in range(count):
            name = f"bench-{i:04d}"
            created[name] = time.perf_counter()
            r = client.post("/api/v1/namespaces/default/pods", content=pod(name),
                            headers={"content-type": "application/json"})
            r.raise_for_status()
        done.wait(600)
        elapsed = time.perf_counter() - began
    to_running = sorted(running[n] - created[n] for n in created if n in running)
    to_ready = sorted(ready[n] - created[n] for n in created if n in ready)
    return to_running, to_ready, elapsed


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] * 1000 if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        netns = f"kubi-bench-{secrets.token_hex(3)}"
        with run_registry(tmp / "registry") as (address, _):
            push_images(f"http://{address}")
            registries = tmp / "registries.yaml"
            registries.write_text(yaml.safe_dump({
                "mirrors": {"docker.io": {"endpoint": [f"http://{address}"]}},
                "disable-default-endpoint": True}))
            subprocess.run(["ip", "netns", "add", netns], check=True)
            subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
            data = tmp / "kubi"
            cluster = start_cluster(data, "--registries", str(registries), "--node-name",
                                    "bench-node", agent_netns=netns)
            try:
                while " Ready " not in cluster.kubectl("get", "nodes").stdout:
                    time.sleep(0.2)
                cluster.kubectl("run", "warm", "--image=busybox:latest", "--", "sleep", "1")
                cluster.kubectl("wait", "--for=condition=Ready", "pod/warm", "--timeout=120s")
                cluster.kubectl("delete", "pod", "warm", "--grace-period=0", "--force")
                to_running, to_ready, elapsed = measure(cluster, args.pods)
                cluster.kubectl("delete", "pods", "-l", "bench=pods", "--grace-period=0",
                                "--force")
            finally:
                cluster.stop()
                cleanup_node(AgentNode(AgentConfig("bench-node", data / "agent"), netns,
                                       data / "agent", f"/{netns}"))
    print(f"kubi pod start-up: {args.pods} pods created at once on one node (runc), "
          "image present, measured through a watch\n")
    print("| measure | pods | p50 | p99 |")
    print("| --- | --- | --- | --- |")
    print(f"| creation -> Running | {len(to_running)} | "
          f"{statistics.median(to_running) * 1000:.0f} ms | {pct(to_running, 0.99):.0f} ms |")
    print(f"| creation -> Ready | {len(to_ready)} | "
          f"{statistics.median(to_ready) * 1000:.0f} ms | {pct(to_ready, 0.99):.0f} ms |")
    print(f"\nall {len(to_ready)} Ready in {elapsed:.1f} s "
          f"({len(to_ready) / elapsed:.1f} containers/s)")
    print("reference: upstream SLO p99 <= 5 s; Kubi's aim: p99 < 500 ms, 100 pods in < 30 s")


if __name__ == "__main__":
    main()
