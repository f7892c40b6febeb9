"""Footprint of a real Kubi cluster: start-up times, memory and idle CPU.

Phase 1, `kubi server` with its node agent (one process), pod networking in a network
namespace of its own, busybox already imported with `kubi images import`:
  exec -> /readyz OK (fresh data dir, which makes the CA; then a restart over it),
  exec -> the first pod Running (the pod is created as soon as the API answers),
  RSS after 30 s idle with that pod running (VmRSS), CPU over the next 30 s
  (utime+stime from /proc/PID/stat, as % of one core).
Phase 2, `kubi server --disable-agent` and a separate `kubi agent --runtime oci`: the
same for each process alone, so the agent's share is seen apart.
Each number is printed beside Kubi's aim and the peer reference (k3s: server about
1.6 GB with a workload, agent about 275 MB; peers reported at 5-40 % of a CPU idle).

    .venv/bin/python bench/footprint.py [--idle 30]    (root, runc, ip, nft)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kubi.kubelet.agent import AgentConfig
from tests.cluster import Cluster, free_port
from tests.images import build_images, write_docker_save
from tests.kubelet.agent_env import AgentNode, cleanup_node, new_netns

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IMAGE = "busybox:latest"
KUBI = [sys.executable, "-m", "kubi.cli.main"]


# -- /proc ------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime+stime of every thread (and of waited-for children, e.g. runc calls)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLOCK_TICKS


def shims_of(data_dir: Path) -> list[int]:
    """The per-container supervising shims of a node's data dir."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"shim.py" in cmdline and str(data_dir).encode() in cmdline:
                found.append(int(proc.name))
    return found


@dataclass
class Usage:
    """RSS after idling, and CPU over the next window, of some processes."""

    rss: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core


def idle_usage(processes: dict[str, Callable[[], list[int]]], idle: float,
               children: set[str]) -> Usage:
    """Wait `idle` seconds, read RSS, then CPU over another `idle` seconds."""
    time.sleep(idle)
    usage = Usage()
    pids = {name: find() for name, find in processes.items()}
    for name, group in pids.items():
        usage.rss[name] = sum(rss_bytes(p) for p in group)
    start = {name: sum(cpu_seconds(p, name in children) for p in group)
             for name, group in pids.items()}
    began = time.monotonic()
    time.sleep(idle)
    wall = time.monotonic() - began
    for name, group in pids.items():
        used = sum(cpu_seconds(p, name in children) for p in group) - start[name]
        usage.cpu[name] = used / wall * 100
    return usage


# -- the cluster ------------------------------------------------------------------------


