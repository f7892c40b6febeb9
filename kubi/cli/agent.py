"""`kubi agent`: a node agent that joins a cluster over HTTPS."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from kubi.client.rest import Client
from kubi.client.transport import HTTPTransport


async def run(server: str, token: str, ca_file: Path | None, runtime: str, node_name: str,
              simulated_nodes: int, data_dir: Path, registries: Path | None,
              netns: str | None) -> None:
    from kubi.kubelet import simulated

    client = Client(HTTPTransport(server, token, str(ca_file) if ca_file else None))
    try:
        await client.get("namespaces", "kube-node-lease")  # fail fast on a wrong URL or token
        if runtime == "oci":
            from kubi.kubelet.agent import AgentConfig, run_agent

            await run_agent(client, AgentConfig(
                node_name=node_name, data_dir=data_dir, registries_config=registries,
                node_netns=netns, api_token=token))
        elif simulated_nodes > 1:
            await simulated.run_simulated_nodes(client, simulated_nodes,
                                                name_prefix=f"{node_name}-")
        else:
            await simulated.run_simulated_node(client, node_name)
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def default_node_name() -> str:
    return socket.gethostname().lower()


def main(server: str, token: str, ca_file: Path | None, runtime: str, node_name: str,
         simulated_nodes: int, data_dir: Path, registries: Path | None,
         netns: str | None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(server, token, ca_file, runtime, node_name, simulated_nodes, data_dir,
                        registries, netns))
