"""Pod start-up latency with real containers (runc), the image already present.

Starts a local registry with the book's images, a `kubi server` whose node agent keeps
pod networking in a network namespace of its own, pre-pulls the image, then creates N
pods at once and measures, through a watch, creation -> Running and creation -> Ready.
Reference: the upstream SLO is p99 <= 5 s (pod startup, image present); Kubi aims at
p99 < 500 ms and 100 pods Running on one 2-core node in < 30 s.

    .venv/bin/python bench/pods.py [--pods 100] [--rate 5]   (root, runc, docker-registry)
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kubi.kubelet.agent import AgentConfig
from tests.cluster import Cluster, start_cluster
from tests.conftest_registry import run_registry, write_registries_yaml
from tests.images import push_images
from tests.kubelet.agent_env import AgentNode, cleanup_node, new_netns


def pod(name: str, labels: dict[str, str] | None = None) -> bytes:
    return orjson.dumps({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": name,
                                      "labels": {"bench": "pods"} if labels is None else labels},
                         "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
                             "name": "c", "image": "busybox:latest",
                             "imagePullPolicy": "IfNotPresent",
                             "command": ["sleep", "3600"]}]}})


Latencies = dict[str, list[float]]


def start_up(cluster: Cluster, began: float) -> dict[str, float]:
    """Seconds from starting `kubi server` until its API answers, its node is Ready and a
    first pod, created as soon as the API answered, is Running (its image pulled from the
    local registry)."""
    marks = {"API ready": time.perf_counter() - began}
    with cluster.http() as client:
        client.post("/api/v1/namespaces/default/pods", content=pod("first", {}),
                    headers={"content-type": "application/json"}).raise_for_status()
        deadline = time.monotonic() + 120
        while len(marks) < 3 and time.monotonic() < deadline:
            now = time.perf_counter() - began
            if "node Ready" not in marks and any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for n in client.get("/api/v1/nodes").json()["items"]
                    for c in n.get("status", {}).get("conditions") or []):
                marks["node Ready"] = now
            if "first pod Running" not in marks and client.get(
                    "/api/v1/namespaces/default/pods/first").json().get(
                    "status", {}).get("phase") == "Running":
                marks["first pod Running"] = now
            time.sleep(0.02)
    return marks


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(cluster: Cluster, count: int, rate: float = 0.0
            ) -> tuple[Latencies, float, float]:
    """Per measure, the sorted latencies from creation; then how long the creations and
    the whole run took. `rate`: pods created per second (0: all at once)."""
    created: dict[str, float] = {}
    scheduled: dict[str, float] = {}
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
                    if obj.get("spec", {}).get("nodeName"):
                        scheduled.setdefault(name, now)
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
            if rate:  # paced: pod i goes out i/rate seconds after the first
                time.sleep(max(0.0, began + i / rate - time.perf_counter()))
            name = f"bench-{i:04d}"
            created[name] = time.perf_counter()
            r = client.post("/api/v1/namespaces/default/pods", content=pod(name),
                            headers={"content-type": "application/json"})
            r.raise_for_status()
        posted = time.perf_counter() - began
        done.wait(600)
        elapsed = time.perf_counter() - began
    latencies = {measure: sorted(seen[n] - created[n] for n in created if n in seen)
                 for measure, seen in (("scheduled", scheduled), ("Running", running),
                                       ("Ready", ready))}
    return latencies, posted, elapsed


def cpu_times(pid: int) -> tuple[float, float]:
    """(seconds of CPU the process used, seconds its reaped children used)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def shims_cpu(data: Path) -> float:
    """CPU seconds of the container shims under `data` and of the runc they reaped."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if b"shim.py" in cmdline and str(data).encode() in cmdline:
                own, children = cpu_times(int(entry.name))
                total += own + children
        except OSError:
            continue
    return total


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] * 1000 if values else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.0, metavar="PODS_PER_S",
                        help="create pods at this pace instead of all at once (as the "
                             "upstream SLO's load tests do)")
    parser.add_argument("--profile", metavar="FILE",
                        help="record the server (and its agent) with py-spy while measuring")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with run_registry(tmp / "registry") as (address, _):
            push_images(f"http://{address}")
            registries = write_registries_yaml(tmp / "registries.yaml", address)
            netns = new_netns("kubi-bench")
            data = tmp / "kubi"
            began = time.perf_counter()
            cluster = start_cluster(data, "--registries", str(registries), "--node-name",
                                    "bench-node", agent_netns=netns)
            try:
                marks = start_up(cluster, began)
                rss_idle = rss_mib(cluster.process.pid)
                cluster.kubectl("delete", "pod", "first", "--grace-period=0", "--force")
                profiler = None
                if args.profile:
                    profiler = subprocess.Popen(
                        ["py-spy", "record", "--pid", str(cluster.process.pid), "--rate",
                         "100", "--nonblocking", "--format", "raw", "--output", args.profile],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1.0)
                server_before = cpu_times(cluster.process.pid)
                shims_before = shims_cpu(data)
                try:
                    latencies, posted, elapsed = measure(cluster, args.pods, args.rate)
                finally:
                    if profiler is not None:
                        profiler.send_signal(signal.SIGINT)
                        profiler.wait(30)
                server_after = cpu_times(cluster.process.pid)
                rss_busy = rss_mib(cluster.process.pid)
                cpu = {"server (API, scheduler, agent)": server_after[0] - server_before[0],
                       "commands the server ran": server_after[1] - server_before[1],
                       "container shims and runc": shims_cpu(data) - shims_before}
                cluster.kubectl("delete", "pods", "-l", "bench=pods", "--grace-period=0",
                                "--force")
            finally:
                cluster.stop()
                cleanup_node(AgentNode(AgentConfig("bench-node", data / "agent"), netns,
                                       data / "agent", f"/{netns}"))
    pace = f"at {args.rate:g} pods/s" if args.rate else "at once"
    print(f"kubi pod start-up: {args.pods} pods created {pace} on one node (runc or crun), "
          "image present, measured through a watch\n")
    print("| measure | pods | p50 | p99 |")
    print("| --- | --- | --- | --- |")
    for measure_name, values in latencies.items():
        median = statistics.median(values) * 1000 if values else 0.0
        print(f"| creation -> {measure_name} | {len(values)} | {median:.0f} ms | "
              f"{pct(values, 0.99):.0f} ms |")
    to_ready = latencies["Ready"]
    print(f"\nall {len(to_ready)} Ready in {elapsed:.1f} s "
          f"({len(to_ready) / elapsed:.1f} containers/s); the {args.pods} creations took "
          f"{posted:.1f} s")
    print("start-up: " + ", ".join(f"{what} {seconds:.2f} s" for what, seconds in marks.items())
          + f"; server RSS (API server and agent in one process) {rss_idle:.0f} MiB with one "
          f"pod, {rss_busy:.0f} MiB with {len(to_ready)}")
    print("CPU per pod: " + ", ".join(f"{what} {seconds / args.pods * 1000:.0f} ms"
                                      for what, seconds in cpu.items()))
    print("reference: upstream SLO p99 <= 5 s; Kubi's aim: p99 < 500 ms, 100 pods in < 30 s")


if __name__ == "__main__":
    main()