def launch_server(data_dir: Path, *extra: str) -> tuple[Cluster, float]:
    """`kubi server` and the seconds from exec to /readyz answering ok."""
    port = free_port()
    home = data_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    with (data_dir.parent / f"{data_dir.name}.log").open("ab") as log:
        began = time.perf_counter()
        process = subprocess.Popen([*KUBI, "server", "--data-dir", str(data_dir), "--port",
                                    str(port), *extra], stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    cluster = Cluster(data_dir, port, process, home)
    context: ssl.SSLContext | None = None
    deadline = began + 60
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kubi server exited ({process.returncode}); see {log.name}")
        try:
            if context is None and Path(cluster.ca).exists():
                context = ssl.create_default_context(cafile=cluster.ca)
            if context is not None and httpx.get(f"{cluster.url}/readyz", verify=context,
                                                 timeout=2).text == "ok":
                return cluster, time.perf_counter() - began
        except (httpx.HTTPError, ssl.SSLError, OSError):
            pass  # not listening yet, or the CA file half written
        time.sleep(0.01)
    cluster.stop(signal.SIGKILL)
    raise RuntimeError("kubi server did not become ready in 60 s")


def launch_agent(cluster: Cluster, data_dir: Path, node: str, netns: str
                 ) -> subprocess.Popen[bytes]:
    with (data_dir.parent / f"{data_dir.name}.log").open("ab") as log:
        return subprocess.Popen(
            [*KUBI, "agent", "--server", cluster.url, "--token-file",
             str(cluster.data_dir / "node-token"), "--ca-file", cluster.ca,
             "--runtime", "oci", "--node-name", node, "--data-dir", str(data_dir),
             "--agent-netns", netns, "--node-ip", "127.0.0.1", "--kubelet-address",
             "127.0.0.1", "--kubelet-port", "0"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def pod_manifest(name: str) -> bytes:
    return orjson.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                         "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
                             "name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                             "command": ["sleep", "3600"]}]}})


def run_first_pod(cluster: Cluster, name: str, timeout: float = 120) -> float:
    """Create a pod as soon as the API takes it; the perf_counter when it ran."""
    deadline = time.perf_counter() + timeout
    with cluster.http() as client:
        while True:
            # Refused until the service-account controller made `default`.
            created = client.post("/api/v1/namespaces/default/pods",
                                  content=pod_manifest(name),
                                  headers={"content-type": "application/json"})
            if created.status_code in (201, 409):
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"pod not accepted: {created.text}")
            time.sleep(0.01)
        while time.perf_counter() < deadline:
            pod = client.get(f"/api/v1/namespaces/default/pods/{name}").json()
            if (pod.get("status") or {}).get("phase") == "Running":
                return time.perf_counter()
            time.sleep(0.01)
    raise RuntimeError(f"pod {name} not Running in {timeout} s")


def import_image(agent_dir: Path, archive: Path) -> None:
    subprocess.run([*KUBI, "images", "--data-dir", str(agent_dir), "import", str(archive)],
                   check=True, capture_output=True)


# -- the phases -------------------------------------------------------------------------


@dataclass
class Results:
    ready_fresh: float = 0.0
    ready_again: float = 0.0
    first_pod: float = 0.0
    agent_first_pod: float = 0.0
    together: Usage = field(default_factory=Usage)
    apart: Usage = field(default_factory=Usage)


def one_process(tmp: Path, archive: Path, idle: float, results: Results) -> None:
    netns = new_netns("kubi-bench")
    data = tmp / "server"
    data.mkdir()
    import_image(data / "agent", archive)
    began = time.perf_counter()
    cluster: Cluster | None = None
    try:
        cluster, results.ready_fresh = launch_server(data, "--node-name", "bench-node",
                                                     "--agent-netns", netns)
        results.first_pod = run_first_pod(cluster, "first") - began
        server = cluster.process.pid
        results.together = idle_usage(
            {"server": lambda: [server], "shims": lambda: shims_of(data / "agent")},
            idle, children={"server"})
        cluster.stop()
        # A restart over the same data dir (the pod's container is adopted, not rerun).
        cluster, results.ready_again = launch_server(data, "--node-name", "bench-node",
                                                     "--agent-netns", netns)
        cluster.kubectl("delete", "pod", "first", "--grace-period=0", "--force",
                        check=False)
    finally:
        if cluster is not None:
            cluster.stop()
        cleanup_node(AgentNode(AgentConfig("bench-node", data / "agent"), netns,
                               data / "agent", f"/{netns}"))


def two_processes(tmp: Path, archive: Path, idle: float, results: Results) -> None:
    netns = new_netns("kubi-bench")
    data = tmp / "control-plane"
    data.mkdir()
    agent_dir = tmp / "node"
    import_image(agent_dir, archive)
    cluster: Cluster | None = None
    agent: subprocess.Popen[bytes] | None = None
    try:
        cluster, _ = launch_server(data, "--disable-agent")
        began = time.perf_counter()
        agent = launch_agent(cluster, agent_dir, "bench-agent", netns)
        results.agent_first_pod = run_first_pod(cluster, "first") - began
        server, agent_pid = cluster.process.pid, agent.pid
        results.apart = idle_usage(
            {"server": lambda: [server], "agent": lambda: [agent_pid],
             "shims": lambda: shims_of(agent_dir)}, idle, children={"agent"})
        cluster.kubectl("delete", "pod", "first", "--grace-period=0", "--force",
                        check=False)
    finally:
        if agent is not None and agent.poll() is None:
            agent.terminate()
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        if cluster is not None:
            cluster.stop()
        cleanup_node(AgentNode(AgentConfig("bench-agent", agent_dir), netns, agent_dir,
                               f"/{netns}"))


# -- the table --------------------------------------------------------------------------


def mb(size: int) -> str:
    return f"{size / 2**20:.0f} MB"


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def print_table(results: Results, idle: float) -> None:
    together, apart = results.together, results.apart
    k3s_rss = "k3s server ≈ 1.6 GB with a workload, agent ≈ 275 MB"
    k3s_cpu = "peers 5-40 % of a CPU idle"
    rows = [
        ("`kubi server` exec -> /readyz ok, fresh data dir (makes the CA)",
         f"{results.ready_fresh:.2f} s", "< 2 s", results.ready_fresh < 2, "-"),
        ("`kubi server` exec -> /readyz ok, restart over its data dir",
         f"{results.ready_again:.2f} s", "< 2 s", results.ready_again < 2, "-"),
        ("`kubi server` exec -> first pod Running (image imported)",
         f"{results.first_pod:.2f} s", "< 3 s", results.first_pod < 3, "-"),
        ("`kubi agent` exec -> first pod Running (server already up)",
         f"{results.agent_first_pod:.2f} s", "< 3 s", results.agent_first_pod < 3, "-"),
        (f"RSS, `kubi server` with its agent (one process), {idle:.0f} s idle",
         mb(together.rss["server"]), "< 80 MB (agent)", together.rss["server"] < 80 * 2**20,
         k3s_rss),
        ("RSS, `kubi server --disable-agent`", mb(apart.rss["server"]), "-", True, "k3s "
         "server ≈ 1.6 GB"),
        ("RSS, `kubi agent` alone", mb(apart.rss["agent"]), "< 80 MB",
         apart.rss["agent"] < 80 * 2**20, "k3s agent ≈ 275 MB"),
        ("RSS, the idle pod's container shim (one per container)", mb(apart.rss["shims"]),
         "-", True, "-"),
        (f"CPU idle over {idle:.0f} s, `kubi server` with its agent (+ runc calls)",
         f"{together.cpu['server']:.2f} %", "< 1 % of a core", together.cpu["server"] < 1,
         k3s_cpu),
        ("CPU idle, `kubi server --disable-agent`", f"{apart.cpu['server']:.2f} %",
         "< 1 % of a core", apart.cpu["server"] < 1, k3s_cpu),
        ("CPU idle, `kubi agent` alone (+ runc calls)", f"{apart.cpu['agent']:.2f} %",
         "< 1 % of a core", apart.cpu["agent"] < 1, k3s_cpu),
        ("CPU idle, container shims", f"{apart.cpu['shims']:.2f} %", "-", True, "-"),
    ]
    print("kubi footprint: real containers (runc/crun) in a network namespace, one idle "
          f"busybox pod; {os.cpu_count()} CPUs\n")
    print("| measure | kubi | aim | met | peer reference |")
    print("| --- | --- | --- | --- | --- |")
    for measure, value, aim, ok, peer in rows:
        print(f"| {measure} | {value} | {aim} | {verdict(ok) if aim != '-' else '-'} | "
              f"{peer} |")
    print("\nCPU is utime+stime of all threads from /proc/PID/stat (agent rows add their "
          "waited children: runc/crun calls), as % of one core; RSS is VmRSS.")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=float, default=30.0,
                        help="seconds idle before RSS, and the CPU window (default 30)")
    args = parser.parse_args()
    missing = [t for t in ("runc", "ip", "nft", "nsenter", "unshare") if not shutil.which(t)]
    if missing or os.geteuid() != 0:
        sys.exit(f"footprint.py needs root and {', '.join(missing) or 'root'}")
    results = Results()
    with tempfile.TemporaryDirectory(prefix="kubi-footprint-") as tmp_name:
        tmp = Path(tmp_name)
        archive = tmp / "busybox.tar"
        write_docker_save(build_images()[IMAGE], archive)
        one_process(tmp, archive, args.idle, results)
        two_processes(tmp, archive, args.idle, results)
    print_table(results, args.idle)


if __name__ == "__main__":
    main()
