"""The book's pod walkthrough with real containers: `kubi server` with its node agent
(runc), images from a real local registry mirrored as docker.io, the real kubectl.

Pod networking lives in a network namespace this test makes, never the host's."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubi.kubelet.agent import AgentConfig
from tests.cluster import Cluster, start_cluster
from tests.conftest_registry import LocalRegistry
from tests.kubelet.agent_env import AgentNode, cleanup_node

TOOLS = ("runc", "ip", "nft", "nsenter", "unshare", "curl")


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, registry: LocalRegistry) -> Iterator[
        tuple[Cluster, str]]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"needs root and {', '.join(missing) or 'root'}")
    netns = f"kubi-test-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    data = tmp_path_factory.mktemp("kubi-real")
    cluster = start_cluster(data, "--registries", str(registry.registries_yaml),
                            "--node-name", "book-node", agent_netns=netns)
    try:
        yield cluster, netns
    finally:
        cluster.kubectl("delete", "pods", "--all", "--grace-period=0", "--force",
                        check=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "simple-echo" in cluster.kubectl(
                "get", "pods", check=False).stdout:
            time.sleep(0.5)
        cluster.stop()
        # Whatever is left (after a failure too): containers, mounts, cgroups, namespaces.
        cleanup_node(AgentNode(AgentConfig("book-node", data / "agent"), netns,
                               data / "agent", f"/{netns}"))


def wait_for(check: object, timeout: float = 180, cluster: Cluster | None = None) -> object:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()  # type: ignore[operator]
        if last:
            return last
        time.sleep(0.5)
    state = ""
    if cluster is not None:
        state = cluster.kubectl("describe", "pods", check=False).stdout[-4000:]
    raise AssertionError(f"condition not met; last value {last!r}\n{state}")


def pod(cluster: Cluster, name: str) -> dict:
    result = cluster.kubectl("get", "pod", name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def test_the_books_pod_walkthrough(real: tuple[Cluster, str], seed_dir: Path) -> None:
    cluster, netns = real
    wait_for(lambda: " Ready " in cluster.kubectl("get", "nodes").stdout)
    manifest = str(seed_dir / "manifests" / "simple-pod.yml")
    cluster.kubectl("apply", "-f", manifest)

    def running() -> bool:
        rows = cluster.kubectl("get", "pod").stdout.splitlines()
        return any(r.split()[:3] == ["simple-echo", "2/2", "Running"] for r in rows)

    wait_for(running, cluster=cluster)
    ip = pod(cluster, "simple-echo")["status"]["podIP"]
    # A request to nginx, which proxies to echo over localhost inside the pod.
    answer = subprocess.run(["ip", "netns", "exec", netns, "curl", "-s", f"http://{ip}/"],
                            capture_output=True, text=True, timeout=30).stdout
    assert "Hello Docker!!" in answer

    follower = subprocess.Popen(["kubectl", "logs", "-f", "simple-echo", "-c", "echo"],
                                stdout=subprocess.PIPE, text=True, env=cluster.env())
    try:
        assert follower.stdout is not None
        line = ""
        deadline = time.monotonic() + 60
        while "received request" not in line and time.monotonic() < deadline:
            line = follower.stdout.readline()
        assert "received request" in line
    finally:
        follower.terminate()
        follower.wait(timeout=10)

    shell = cluster.kubectl("exec", "-i", "simple-echo", "-c", "nginx", "--", "sh",
                            input="echo hello-from-$(hostname)\nexit 0\n")
    assert "hello-from-simple-echo" in shell.stdout
    code = cluster.kubectl("exec", "simple-echo", "-c", "nginx", "--", "sh", "-c", "exit 3",
                           check=False)
    assert code.returncode == 3

    cluster.kubectl("delete", "pod", "simple-echo")
    assert pod(cluster, "simple-echo") == {}
    cluster.kubectl("apply", "-f", manifest)
    wait_for(running)
    cluster.kubectl("delete", "-f", manifest)
    assert pod(cluster, "simple-echo") == {}


def test_a_missing_image_backs_off(real: tuple[Cluster, str]) -> None:
    cluster, _ = real
    cluster.kubectl("run", "ghost", "--image=gihyodocker/does-not-exist:1.0")

    def reason() -> str:
        statuses = pod(cluster, "ghost").get("status", {}).get("containerStatuses") or []
        return ((statuses[0].get("state") or {}).get("waiting") or {}).get("reason", "") \
            if statuses else ""

    wait_for(lambda: reason() == "ImagePullBackOff")
    events = cluster.kubectl("get", "events", "--field-selector",
                             "involvedObject.name=ghost").stdout
    assert "gihyodocker/does-not-exist:1.0" in events
    cluster.kubectl("delete", "pod", "ghost", "--grace-period=0", "--force")
