"""Fixtures for the runtime tests: a busybox rootfs, a network namespace playing the
node, and an `OciRuntime` that leaves nothing behind (processes, mounts, cgroups,
namespaces), also when a test fails. Tests that need them are skipped only when runc,
ip, nft, unshare or busybox are not installed (CI installs them) or when not root.

`node` runs runc unless a test asks for crun (`@BOTH_RUNTIMES`); crun tests are skipped
when crun is not installed or cannot work here even after `crun_usable` mounted hugetlb
as a v1 hierarchy (it unmounts it again when it did)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubi.kubelet.runtime import cgroups
from kubi.kubelet.runtime.network import NETNS_DIR, NetworkConfig, PodNetwork
from kubi.kubelet.runtime.oci import OciRuntime
from kubi.kubelet.runtime.runtimes import problem_of

TOOLS = ("runc", "ip", "nft", "unshare", "nsenter", "busybox")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
needs_root = pytest.mark.skipif(
    bool(MISSING) or os.geteuid() != 0,
    reason=f"needs root and {', '.join(TOOLS)} (missing: {', '.join(MISSING) or 'root'})")

POD_CIDR = "10.244.7.0/24"
HUGETLB = Path("/sys/fs/cgroup/hugetlb")
BOTH_RUNTIMES = pytest.mark.parametrize("node", ["runc", "crun"], indirect=True)


def _mounted_as_v1(controller: str) -> bool:
    return controller in cgroups.hierarchies()


def _remove_empty_cgroups(mount: Path) -> list[str]:
    """rmdir every child cgroup (deepest first); what is left still has processes."""
    left = []
    for directory in sorted((p for p in mount.rglob("*") if p.is_dir()),
                            key=lambda p: len(p.parts), reverse=True):
        try:
            directory.rmdir()
        except OSError:
            left.append(str(directory))
    return left


@pytest.fixture(scope="session")
def crun_usable() -> Iterator[str]:
    """crun's path once it works on this host, mounting hugetlb as a v1 hierarchy if
    that is what it lacks (crun 1.8 refuses a hybrid host with controllers on v2)."""
    crun = shutil.which("crun")
    if crun is None:
        pytest.skip("crun (Debian crun) is not installed")
    mounted = False
    problem = problem_of(crun)
    if "hybrid" in problem and not _mounted_as_v1("hugetlb") and not HUGETLB.exists():
        HUGETLB.mkdir()
        result = _run("mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", str(HUGETLB))
        if result.returncode == 0:
            mounted = True
            problem = problem_of(crun)
        else:
            HUGETLB.rmdir()
    try:
        if problem:
            pytest.skip(f"crun does not work on this host: {problem}")
        yield crun
    finally:
        if mounted:
            # Cgroups left in the hierarchy would keep it (and hugetlb) alive unmounted.
            left = _remove_empty_cgroups(HUGETLB)
            _run("umount", str(HUGETLB))
            HUGETLB.rmdir()
            if left:
                warnings.warn(f"processes in {left} keep hugetlb's v1 hierarchy alive",
                              stacklevel=1)


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
    runtime_name: str = "runc"

    @property
    def state_root(self) -> Path:
        return self.root / self.runtime_name


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
    for name in ("runc", "crun"):
        state_root = node.root / name
        if state_root.is_dir() and shutil.which(name):
            for state in state_root.iterdir():
                _run(name, "--root", str(state_root), "delete", "--force", state.name)
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
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    if MISSING or os.geteuid() != 0:
        pytest.skip(f"needs root and {', '.join(TOOLS)}")
    runtime_name: Any = getattr(request, "param", "runc")
    if runtime_name == "crun":
        request.getfixturevalue("crun_usable")
    tag = secrets.token_hex(4)
    netns = f"kubi-test-{tag}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    root = tmp_path / "runtime"
    network = PodNetwork(NetworkConfig(pod_cidr=POD_CIDR, node_netns=netns,
                                       netns_prefix=f"{netns}-p"), root / "network")
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    made = Node(OciRuntime(root, network, runtime=runtime_name,
                           cgroup_root=f"/kubi-test-{tag}"),
                network, netns, netns, root, f"/kubi-test-{tag}", runtime_name)
    try:
        yield made
    finally:
        cleanup(made)
