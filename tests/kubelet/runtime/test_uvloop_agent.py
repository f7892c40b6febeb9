"""The node agent on uvloop, as `kubi server` runs it: a real pod (shared process
namespace, so the PID namespace holder runs too) starts, serves, execs, restarts a
crashed container and goes away leaving nothing behind.

uvloop's subprocess support ignores close_fds, so every child inherits the loop's copy
of the other end of its stdio pipes; a shim (or the holder) living on with it kept the
agent waiting for end-of-output forever. runtime/oci.py and shim.py close them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kubi.kubelet.agent import run_agent
from kubi.kubelet.runtime import cgroups
from kubi.kubelet.runtime.oci import OciRuntime
from tests.conftest_registry import LocalRegistry
from tests.harness import api_server, eventually, running
from tests.kubelet.agent_env import (
    AgentNode,
    agent_node,
    http_get,
    mounts_under,
    namespaces_of,
    processes_under,
)

uvloop = pytest.importorskip("uvloop")
Obj = dict[str, Any]


def web_pod() -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 1,
                     "shareProcessNamespace": True, "containers": [
                         {"name": "httpd", "image": "busybox:latest",
                          "command": ["sh", "-c", "echo hello > /tmp/index.html; "
                                      "exec httpd -f -p 8080 -h /tmp"]},
                         {"name": "crasher", "image": "busybox:latest",
                          "command": ["sh", "-c", "sleep 0.2; exit 3"]}]}}


def test_agent_runs_a_pod_on_uvloop(tmp_path: Path, registry: LocalRegistry) -> None:
    async def scenario(node: AgentNode) -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        async with api_server(tmp_path) as (_, client):
            await client.create("pods", web_pod(), "default")
            async with running(run_agent(client, node.config)):
                async def serving() -> Obj | None:
                    pod = await client.get("pods", "web", "default")
                    ip = pod["status"].get("podIP")
                    if not ip:
                        return None
                    try:
                        code, body = await http_get(node, ip, 8080, "/index.html")
                    except OSError:
                        return None
                    return pod if (code, body) == (200, "hello\n") else None

                pod = await eventually(serving, 60)

                async def crashed_and_restarted() -> Obj | None:
                    got = await client.get("pods", "web", "default")
                    for status in got["status"].get("containerStatuses") or []:
                        terminated = (status.get("lastState") or {}).get("terminated")
                        if status["name"] == "crasher" and terminated:
                            return dict(terminated)
                    return None

                # The shim reported the exit: the container was seen dead and started again.
                terminated = await eventually(crashed_and_restarted, 60)
                assert terminated["exitCode"] == 3

                statuses = {s["name"]: s for s in pod["status"]["containerStatuses"]}
                cid = statuses["httpd"]["containerID"].split("://", 1)[1]
                runtime = OciRuntime(node.data_dir / "runtime", None,
                                     cgroup_root=node.cgroup_root)
                result = await asyncio.wait_for(runtime.exec_sync(cid, ["ps", "-o", "args"]),
                                                30)
                # One PID namespace for the pod, held by the holder's `sleep infinity`.
                assert b"httpd -f -p 8080" in result.stdout
                assert b"sleep infinity" in result.stdout

                uid = pod["metadata"]["uid"]
                await client.delete("pods", "web", "default")

                async def gone() -> bool:
                    listed = await client.list("pods", "default")
                    return not listed["items"] and not processes_under(
                        node.data_dir / "runtime" / "containers")

                await eventually(gone, 60)
                assert mounts_under(node.data_dir / "runtime") == []
                assert namespaces_of(node) == []
                assert cgroups.directories(f"{node.cgroup_root}/pod{uid}") == []

    # As `kubi server` does it (uvloop.install()), restored afterwards for other tests.
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        with agent_node(tmp_path, registry, crash_backoff_base=0.2) as node:
            asyncio.run(asyncio.wait_for(scenario(node), 150))
    finally:
        asyncio.set_event_loop_policy(policy)
