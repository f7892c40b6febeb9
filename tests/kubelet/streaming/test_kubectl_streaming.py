"""kubectl logs/exec/attach/cp/port-forward end to end: the real kubectl, the API server
over HTTPS (in-process, served by uvicorn as `kubi server` serves it, with the WebSocket
protocol class kubectl's port-forward needs), the node agent's server in front of runc
containers.

The pods' containers are made directly through the runtime (with the kubelet's CRI
labels, which the agent server's default resolvers read), and Pod/Node objects that
point at them are created through the API. Skipped only without root, runc, ip,
busybox (Debian busybox-static) or kubectl."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import ssl
import subprocess
import threading
import urllib.request
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn

from kubi.apiserver import certs, proxy
from kubi.apiserver.app import APIServer
from kubi.apiserver.server import bootstrap
from kubi.apiserver.tokens import TokenAuthority
from kubi.kubelet import server as kubelet
from kubi.kubelet.runtime import ContainerConfig, ContainerState, PodSandboxConfig
from kubi.kubelet.runtime.network import NetworkConfig, PodNetwork
from kubi.kubelet.runtime.oci import OciRuntime
from kubi.storage import open_backend
from tests.cluster import free_port
from tests.kubelet.runtime.conftest import MISSING, Node, build_rootfs, cleanup

T = TypeVar("T")

pytestmark = pytest.mark.skipif(
    bool(MISSING) or os.geteuid() != 0 or shutil.which("kubectl") is None,
    reason=f"needs root, kubectl and {', '.join(MISSING) or 'runc, ip, busybox'}")

LABELS = (kubelet.LABEL_NAMESPACE, kubelet.LABEL_POD, kubelet.LABEL_CONTAINER)
CONTAINERS = {
    "p": {
        "app": ["sh", "-c", "echo from-p; exec httpd -f -p 8080 -h /www"],
        "waiter": ["sh", "-c", "echo start; while [ ! -f /tmp/go ]; do sleep 0.05; done; "
                               "echo end"],
        "shell": ["sh"],
    },
    "q": {"app": ["sh", "-c", "echo from-q; echo last-q; exec sleep 1000"]},
}


@dataclass
class Cluster:
    """The API server as kubectl sees it: a URL, a kubeconfig, a token."""

    data_dir: Path
    port: int
    token: str

    @property
    def ca(self) -> str:
        return str(self.data_dir / "pki" / "ca.crt")

    def env(self) -> dict[str, str]:
        home = self.data_dir / "home"
        home.mkdir(exist_ok=True)
        return dict(os.environ, KUBECONFIG=str(self.data_dir / "kubeconfig.yaml"),
                    HOME=str(home))

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["kubectl", *args], input=input, capture_output=True,
                                text=True, env=self.env(), timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stdout}{result.stderr}")
        return result

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=f"https://127.0.0.1:{self.port}",
                            verify=ssl.create_default_context(cafile=self.ca),
                            headers={"Authorization": f"Bearer {self.token}"}, timeout=30)


async def _start_api_server(data_dir: Path) -> tuple[Cluster, Any, Any]:
    creds = certs.ensure_credentials(data_dir)
    backend = open_backend(f"sqlite:///{data_dir / 'state.db'}")
    await backend.start()
    api = APIServer(backend, TokenAuthority(creds.admin_token, creds.service_account_key))
    await bootstrap(api)
    api.ready = True
    port = free_port()
    config = uvicorn.Config(api, host="127.0.0.1", port=port, loop="none", http="httptools",
                            ws=proxy.WebSocketProtocol, lifespan="off", log_level="warning",
                            ssl_certfile=str(creds.server_cert), ssl_keyfile=str(creds.server_key),
                            ws_ping_interval=None, timeout_graceful_shutdown=2)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    certs.write_kubeconfig(data_dir / "kubeconfig.yaml", creds, f"https://127.0.0.1:{port}")

    async def stop() -> None:
        api.closing.set()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await server.shutdown()
        await backend.close()

    return Cluster(data_dir, port, creds.admin_token), stop, api


@dataclass
class Env:
    cluster: Cluster
    node: Node
    loop: asyncio.AbstractEventLoop
    kubelet_port: int
    token: str
    tmp: Path

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, input=input, check=check)


def _container(rootfs: Path, logs: Path, pod: str, name: str, command: list[str],
               attempt: int = 0, **extra: Any) -> ContainerConfig:
    return ContainerConfig(name=name, rootfs=rootfs, image="busybox", command=command,
                           attempt=attempt, log_path=str(logs / f"{pod}-{name}-{attempt}.log"),
                           labels=dict(zip(LABELS, ("default", pod, name), strict=True)),
                           **extra)


async def _wait_state(runtime: OciRuntime, cid: str, state: ContainerState) -> None:
    for _ in range(500):
        if (await runtime.container_status(cid)).state == state:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{cid} never reached {state}")


async def _make_pods(runtime: OciRuntime, rootfs: Path, logs: Path) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    for pod, containers in CONTAINERS.items():
        sandbox = await runtime.run_pod_sandbox(PodSandboxConfig(
            name=pod, namespace="default", uid=f"uid-{pod}",
            labels={kubelet.LABEL_NAMESPACE: "default", kubelet.LABEL_POD: pod}))
        if pod == "p":  # a first run of "once" that ended: what --previous shows
            first = await runtime.create_container(sandbox, _container(
                rootfs, logs, pod, "once", ["sh", "-c", "echo first-run"]))
            await runtime.start_container(first)
            await _wait_state(runtime, first, ContainerState.EXITED)
            second = await runtime.create_container(sandbox, _container(
                rootfs, logs, pod, "once", ["sh", "-c", "echo second-run; exec sleep 1000"],
                attempt=1))
            await runtime.start_container(second)
        for name, command in containers.items():
            extra = {"stdin": True} if name == "shell" else {}
            cid = await runtime.create_container(sandbox, _container(
                rootfs, logs, pod, name, command, **extra))
            await runtime.start_container(cid)
            await _wait_state(runtime, cid, ContainerState.RUNNING)


def _pod(name: str, containers: list[str], node: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": c, "image": "busybox"} for c in containers]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "demo"} if node else {}},
            "spec": spec}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("streaming")
    rootfs = build_rootfs(tmp / "rootfs")
    tag = secrets.token_hex(4)
    netns = f"kubi-test-{tag}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    root = tmp / "runtime"
    network = PodNetwork(NetworkConfig(pod_cidr="10.244.9.0/24", node_netns=netns,
                                       netns_prefix=f"{netns}-p"), root / "network")
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    node = Node(OciRuntime(root, network, cgroup_root=f"/kubi-test-{tag}"), network, netns,
                netns, root, f"/kubi-test-{tag}")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stop_api: Any = None
    running: kubelet.RunningServer | None = None
    try:
        (tmp / "cluster").mkdir()
        cluster, stop_api, _ = asyncio.run_coroutine_threadsafe(
            _start_api_server(tmp / "cluster"), loop).result(60)
        token = cluster.token
        cert, key = kubelet.self_signed_certificate(tmp / "kubelet-pki", ["127.0.0.1"])

        async def start() -> kubelet.RunningServer:
            await _make_pods(node.runtime, rootfs, tmp / "logs")
            return await kubelet.serve(kubelet.KubeletServer(node.runtime, token),
                                       "127.0.0.1", 0, cert, key)

        running = asyncio.run_coroutine_threadsafe(start(), loop).result(120)
        with cluster.http() as http:
            http.post("/api/v1/nodes", json={
                "apiVersion": "v1", "kind": "Node", "metadata": {
                    "name": "node-a", "annotations": {
                        "kubi.dev/kubelet-url": f"https://127.0.0.1:{running.port}"}}},
            ).raise_for_status()
            for name, containers in CONTAINERS.items():
                names = list(containers) + (["once"] if name == "p" else [])
                http.post("/api/v1/namespaces/default/pods",
                          json=_pod(name, names, "node-a")).raise_for_status()
                # kubectl port-forward wants a running pod; no pod worker reports it here
                http.patch(f"/api/v1/namespaces/default/pods/{name}/status",
                           json={"status": {"phase": "Running"}},
                           headers={"Content-Type": "application/merge-patch+json"}
                           ).raise_for_status()
            http.post("/api/v1/namespaces/default/pods",
                      json=_pod("pending", ["app"], None)).raise_for_status()
        yield Env(cluster, node, loop, running.port, token, tmp)
    finally:
        try:
            if running is not None:
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(running.stop(), loop).result(30)
            if stop_api is not None:
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(stop_api(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            if not thread.is_alive():
                loop.close()
        finally:
            cleanup(node)  # processes, mounts, cgroups, namespaces: also when the above fails


def test_exec_prints_and_propagates_the_exit_code(env: Env) -> None:
    result = env.kubectl("exec", "p", "-c", "app", "--", "sh", "-c",
                         "echo hi; echo oops >&2; exit 3", check=False)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "hi\n"
    assert "oops" in result.stderr
    ok = env.kubectl("exec", "p", "-c", "app", "--", "cat", "/www/index.html")
    assert ok.stdout == "hello from httpd\n"


def test_exec_with_stdin(env: Env) -> None:
    result = env.kubectl("exec", "-i", "p", "-c", "app", "--", "sh", "-c",
                         "tr a-z A-Z; echo done", input="piped text\n")
    assert result.stdout == "PIPED TEXT\ndone\n"


def test_exec_errors_read_as_upstream(env: Env) -> None:
    missing = env.kubectl("exec", "nosuch", "--", "true", check=False)
    assert missing.returncode == 1
    assert 'pods "nosuch" not found' in missing.stderr
    wrong = env.kubectl("exec", "p", "-c", "nope", "--", "true", check=False)
    assert "container nope is not valid for pod p" in wrong.stderr
    pending = env.kubectl("exec", "pending", "--", "true", check=False)
    assert "pod pending does not have a host assigned" in pending.stderr


def test_logs_tail_timestamps_previous_and_selector(env: Env) -> None:
    assert env.kubectl("logs", "q").stdout == "from-q\nlast-q\n"
    stamped = env.kubectl("logs", "q", "--timestamps").stdout.splitlines()
    assert [re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (.*)", line).group(1)  # type: ignore[union-attr]
            for line in stamped] == ["from-q", "last-q"]
    assert env.kubectl("logs", "p", "-c", "once").stdout == "second-run\n"
    assert env.kubectl("logs", "p", "-c", "once", "--previous").stdout == "first-run\n"
    none = env.kubectl("logs", "q", "--previous", check=False)
    assert none.returncode == 1
    assert 'previous terminated container "app" in pod "q" not found' in none.stderr
    both = env.kubectl("logs", "-l", "app=demo", "-c", "app").stdout
    assert sorted(both.splitlines()) == ["from-p", "from-q", "last-q"]
    with env.cluster.http() as http:  # kubectl picks a default container itself
        several = http.get("/api/v1/namespaces/default/pods/p/log")
    assert several.status_code == 400
    assert several.json()["message"] == "a container name must be specified for pod p, " \
                                        "choose one of: [app waiter shell once]"
    with env.cluster.http() as http:  # kubectl checks --tail itself
        bad = http.get("/api/v1/namespaces/default/pods/q/log", params={"tailLines": "-5"})
    assert bad.status_code == 422
    assert bad.json()["message"] == 'PodLogOptions "q" is invalid: tailLines: Invalid ' \
                                    "value: -5: must be greater than or equal to 0"


def test_logs_tail(env: Env) -> None:
    assert env.kubectl("logs", "q", "--tail=1").stdout == "last-q\n"


def test_logs_follow_streams_until_the_container_ends(env: Env) -> None:
    follower = subprocess.Popen(["kubectl", "logs", "-f", "p", "-c", "waiter"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env.cluster.env())
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "start\n"
        assert follower.poll() is None  # still following
        env.kubectl("exec", "p", "-c", "waiter", "--", "touch", "/tmp/go")
        rest, _ = follower.communicate(timeout=30)
        assert rest == "end\n"
        assert follower.returncode == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_cp_from_the_pod(env: Env) -> None:
    target = env.tmp / "copied.html"
    env.kubectl("cp", "p:/www/index.html", str(target), "-c", "app")
    assert target.read_text() == "hello from httpd\n"


def test_attach_to_a_containers_stdin(env: Env) -> None:
    result = env.kubectl("attach", "-i", "p", "-c", "shell",
                         input="echo attached-$((40 + 2))\nexit\n")
    assert "attached-42" in result.stdout


def test_port_forward_reaches_httpd_in_the_pod(env: Env) -> None:
    local = free_port()
    forward = subprocess.Popen(["kubectl", "port-forward", "pod/p", f"{local}:8080"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env.cluster.env())
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()
        assert f"Forwarding from 127.0.0.1:{local} -> 8080" in line, forward.communicate()
        for _ in range(2):  # two connections over the one tunnel
            with urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=30) as answer:
                assert answer.read() == b"hello from httpd\n"
        assert forward.poll() is None
    finally:
        forward.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            forward.wait(10)
        if forward.poll() is None:
            forward.kill()
            forward.wait()


def test_spdy_fallback_is_refused_with_a_reason(env: Env) -> None:
    spdy_only = dict(env.cluster.env(), KUBECTL_REMOTE_COMMAND_WEBSOCKETS="false")
    result = subprocess.run(["kubectl", "exec", "p", "-c", "app", "--", "true"],
                            capture_output=True, text=True, env=spdy_only, timeout=60)
    assert result.returncode == 1
    assert "over WebSocket only" in result.stderr


def test_agent_requires_the_api_servers_token(env: Env) -> None:
    base = f"https://127.0.0.1:{env.kubelet_port}"
    with httpx.Client(verify=False, timeout=10) as http:
        assert http.get(f"{base}/healthz").text == "ok"
        url = f"{base}/containerLogs/default/q/app"
        assert http.get(url).status_code == 401
        assert http.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        good = http.get(url, headers={"Authorization": f"Bearer {env.token}"},
                        params={"limitBytes": "4"})
        assert (good.status_code, good.text) == (200, "from")
        bad = http.get(url, headers={"Authorization": f"Bearer {env.token}"},
                       params={"sinceSeconds": "0"})
        assert bad.status_code == 400 and "sinceSeconds" in bad.text
        assert http.get(f"{base}/nothing").status_code == 404
