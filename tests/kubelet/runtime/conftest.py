"""Fixtures for the runtime tests: a busybox rootfs, a network namespace playing the
node, and an `OciRuntime` that leaves nothing behind (processes, mounts, cgroups,
namespaces), also when a test fails. Tests that need them are skipped only when runc,
ip, nft, unshare or busybox are not installed (CI installs them) or when not root."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubi.kubelet.runtime import cgroups
from kubi.kubelet.runtime.network import NETNS_DIR, NetworkConfig, PodNetwork
from kubi.kubelet.runtime.oci import OciRuntime

TOOLS = ("runc", "ip", "nft", "unshare", "nsenter", "busybox")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
needs_root = pytest.mark.skipif(
    bool(MISSING) or os.geteuid() != 0,
    reason=f"needs root and {', '.join(TOOLS)} (missing: {', '.join(MISSING) or 'root'})")

POD_CIDR = "10.244.7.0/24"


def build_rootfs(target: Path) -> Path:
    """A root file system from Debian's busybox-static: the binary and its applet links."""
    busybox = shutil.which("busybox")
    assert busybox is not None
    (target / "bin").mkdir(parents=True)
    shutil.copy(busybox, target / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (target / "bin" / applet).symlink_to("busybox")
    for directory in ("etc", "tmp", "www", "proc", "sys", "dev", "root"):
        (target / directory).mkdir(exist_ok=True)
    (target / "tmp").chmod(0o1777)
    (target / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        "app:x:1000:1000:app:/:/bin/sh\n")
    (target / "etc" / "group").write_text(
        "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nextra:x:2000:app\n")
    (target / "www" / "index.html").write_text("hello from httpd\n")
    return target


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("busybox") is None:
        pytest.skip("busybox (Debian busybox-static) is not installed")
    return build_rootfs(tmp_path_factory.mktemp("rootfs") / "rootfs")


@dataclass
class Node:
    runtime: OciRuntime
    network: PodNetwork
    netns: str  # the namespace playing the node
    prefix: str  # of every network namespace this test made
    root: Path
    cgroup_root: str


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def leftover_processes(root: Path) -> list[int]:
    """Processes whose command line mentions the runtime root (shims, runc, holders)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if str(root).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
    return found


def leftover_mounts(root: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(root) in line]


def cleanup(node: Node) -> None:
    with contextlib.suppress(Exception):
        async def remove_all() -> None:
            for sandbox in await node.runtime.list_pod_sandbox():
                await node.runtime.remove_pod_sandbox(sandbox.id)
            for container in await node.runtime.list_containers():
                await node.runtime.remove_container(container.id)
        asyncio.run(remove_all())
    for pid in leftover_processes(node.root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    runc_root = node.root / "runc"
    if runc_root.is_dir():
        for state in runc_root.iterdir():
            _run("runc", "--root", str(runc_root), "delete", "--force", state.name)
    for line in leftover_mounts(node.root):
        _run("umount", "-l", line.split()[4])
    for pid in cgroups.processes(node.cgroup_root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    cgroups.remove(node.cgroup_root)
    if NETNS_DIR.is_dir():
        for netns in NETNS_DIR.iterdir():
            if netns.name.startswith(node.prefix) or netns.name == node.netns:
                _run("ip", "netns", "delete", netns.name)
    shutil.rmtree(node.root, ignore_errors=True)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    if MISSING or os.geteuid() != 0:
        pytest.skip(f"needs root and {', '.join(TOOLS)}")
    tag = secrets.token_hex(4)
    netns = f"kubi-test-{tag}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    root = tmp_path / "runtime"
    network = PodNetwork(NetworkConfig(pod_cidr=POD_CIDR, node_netns=netns,
                                       netns_prefix=f"{netns}-p"), root / "network")
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    made = Node(OciRuntime(root, network, cgroup_root=f"/kubi-test-{tag}"), network, netns,
                netns, root, f"/kubi-test-{tag}")
    try:
        yield made
    finally:
        cleanup(made)
