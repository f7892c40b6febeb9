"""Two machines' worth: `kubi server --disable-agent` and a separate `kubi agent --runtime
oci` process joining it over HTTPS with the node token, running real containers (runc
or crun).

The agent's pod networking lives in a network namespace this test makes; its API (logs,
exec) listens and is advertised on loopback only."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubi.kubelet.agent import KUBELET_VERSION, AgentConfig
from kubi.kubelet.runtime import cgroups
from tests.cluster import Cluster, free_port, start_cluster
from tests.conftest_registry import LocalRegistry
from tests.kubelet.agent_env import (
    AgentNode,
    cleanup_node,
    mounts_under,
    namespaces_of,
    new_netns,
    processes_under,
    require_tools,
)

NODE = "edge-1"


@dataclass
class Edge:
    """The cluster and the agent process that plays another machine."""

    cluster: Cluster
    node: AgentNode
    registries: Path
    kubelet_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.node.data_dir.parent / "agent.log"

    def command(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "kubi.cli.main", "agent", "--server", self.cluster.url,
                "--token-file", str(self.cluster.data_dir / "node-token"),
                "--ca-file", self.cluster.ca, "--runtime", "oci", "--node-name", NODE,
                "--data-dir", str(self.node.data_dir), "--registries", str(self.registries),
                "--agent-netns", self.node.netns, "--node-ip", "127.0.0.1",
                "--kubelet-address", "127.0.0.1", "--kubelet-port", str(self.kubelet_port),
                *extra]

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError("kubi agent ignored SIGTERM") from None
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as after a crash or the OOM killer."""
        assert self.process is not None and self.process.poll() is None
        self.process.kill()
        self.process.wait(timeout=30)

    def container_ids(self) -> set[str]:
        """What the OCI runtime (runc or crun, each with its state root) has on the node."""
        found: set[str] = set()
        for binary in ("runc", "crun"):
            root = self.node.data_dir / "runtime" / binary
            if root.is_dir() and shutil.which(binary):
                listed = subprocess.run([binary, "--root", str(root), "list", "-q"],
                                        capture_output=True, text=True, check=True).stdout
                found |= set(listed.split())
        return found


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, registry: LocalRegistry) -> Iterator[Edge]:
    require_tools("curl")
    netns = new_netns()
    base = tmp_path_factory.mktemp("kubi-edge")
    data = base / "agent"
    data.mkdir()
    node = AgentNode(AgentConfig(NODE, data), netns, data, f"/{netns}")
    edge = Edge(start_cluster(base / "server"), node, registry.registries_yaml, free_port())
    try:
        edge.start()
        yield edge
    finally:
        if edge.process is not None:
            edge.stop()
        edge.cluster.stop()
        cleanup_node(node)  # whatever a failure left: containers, mounts, cgroups, netns


def wait_for(check: Callable[[], Any], edge: Edge, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if edge.process is not None and edge.process.poll() is not None:
            raise AssertionError(f"kubi agent exited ({edge.process.returncode}):\n"
                                 f"{edge.log.read_text()[-4000:]}")
        last = check()
        if last:
            return last
        time.sleep(0.5)
    state = edge.cluster.kubectl("describe", "pods", check=False).stdout[-3000:]
    raise AssertionError(f"condition not met; last value {last!r}\n{state}\n"
                         f"{edge.log.read_text()[-3000:]}")


def node_ready(edge: Edge) -> bool:
    result = edge.cluster.kubectl("get", "node", NODE, "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = json.loads(result.stdout)["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def echo_pods(edge: Edge) -> list[dict[str, Any]]:
    pods = json.loads(edge.cluster.kubectl("get", "pods", "-l", "app=echo", "-o",
                                           "json").stdout)["items"]
    return [p for p in pods if "deletionTimestamp" not in p["metadata"]]


def running(pods: list[dict[str, Any]], count: int) -> bool:
    return len(pods) == count and all(
        p["status"].get("phase") == "Running"
        and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}])
        for p in pods)


def curl(edge: Edge, ip: str) -> str:
    return subprocess.run(["ip", "netns", "exec", edge.node.netns, "curl", "-s", "-m", "5",
                           f"http://{ip}:8080/"], capture_output=True, text=True,
                          timeout=30).stdout


def containers(pods: list[dict[str, Any]]) -> dict[str, tuple[str, int]]:
    """pod name -> (container ID, restart count) of its one container."""
    return {p["metadata"]["name"]: (p["status"]["containerStatuses"][0]["containerID"],
                                    p["status"]["containerStatuses"][0]["restartCount"])
            for p in pods}


def test_agent_joins_and_its_node_is_ready(edge: Edge) -> None:
    wait_for(lambda: node_ready(edge), edge, timeout=60)
    node = json.loads(edge.cluster.kubectl("get", "node", NODE, "-o", "json").stdout)
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == KUBELET_VERSION
    assert re.fullmatch(r"(runc|crun)://\d\S*", info["containerRuntimeVersion"]), info
    assert info["operatingSystem"] == "linux"
    assert info["kernelVersion"] == os.uname().release
    assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]

    def kubelet_url() -> str:
        got = json.loads(edge.cluster.kubectl("get", "node", NODE, "-o", "json").stdout)
        return str((got["metadata"].get("annotations") or {}).get("kubi.dev/kubelet-url", ""))

    # Served on, and advertised as, the loopback address and port it was given.
    assert wait_for(kubelet_url, edge, timeout=30) == f"https://127.0.0.1:{edge.kubelet_port}"
    row = edge.cluster.kubectl("get", "node", NODE, "-o", "wide").stdout.splitlines()[1]
    assert " Ready " in row and "127.0.0.1" in row and info["containerRuntimeVersion"] in row


