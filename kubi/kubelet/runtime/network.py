"""Pod networking on one node: a network namespace per pod, joined to a bridge.

Like the CNI bridge + host-local + portmap plugins: the bridge (kubi0) holds the first
address of the node's pod CIDR and is every pod's default gateway; each pod gets a veth
pair (hairpin on its bridge port, so a pod can reach itself through a Service), an
address from the CIDR (allocations persisted in a file, released on teardown), loopback
up, and a default route. Traffic from the pod CIDR to elsewhere is masqueraded, and
hostPort mappings are DNAT rules, both in an nftables table (iptables when nft is
missing).

Everything node-side happens in the agent's network namespace, or in `node_netns` (a
name under /run/netns) when given: tests use a namespace of their own as the node.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubi.kubelet.runtime.interface import (
    InvalidArgumentError,
    PortMapping,
    RuntimeServiceError,
)

NETNS_DIR = Path("/run/netns")


@dataclass
class NetworkConfig:
    pod_cidr: str
    bridge: str = "kubi0"
    node_netns: str | None = None  # None: the namespace this process runs in
    netns_prefix: str = "kubi-"
    table: str = "kubi"  # nftables table / iptables chain prefix
    mtu: int = 1500


@dataclass
class PodNetworkInfo:
    netns: str  # name under /run/netns
    netns_path: str
    ip: str
    host_veth: str


# Threads that start commands and wait for them. Starting a process blocks the caller
# until the child has exec'd, which on a loaded node means waiting for the scheduler to
# run the child: done on the event loop, that stalls the API server and every pod.
# Processes meant to outlive the command (oci.py's shims) start here too: close_fds
# keeps the agent's other descriptors out of them.
_RUNNERS = concurrent.futures.ThreadPoolExecutor(max_workers=16,
                                                 thread_name_prefix="kubi-run")


def _run_blocking(argv: tuple[str, ...], stdin: bytes | None) -> tuple[int, bytes]:
    result = subprocess.run(argv, input=stdin,
                            stdin=subprocess.DEVNULL if stdin is None else None,
                            capture_output=True, close_fds=True, check=False)
    return result.returncode, result.stderr + result.stdout


async def run(*argv: str, stdin: bytes | None = None, check: bool = True) -> tuple[int, str]:
    """Run a command; returns (exit code, stderr + stdout). Raises when `check` and it fails."""
    code, output = await asyncio.get_running_loop().run_in_executor(
        _RUNNERS, _run_blocking, argv, stdin)
    text = output.decode(errors="replace").strip()
    if check and code != 0:
        raise RuntimeServiceError(f"{' '.join(argv[:4])}… failed ({code}): {text}")
    return code, text


# $1 the pod's namespace, $2 the node's ("": ours), $3 and $4 the node-side and pod-side
# `ip -batch` commands; stops at the first failure, whose message is on stderr.
_SETUP_SCRIPT = """set -e
ip netns add "$1"
if [ -n "$2" ]; then printf %s "$3" | ip -n "$2" -batch -
else printf %s "$3" | ip -batch -; fi
printf %s "$4" | ip -n "$1" -batch -
"""


def netns_path(name: str) -> str:
    return str(NETNS_DIR / name)


class PodNetwork:
    def __init__(self, config: NetworkConfig, state_dir: Path) -> None:
        try:
            self.network = ipaddress.IPv4Network(config.pod_cidr, strict=False)
        except ValueError as error:
            raise InvalidArgumentError(f"invalid pod CIDR {config.pod_cidr!r}: {error}") from None
        if self.network.prefixlen > 30:
            raise InvalidArgumentError(f"pod CIDR {config.pod_cidr} is too small")
        if not config.bridge or len(config.bridge) > 15:
            raise InvalidArgumentError(f"invalid bridge name {config.bridge!r}")
        self.config = config
        self.gateway = str(self.network.network_address + 1)
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self._ipam_path = state_dir / "ipam.json"
        self._node_ready = False

    # -- commands in the node namespace -------------------------------------------------

    def _ip(self, *args: str) -> list[str]:
        node = self.config.node_netns
        return ["ip", *(["-n", node] if node else []), *args]

    def _in_node(self, *argv: str) -> list[str]:
        node = self.config.node_netns
        return ["ip", "netns", "exec", node, *argv] if node else list(argv)

    def node_netns_path(self) -> str | None:
        """Where host-network pods join: the node namespace (None: the caller's)."""
        node = self.config.node_netns
        return netns_path(node) if node else None

    async def ensure_node(self) -> None:
        """The bridge with the gateway address, forwarding on, masquerade rules in place."""
        if self._node_ready:
            return
        bridge = self.config.bridge
        code, _ = await run(*self._ip("link", "show", "dev", bridge), check=False)
        if code != 0:
            await run(*self._ip("link", "add", "name", bridge, "mtu", str(self.config.mtu),
                                "type", "bridge"))
        await run(*self._ip("addr", "replace", f"{self.gateway}/{self.network.prefixlen}",
                            "dev", bridge))
        await run(*self._ip("link", "set", "dev", bridge, "up"))
        await run(*self._in_node("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"))
        await self._write_rules(self._load()["allocations"])
        self._node_ready = True

    # -- address management -------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.state_dir / "ipam.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self._ipam_path.read_text())
        except (OSError, ValueError):
            data = {}
        data.setdefault("allocations", {})
        return data

    def _save(self, data: dict[str, Any]) -> None:
        temporary = self._ipam_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data))  # compact: encoded in C, not in Python
        temporary.replace(self._ipam_path)

    def _allocate(self, sandbox_id: str, ports: list[PortMapping]) -> str:
        with self._locked():
            data = self._load()
            allocations: dict[str, Any] = data["allocations"]
            for ip, record in allocations.items():
                if record["sandbox"] == sandbox_id:
                    return ip
            first = int(self.network.network_address) + 2
            last = int(self.network.broadcast_address) - 1
            start = int(data.get("last", first - 1)) + 1
            span = last - first + 1
            for step in range(span):
                candidate = str(ipaddress.IPv4Address(first + (start - first + step) % span))
                if candidate not in allocations:
                    allocations[candidate] = {
                        "sandbox": sandbox_id,
                        "ports": [vars(p) for p in ports if p.host_port]}
                    data["last"] = int(ipaddress.IPv4Address(candidate))
                    self._save(data)
                    return candidate
        raise RuntimeServiceError(f"no free address left in {self.network}")

    def _release(self, sandbox_id: str) -> bool:
        with self._locked():
            data = self._load()
            allocations = data["allocations"]
            mine = [ip for ip, record in allocations.items() if record["sandbox"] == sandbox_id]
            for ip in mine:
                del allocations[ip]
            if mine:
                self._save(data)
            return bool(mine)

    def allocations(self) -> dict[str, str]:
        """Pod IP -> sandbox id."""
        return {ip: r["sandbox"] for ip, r in self._load()["allocations"].items()}

    def ip_of(self, sandbox_id: str) -> str:
        return next((ip for ip, sid in self.allocations().items() if sid == sandbox_id), "")

    # -- pods ---------------------------------------------------------------------------

    def names(self, sandbox_id: str) -> tuple[str, str]:
        """(pod namespace name, host-side veth name) of a sandbox."""
        return f"{self.config.netns_prefix}{sandbox_id[:12]}", f"veth{sandbox_id[:11]}"

    async def setup(self, sandbox_id: str, ports: list[PortMapping]) -> PodNetworkInfo:
        for port in ports:
            if not 0 < port.container_port < 65536 or not 0 <= port.host_port < 65536:
                raise InvalidArgumentError(f"invalid port mapping {port}")
            if port.protocol.upper() not in ("TCP", "UDP", "SCTP"):
                raise InvalidArgumentError(f"invalid protocol {port.protocol!r}")
        await self.ensure_node()
        netns, veth = self.names(sandbox_id)
        ip = self._allocate(sandbox_id, ports)
        node_side = (
            f"link add {veth} mtu {self.config.mtu} type veth peer name eth0 netns {netns}\n"
            f"link set dev {veth} master {self.config.bridge}\n"
            f"link set dev {veth} type bridge_slave hairpin on\n"
            f"link set dev {veth} up\n")
        pod_side = ("link set dev lo up\n"
                    f"addr add {ip}/{self.network.prefixlen} dev eth0\n"
                    "link set dev eth0 up\n"
                    f"route add default via {self.gateway} dev eth0\n")
        try:
            # One child of ours for the three `ip` runs: every process this (busy) agent
            # spawns itself costs it far more than one the shell spawns.
            code, text = await run("sh", "-c", _SETUP_SCRIPT, "sh", netns,
                                   self.config.node_netns or "", node_side, pod_side,
                                   check=False)
            if code != 0:
                raise RuntimeServiceError(f"network setup of {netns} failed ({code}): {text}")
            if any(p.host_port for p in ports):
                await self._write_rules(self._load()["allocations"])
        except BaseException:
            await self.teardown(sandbox_id)
            raise
        return PodNetworkInfo(netns, netns_path(netns), ip, veth)

    async def teardown(self, sandbox_id: str) -> None:
        """Delete the pod's namespace (its veth pair goes with it) and free its address."""
        netns, veth = self.names(sandbox_id)
        if (NETNS_DIR / netns).exists():
            await run("ip", "netns", "delete", netns)
        # The node end outlives the namespace while something still holds it open.
        await run(*self._ip("link", "delete", "dev", veth), check=False)
        had_ports = any(r["sandbox"] == sandbox_id and r.get("ports")
                        for r in self._load()["allocations"].values())
        self._release(sandbox_id)
        if had_ports:
            await self._write_rules(self._load()["allocations"])

    # -- masquerade and host ports ------------------------------------------------------

    def nft_ruleset(self, allocations: dict[str, Any]) -> str:
        table, cidr = self.config.table, str(self.network)
        dnat = []
        for ip, record in sorted(allocations.items()):
            for port in record.get("ports") or []:
                match = f"ip daddr {port['host_ip']} " if port.get("host_ip") else \
                    "fib daddr type local "
                dnat.append(f"    {match}{port['protocol'].lower()} dport {port['host_port']} "
                            f"dnat to {ip}:{port['container_port']}")
        rules = "\n".join(dnat)
        return (f"table ip {table}\n"
                f"delete table ip {table}\n"
                f"table ip {table} {{\n"
                f"  chain postrouting {{\n"
                f"    type nat hook postrouting priority 100; policy accept;\n"
                f"    ip saddr {cidr} ip daddr != {cidr} masquerade\n"
                f"    ct status dnat ip saddr {cidr} ip daddr {cidr} masquerade\n"
                f"  }}\n"
                f"  chain prerouting {{\n"
                f"    type nat hook prerouting priority -100; policy accept;\n"
                f"{rules}\n"
                f"  }}\n"
                f"  chain output {{\n"
                f"    type nat hook output priority -100; policy accept;\n"
                f"{rules}\n"
                f"  }}\n"
                f"}}\n")

    async def _write_rules(self, allocations: dict[str, Any]) -> None:
        if shutil.which("nft"):
            await run(*self._in_node("nft", "-f", "-"),
                      stdin=self.nft_ruleset(allocations).encode())
            return
        await self._write_iptables(allocations)

    async def _write_iptables(self, allocations: dict[str, Any]) -> None:
        chain_out = f"{self.config.table.upper()}-POSTROUTING"
        chain_dnat = f"{self.config.table.upper()}-HOSTPORTS"
        cidr = str(self.network)

        async def iptables(*args: str, check: bool = True) -> int:
            code, _ = await run(*self._in_node("iptables", "-w", "-t", "nat", *args),
                                check=check)
            return code

        for chain in (chain_out, chain_dnat):
            await iptables("-N", chain, check=False)
            await iptables("-F", chain)
        await iptables("-A", chain_out, "-s", cidr, "!", "-d", cidr, "-j", "MASQUERADE")
        for ip, record in sorted(allocations.items()):
            for port in record.get("ports") or []:
                where = ["-d", port["host_ip"]] if port.get("host_ip") else \
                    ["-m", "addrtype", "--dst-type", "LOCAL"]
                proto = port["protocol"].lower()
                await iptables("-A", chain_dnat, *where, "-p", proto, "--dport",
                               str(port["host_port"]), "-j", "DNAT", "--to-destination",
                               f"{ip}:{port['container_port']}")
        for parent, chain in (("POSTROUTING", chain_out), ("PREROUTING", chain_dnat),
                              ("OUTPUT", chain_dnat)):
            if await iptables("-C", parent, "-j", chain, check=False) != 0:
                await iptables("-A", parent, "-j", chain)

    async def open_connection(self, netns_file: str | None, port: int
                              ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to 127.0.0.1:`port` inside a network namespace (by path)."""
        if not 0 < port < 65536:
            raise InvalidArgumentError(f"invalid port {port}")
        return await connect_in_netns(netns_file, port)


def _socket_in_netns(netns_file: str | None) -> int:
    """A TCP socket created inside the namespace: setns in a throwaway thread, so only
    that thread moves and the socket keeps the namespace it was made in."""
    import ctypes
    import socket

    if netns_file is None:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM).detach()
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns_file, os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            error = ctypes.get_errno()
            raise OSError(error, f"setns {netns_file}: {os.strerror(error)}")
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM).detach()
    finally:
        os.close(fd)


async def connect_in_netns(netns_file: str | None, port: int, host: str = "127.0.0.1"
                           ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    import socket
    import threading

    result: list[int | BaseException] = []

    def make() -> None:
        try:
            result.append(_socket_in_netns(netns_file))
        except BaseException as error:  # handed to the caller
            result.append(error)

    thread = threading.Thread(target=make, name="kubi-setns", daemon=True)
    thread.start()
    await asyncio.get_running_loop().run_in_executor(None, thread.join)
    if isinstance(result[0], BaseException):
        raise RuntimeServiceError(str(result[0]))
    sock = socket.socket(fileno=result[0])
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except OSError as error:
        sock.close()
        raise RuntimeServiceError(f"connect to {host}:{port} in the pod: {error}") from None
    return await asyncio.open_connection(sock=sock)
