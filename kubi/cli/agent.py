"""`kubi agent`: a node agent that joins a cluster over HTTPS."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from kubi.client.rest import Client
from kubi.client.transport import HTTPTransport


async def run(server: str, token: str, ca_file: Path | None, runtime: str, node_name: str,
              simulated_nodes: int) -> None:
    from kubi.kubelet import simulated

    client = Client(HTTPTransport(server, token, str(ca_file) if ca_file else None))
    try:
        await client.get("namespaces", "kube-node-lease")  # fail fast on a wrong URL or token
        if simulated_nodes > 1:
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
         simulated_nodes: int) -> None:
    if runtime != "simulated":
        raise SystemExit(f"kubi agent: runtime {runtime!r} is not available in this build "
                         "(use --runtime simulated)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(server, token, ca_file, runtime, node_name, simulated_nodes))