def test_deployment_runs_on_the_agent_and_survives_its_restart(edge: Edge) -> None:
    cluster = edge.cluster
    wait_for(lambda: node_ready(edge), edge, timeout=60)
    cluster.kubectl("create", "deployment", "echo", "--image=gihyodocker/echo:latest",
                    "--replicas=2")
    pods = wait_for(lambda: running(echo_pods(edge), 2) and echo_pods(edge), edge)
    assert {p["spec"]["nodeName"] for p in pods} == {NODE}
    before = containers(pods)
    assert all(count == 0 for _, count in before.values())

    # logs and exec go through the API server to the agent's own endpoint.
    name = pods[0]["metadata"]["name"]
    assert "Hello Docker!!" in curl(edge, pods[0]["status"]["podIP"])
    wait_for(lambda: "received request" in cluster.kubectl("logs", name).stdout, edge, 30)
    shell = cluster.kubectl("exec", name, "--", "sh", "-c", "echo exec-in-$(hostname)")
    assert shell.stdout.strip() == f"exec-in-{name}"
    code = cluster.kubectl("exec", name, "--", "sh", "-c", "exit 4", check=False)
    assert code.returncode == 4

    ids_before = edge.container_ids()
    assert edge.stop() == 0
    # The containers outlive their agent.
    assert "Hello Docker!!" in curl(edge, pods[1]["status"]["podIP"])
    assert edge.container_ids() == ids_before
    edge.start()
    # A third replica proves the new agent has synced its pods; the first two are adopted.
    cluster.kubectl("scale", "deployment", "echo", "--replicas=3")
    pods = wait_for(lambda: running(echo_pods(edge), 3) and echo_pods(edge), edge)
    after = containers(pods)
    assert {n: after[n] for n in before} == before  # same container IDs, no restart
    new_ids = edge.container_ids() - ids_before
    # One OCI container per pod (no pause container): the new pod's only.
    assert ids_before <= edge.container_ids() and len(new_ids) == 1
    third = next(p for p in pods if p["metadata"]["name"] not in before)
    assert after[third["metadata"]["name"]][0].split("//")[-1] in new_ids, (after, new_ids)
    shell = cluster.kubectl("exec", name, "--", "sh", "-c", "echo again-$(hostname)")
    assert shell.stdout.strip() == f"again-{name}"

    # Killed outright, the agent finds the same containers when it comes back.
    ids_before_kill = edge.container_ids()
    edge.kill()
    assert "Hello Docker!!" in curl(edge, pods[2]["status"]["podIP"])
    edge.start()
    cluster.kubectl("scale", "deployment", "echo", "--replicas=4")
    pods = wait_for(lambda: running(echo_pods(edge), 4) and echo_pods(edge), edge)
    survived = containers(pods)
    assert {n: survived[n] for n in after} == after  # same IDs, restartCount 0
    assert ids_before_kill <= edge.container_ids()
    assert len(edge.container_ids() - ids_before_kill) == 1

    cluster.kubectl("delete", "deployment", "echo")
    wait_for(lambda: not echo_pods(edge) and not cluster.kubectl(
        "get", "pods", "-o", "name").stdout.strip(), edge, 120)
    # Nothing of the pods is left on the node.
    wait_for(lambda: not edge.container_ids(), edge, 60)
    agent_pid = edge.process.pid if edge.process else -1
    assert [p for p in processes_under(edge.node.data_dir) if p != agent_pid] == []
    assert mounts_under(edge.node.data_dir) == []
    assert namespaces_of(edge.node) == []
    assert cgroups.processes(edge.node.cgroup_root) == set()
    assert [d for root in cgroups.directories(edge.node.cgroup_root)
            for d in root.iterdir() if d.is_dir()] == []


def run_agent(edge: Edge, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubi.cli.main", "agent", "--server",
                           edge.cluster.url, "--token-file",
                           str(edge.cluster.data_dir / "node-token"), "--runtime", "oci",
                           "--node-name", "intruder", "--data-dir",
                           str(edge.node.data_dir.parent / "intruder"), *args],
                          capture_output=True, text=True, timeout=60)


def test_agent_with_a_wrong_ca_says_so(edge: Edge, tmp_path: Path) -> None:
    from kubi.apiserver.certs import ensure_credentials

    other = ensure_credentials(tmp_path / "other-cluster")
    wrong = run_agent(edge, "--ca-file", str(other.ca_cert))
    assert wrong.returncode == 1, wrong.stderr
    assert "cannot verify the certificate" in wrong.stderr
    assert str(other.ca_cert) in wrong.stderr and "certificate verify failed" in wrong.stderr
    assert "Traceback" not in wrong.stderr

    no_ca = run_agent(edge)
    assert no_ca.returncode == 1 and "--ca-file" in no_ca.stderr, no_ca.stderr

    missing = run_agent(edge, "--ca-file", str(tmp_path / "absent.crt"))
    assert missing.returncode == 2 and "absent.crt: no such file" in missing.stderr

    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    bad = run_agent(edge, "--ca-file", str(garbage))
    assert bad.returncode == 2 and "not a PEM CA certificate" in bad.stderr, bad.stderr

    # None of them registered a node.
    assert "intruder" not in edge.cluster.kubectl("get", "nodes").stdout
