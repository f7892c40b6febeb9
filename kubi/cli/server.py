"""`kubi server`: the API server plus the components that run beside it in one process.

Components reach the API through the in-process transport (the same handlers and
authentication as HTTPS), so the same code runs unchanged on another machine.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import shutil
import socket
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubi.apiserver.app import tune_gc
from kubi.apiserver.server import Server, ServerConfig, wait_for_signal
from kubi.client.rest import Client
from kubi.controllers.base import ControllerOptions
from kubi.controllers.manager import run_with_leader_election
from kubi.util.aio import cancel_and_wait

log = logging.getLogger("kubi.server")


@dataclass
class Components:
    controller_manager: bool = True
    scheduler: bool = True
    simulated_nodes: int = 0
    watch_images: bool = False
    registries: Path | None = None
    agent: bool = True
    node_name: str = ""
    agent_netns: str | None = None  # pod networking inside this network namespace
    container_runtime: str = "auto"  # the agent's OCI runtime: auto, runc, crun or a path
    disabled_controllers: set[str] = field(default_factory=set)
    controller_options: ControllerOptions = field(default_factory=ControllerOptions)


def _optional(module: str, attr: str) -> Any:
    """A component that a later step adds; None until its module exists."""
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None


def component_tasks(client: Client, components: Components) -> list[Coroutine[Any, Any, None]]:
    tasks: list[Coroutine[Any, Any, None]] = []
    if components.controller_manager:
        tasks.append(run_with_leader_election(client, components.controller_options,
                                              disabled=components.disabled_controllers))
    if components.scheduler:
        run_scheduler = _optional("kubi.scheduler.scheduler", "run_with_leader_election")
        if run_scheduler is not None:
            tasks.append(run_scheduler(client))
    tasks.append(_image_watcher(client, components))
    if components.simulated_nodes:
        run_nodes = _optional("kubi.kubelet.simulated", "run_simulated_nodes")
        if run_nodes is None:
            raise SystemExit("simulated nodes are not available in this build")
        tasks.append(run_nodes(client, components.simulated_nodes))
    return tasks


async def _image_watcher(client: Client, components: Components) -> None:
    """Image updates redeploy opted-in workloads (all of them with --watch-images)."""
    from kubi.kubelet.freshpod import ImageWatcher
    from kubi.kubelet.images.registries import load_registries

    registries = load_registries(components.registries)
    await ImageWatcher(client, registries, watch_all=components.watch_images).run()


def agent_problem(container_runtime: str = "auto") -> str:
    """Why this machine cannot run real containers, or "" when it can."""
    from kubi.kubelet.runtime.runtimes import RuntimeUnavailableError, resolve_runtime

    if os.geteuid() != 0:
        return "the node agent needs root"
    missing = [tool for tool in ("ip", "nft", "nsenter", "unshare")
               if shutil.which(tool) is None]
    if missing:
        return f"the node agent needs {', '.join(missing)}"
    try:
        resolve_runtime(container_runtime)
    except RuntimeUnavailableError as error:
        return str(error)
    return ""


async def _agent(client: Client, config: ServerConfig, components: Components,
                 token: str) -> None:
    from kubi.kubelet.agent import AgentConfig, run_agent

    agent = AgentConfig(
        node_name=components.node_name or socket.gethostname().lower(),
        data_dir=config.data_dir / "agent", registries_config=components.registries,
        node_netns=components.agent_netns, api_token=token, api_bind="127.0.0.1",
        api_port=0, api_advertise="127.0.0.1", oci_runtime=components.container_runtime)
    if components.agent_netns:
        # In a given node namespace, pod namespaces and cgroups are named after it, so the
        # whole node can be found and removed as one (several may share a machine).
        agent.netns_prefix = f"{components.agent_netns}-p"
        agent.cgroup_root = f"/{components.agent_netns}"
    await run_agent(client, agent)


async def run(config: ServerConfig, components: Components) -> None:
    tune_gc()
    server = Server(config)
    await server.start()
    assert server.api is not None and server.credentials is not None
    components.controller_options.extra.setdefault(
        "root_ca_pem", server.credentials.ca_cert.read_text())
    client = Client.in_process(server.api, server.credentials.admin_token)
    components.controller_options.extra.setdefault("data_dir", str(config.data_dir / "agent"))
    coroutines = component_tasks(client, components)
    if components.agent:
        problem = agent_problem(components.container_runtime)
        if problem:
            log.warning("%s: running without a node (pass --disable-agent to silence this)",
                        problem)
        else:
            coroutines.append(_agent(client, config, components,
                                     server.credentials.admin_token))
    tasks = [asyncio.create_task(t) for t in coroutines]
    try:
        await wait_for_signal()
    finally:
        await cancel_and_wait(tasks)
        await client.close()
        await server.stop()
