"""A node for agent tests: a network namespace playing the node, a data directory, and
an AgentConfig over them; `cleanup_node` leaves nothing behind (processes, mounts,
cgroups, namespaces, nft tables live in the namespace), also when a test failed."""

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
from typing import Any

import pytest

from kubi.kubelet.agent import AgentConfig
from kubi.kubelet.runtime import cgroups
from kubi.kubelet.runtime.network import NETNS_DIR, connect_in_netns
from tests.conftest_registry import LocalRegistry

TOOLS = ("runc", "ip", "nft", "unshare", "nsenter", "mount")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
POD_CIDR = "10.244.9.0/24"
NODE_IP = "10.244.9.1"  # the bridge's address: what the node namespace reaches pods from


@dataclass
class AgentNode:
    config: AgentConfig
    netns: str
    data_dir: Path
    cgroup_root: str

    @property
    def netns_path(self) -> str:
        return str(NETNS_DIR / self.netns)


def require_tools(*extra: str) -> None:
    """Skip unless root with the node's tools (and `extra` ones) on PATH."""
    missing = MISSING + [tool for tool in extra if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        pytest.skip(f"needs root and {', '.join((*TOOLS, *extra))} "
                    f"(missing: {', '.join(missing) or 'root'})")


def new_netns(prefix: str = "kubi-test") -> str:
    """A fresh network namespace with loopback up, to play a node (cleanup_node deletes it)."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    return name


def processes_under(root: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if str(root).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
    return found


def mounts_under(root: Path) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(root))]


def namespaces_of(node: AgentNode) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return [n.name for n in NETNS_DIR.iterdir() if n.name.startswith(node.netns + "-p")]


@contextlib.contextmanager
def agent_node(tmp_path: Path, registry: LocalRegistry, **overrides: Any) -> Iterator[AgentNode]:
    require_tools()
    netns = new_netns()
    tag = netns.removeprefix("kubi-test-")
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    options: dict[str, Any] = {
        "node_name": "node-1", "data_dir": data_dir, "node_ip": NODE_IP,
        "pod_cidr": POD_CIDR, "node_netns": netns, "netns_prefix": f"{netns}-p",
        "cgroup_root": f"/kubi-test-{tag}", "registries_config": registry.registries_yaml,
        "crash_backoff_base": 1.0, "image_backoff_base": 1.0, "heartbeat": 2.0,
        "sync_period": 2.0, "housekeeping_interval": 1.0, "cluster_dns": ["10.96.0.10"],
        **overrides}
    node = AgentNode(AgentConfig(**options), netns, data_dir, f"/kubi-test-{tag}")
    try:
        yield node
    finally:
        cleanup_node(node)


def cleanup_node(node: AgentNode) -> None:
    runtime_root = node.data_dir / "runtime"
    with contextlib.suppress(Exception):
        from kubi.kubelet.runtime.oci import OciRuntime

        async def remove_all() -> None:
            runtime = OciRuntime(runtime_root, None, cgroup_root=node.cgroup_root)
            for container in await runtime.list_containers():
                await runtime.remove_container(container.id)
        asyncio.run(remove_all())
    for pid in processes_under(node.data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    runc_root = runtime_root / "runc"
    if runc_root.is_dir():
        for state in runc_root.iterdir():
            subprocess.run(["runc", "--root", str(runc_root), "delete", "--force", state.name],
                           capture_output=True, check=False)
    for point in sorted(mounts_under(node.data_dir), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    for pid in cgroups.processes(node.cgroup_root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    cgroups.remove(node.cgroup_root)
    for name in [*namespaces_of(node), node.netns]:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
    shutil.rmtree(node.data_dir, ignore_errors=True)


async def http_get(node: AgentNode, ip: str, port: int, path: str = "/") -> tuple[int, str]:
    """A GET from the node's namespace; (status code, body)."""
    reader, writer = await connect_in_netns(node.netns_path, port, ip)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return int(head.split()[1]), body
