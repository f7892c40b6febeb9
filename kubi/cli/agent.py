"""`kubi agent`: a node agent that joins a cluster over HTTPS."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

from kubi.client.rest import Client
from kubi.client.transport import HTTPTransport


@dataclass
class AgentOptions:
    server: str
    token: str
    ca_file: Path | None
    runtime: str  # "oci" (runc) or "simulated"
    node_name: str
    data_dir: Path
    simulated_nodes: int = 1
    registries: Path | None = None
    netns: str | None = None  # pod networking inside this network namespace
    node_ip: str = ""  # "": this machine's first global IPv4 address
    kubelet_address: str = "0.0.0.0"  # where the agent's API (logs, exec…) listens
    kubelet_port: int = 10250  # 0: any free port
    container_runtime: str = "auto"  # OCI runtime: auto, runc, crun or a path


class JoinError(Exception):
    """The agent could not reach or trust the API server."""


def _tls_failure(err: BaseException) -> ssl.SSLCertVerificationError | None:
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def _join_error(options: AgentOptions, err: httpx.TransportError) -> JoinError:
    failure = _tls_failure(err)
    if failure is None:
        return JoinError(f"cannot reach {options.server}: {err}")
    trusted = f"the CA in --ca-file {options.ca_file}" if options.ca_file else \
        "the system's CAs (pass --ca-file DATA_DIR/pki/ca.crt of the server)"
    return JoinError(f"cannot verify the certificate of {options.server} against {trusted}: "
                     f"certificate verify failed: {failure.verify_message or failure.reason}")


def load_ca(path: Path) -> None:
    """Raise ValueError unless `path` holds at least one PEM certificate."""
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except (OSError, ssl.SSLError) as err:
        raise ValueError(f"not a PEM CA certificate ({err})") from None


async def run(options: AgentOptions) -> None:
    from kubi.kubelet import simulated

    ca = str(options.ca_file) if options.ca_file else None
    client = Client(HTTPTransport(options.server, options.token, ca))
    try:
        try:
            # Fail fast on a wrong URL, CA or token.
            await client.get("namespaces", "kube-node-lease")
        except httpx.TransportError as err:
            raise _join_error(options, err) from None
        if options.runtime == "oci":
            await run_oci_agent(client, options)
        elif options.simulated_nodes > 1:
            await simulated.run_simulated_nodes(client, options.simulated_nodes,
                                                name_prefix=f"{options.node_name}-")
        else:
            await simulated.run_simulated_node(client, options.node_name)
    finally:
        with contextlib.suppress(Exception):
            await client.close()


async def run_oci_agent(client: Client, options: AgentOptions) -> None:
    from kubi.kubelet.agent import AgentConfig, run_agent

    specific = options.kubelet_address not in ("0.0.0.0", "::", "")
    config = AgentConfig(
        node_name=options.node_name, data_dir=options.data_dir, node_ip=options.node_ip,
        registries_config=options.registries, node_netns=options.netns,
        api_token=options.token, api_bind=options.kubelet_address,
        api_port=options.kubelet_port, oci_runtime=options.container_runtime,
        # The API server dials the address the agent listens on, when that is one.
        api_advertise=options.kubelet_address if specific else "")
    if options.kubelet_port:
        config.kubelet_port = options.kubelet_port
    if options.netns:
        # As `kubi server --agent-netns`: pod namespaces and cgroups named after the node
        # namespace, so that several nodes share a machine and each is removed as one.
        config.netns_prefix = f"{options.netns}-p"
        config.cgroup_root = f"/{options.netns}"
    await run_agent(client, config)


async def _until_signalled(options: AgentOptions) -> None:
    """Run the agent; SIGTERM or SIGINT stop it cleanly (containers keep running)."""
    task = asyncio.create_task(run(options))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def runtime_problem(container_runtime: str) -> str:
    """Why the OCI runtime cannot run containers here, or "" when it can."""
    from kubi.kubelet.runtime.runtimes import RuntimeUnavailableError, resolve_runtime

    try:
        resolve_runtime(container_runtime)
    except RuntimeUnavailableError as error:
        return str(error)
    return ""


def default_node_name() -> str:
    return socket.gethostname().lower()


def main(options: AgentOptions) -> None:
    asyncio.run(_until_signalled(options))
