"""Pod networking alone: addresses, persistence, rules (root, inside a test namespace)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from kubi.kubelet.runtime import InvalidArgumentError, PortMapping
from kubi.kubelet.runtime.network import NETNS_DIR, NetworkConfig, PodNetwork

from .conftest import POD_CIDR, Node


def test_bad_configuration(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid pod CIDR"):
        PodNetwork(NetworkConfig(pod_cidr="10.0.0.0/33"), tmp_path)
    with pytest.raises(InvalidArgumentError, match="too small"):
        PodNetwork(NetworkConfig(pod_cidr="10.0.0.0/31"), tmp_path)
    with pytest.raises(InvalidArgumentError, match="bridge"):
        PodNetwork(NetworkConfig(pod_cidr="10.0.0.0/24", bridge="a-very-long-bridge-name"),
                   tmp_path)


def in_node(node: Node, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", node.netns, *argv], capture_output=True,
                          text=True, check=True).stdout


def test_addresses_persist_and_are_released(node: Node) -> None:
    async def scenario() -> None:
        network = node.network
        first = await network.setup("a" * 64, [])
        second = await network.setup("b" * 64, [PortMapping(80, 30080)])
        assert first.ip == "10.244.7.2" and second.ip == "10.244.7.3"
        assert (NETNS_DIR / first.netns).exists()
        # Another instance over the same state (the agent restarted) sees the allocations.
        again = PodNetwork(NetworkConfig(pod_cidr=POD_CIDR, node_netns=node.netns,
                                         netns_prefix=node.prefix + "-p"),
                           node.root / "network")
        assert again.allocations() == {first.ip: "a" * 64, second.ip: "b" * 64}
        bridge = in_node(node, "ip", "-o", "addr", "show", "dev", "kubi0")
        assert "10.244.7.1/24" in bridge
        link = in_node(node, "ip", "-d", "link", "show", "dev", first.host_veth)
        assert "master kubi0" in link and "hairpin on" in link
        rules = in_node(node, "nft", "list", "table", "ip", "kubi")
        assert "tcp dport 30080 dnat to 10.244.7.3:80" in rules
        pod_routes = subprocess.run(["ip", "-n", first.netns, "route"], capture_output=True,
                                    text=True, check=True).stdout
        assert "default via 10.244.7.1 dev eth0" in pod_routes
        with pytest.raises(InvalidArgumentError):
            await again.setup("c" * 64, [PortMapping(0, 1)])
        assert "c" * 64 not in again.allocations().values()

        await again.teardown("b" * 64)
        assert not (NETNS_DIR / second.netns).exists()
        assert "dport 30080" not in in_node(node, "nft", "list", "table", "ip", "kubi")
        assert network.allocations() == {first.ip: "a" * 64}
        await network.teardown("a" * 64)
        await network.teardown("a" * 64)  # already gone: no error
        assert network.allocations() == {}
        assert first.host_veth not in in_node(node, "ip", "link")
        # Addresses are handed out in turn, not reused at once.
        assert (await network.setup("d" * 64, [])).ip == "10.244.7.4"
        await network.teardown("d" * 64)

    asyncio.run(scenario())
