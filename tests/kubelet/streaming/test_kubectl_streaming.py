"""kubectl logs/exec/attach/cp/port-forward end to end: the real kubectl, the API server
over HTTPS (in-process, served by uvicorn as `kubi server` serves it, with the HTTP
protocol class that takes over SPDY upgrades and the WebSocket protocol class kubectl's
port-forward needs), the node agent's server in front of runc containers. Both of
kubectl's transports are exercised: WebSocket (its default) and plain SPDY/3.1 (forced
with KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false / KUBECTL_PORT_FORWARD_WEBSOCKETS=false),
plus a raw SPDY client for what kubectl never sends.

The pods' containers are made directly through the runtime (with the kubelet's CRI
labels, which the agent server's default resolvers read), and Pod/Node objects that
point at them are created through the API. Skipped only without root, runc, ip,
busybox (Debian busybox-static) or kubectl."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
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

from kubi.apiserver import certs
from kubi.apiserver.app import APIServer
from kubi.apiserver.server import bootstrap
from kubi.apiserver.tokens import TokenAuthority
from kubi.kubelet import server as kubelet
from kubi.kubelet.runtime import ContainerConfig, ContainerState, PodSandboxConfig
from kubi.kubelet.runtime.network import NetworkConfig, PodNetwork
from kubi.kubelet.runtime.oci import OciRuntime
from kubi.kubelet.streaming import spdy
from kubi.storage import open_backend
from kubi.util.upgrade import UpgradeHttpProtocol, WebSocketProtocol
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
        "shell2": ["sh"],  # for attach over SPDY (attach -i ends the shell)
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
    config = uvicorn.Config(api, host="127.0.0.1", port=port, loop="none",
                            http=UpgradeHttpProtocol, ws=WebSocketProtocol,
                            lifespan="off", log_level="warning",
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
    kubelet_app: kubelet.KubeletServer

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
            extra = {"stdin": True} if name.startswith("shell") else {}
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
            # pods run as a service account; no controller makes `default` here
            http.post("/api/v1/namespaces/default/serviceaccounts", json={
                "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
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
        yield Env(cluster, node, loop, running.port, token, tmp, running.app)
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
    messages = []
    for line in stamped:
        found = re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (.*)", line)
        assert found is not None, line
        messages.append(found.group(1))
    assert messages == ["from-q", "last-q"]
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
                                        "choose one of: [app waiter shell shell2 once]"
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


# -- kubectl over plain SPDY/3.1 ----------------------------------------------------------

SPDY_EXEC = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}
SPDY_FORWARD = {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}


def _kubectl(env: Env, extra: dict[str, str], *args: str, input: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "-v=6", *args], input=input, capture_output=True,
                          text=True, env=dict(env.cluster.env(), **extra), timeout=60)


def _used_spdy(result: subprocess.CompletedProcess[str]) -> bool:
    """kubectl -v=6 logs the upgrade request: POST for SPDY, GET for WebSocket."""
    return re.search(r"POST https://\S+/(exec|attach|portforward)\S* 101", result.stderr) \
        is not None


def test_spdy_exec_prints_and_propagates_the_exit_code(env: Env) -> None:
    result = _kubectl(env, SPDY_EXEC, "exec", "p", "-c", "app", "--", "sh", "-c",
                      "echo hi; echo oops >&2; exit 3")
    assert result.returncode == 3, result.stderr
    assert result.stdout == "hi\n"
    assert "oops" in result.stderr
    assert _used_spdy(result), result.stderr
    ok = _kubectl(env, SPDY_EXEC, "exec", "p", "-c", "app", "--", "cat", "/www/index.html")
    assert (ok.returncode, ok.stdout) == (0, "hello from httpd\n"), ok.stderr


def test_spdy_exec_with_stdin(env: Env) -> None:
    result = _kubectl(env, SPDY_EXEC, "exec", "-i", "p", "-c", "app", "--", "sh", "-c",
                      "tr a-z A-Z; echo done", input="piped text\n" * 2000)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "PIPED TEXT\n" * 2000 + "done\n"
    assert _used_spdy(result), result.stderr


def test_spdy_cp_from_the_pod(env: Env) -> None:
    target = env.tmp / "copied-over-spdy.html"
    result = _kubectl(env, SPDY_EXEC, "cp", "p:/www/index.html", str(target), "-c", "app")
    assert result.returncode == 0, result.stderr
    assert target.read_text() == "hello from httpd\n"


def test_spdy_attach_to_a_containers_stdin(env: Env) -> None:
    result = _kubectl(env, SPDY_EXEC, "attach", "-i", "p", "-c", "shell2",
                      input="echo attached-$((40 + 3))\nexit\n")
    assert result.returncode == 0, result.stderr
    assert "attached-43" in result.stdout
    assert _used_spdy(result), result.stderr


def test_spdy_exec_errors_read_as_upstream(env: Env) -> None:
    missing = _kubectl(env, SPDY_EXEC, "exec", "nosuch", "--", "true")
    assert missing.returncode == 1
    assert 'pods "nosuch" not found' in missing.stderr
    wrong = _kubectl(env, SPDY_EXEC, "exec", "p", "-c", "nope", "--", "true")
    assert "container nope is not valid for pod p" in wrong.stderr


def test_spdy_port_forward_reaches_httpd_in_the_pod(env: Env) -> None:
    local = free_port()
    forward = subprocess.Popen(["kubectl", "-v=6", "port-forward", "pod/p", f"{local}:8080"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(env.cluster.env(), **SPDY_FORWARD))
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()
        assert f"Forwarding from 127.0.0.1:{local} -> 8080" in line, forward.communicate()
        for _ in range(2):  # two connections over the one SPDY connection
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
    assert forward.stderr is not None
    assert re.search(r"POST https://\S+/portforward 101", forward.stderr.read())


# -- a raw SPDY client, for what kubectl never sends --------------------------------------

V4_AND_OLDER = ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                "channel.k8s.io"]


class RawSpdy:
    """A TLS connection that makes a SPDY upgrade request, then speaks frames."""

    def __init__(self, port: int, cafile: str | None) -> None:
        context = ssl.create_default_context(cafile=cafile) if cafile else \
            ssl._create_unverified_context()
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        self.framer = spdy.Framer()
        self.pending: list[spdy.Frame] = []
        self.buffer = b""

    def upgrade(self, path: str, token: str | None, protocols: list[str],
                after: bytes = b"", upgrade: str = "SPDY/3.1") -> tuple[int, str, str]:
        """Send the request (and `after` right behind it); (status, headers, body)."""
        lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Length: 0",
                 "Connection: Upgrade", f"Upgrade: {upgrade}",
                 *(f"X-Stream-Protocol-Version: {p}" for p in protocols)]
        if token is not None:
            lines.append(f"Authorization: Bearer {token}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + after)
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed after {self.buffer!r}"
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ")[1])
        if status != 101:  # a refusal: the body, then the server hangs up
            self.buffer += self._read_to_end()
            return status, head.decode(), self.buffer.decode()
        return status, head.decode(), ""

    def _read_to_end(self) -> bytes:
        data = b""
        with contextlib.suppress(OSError):
            while chunk := self.sock.recv(65536):
                data += chunk
        return data

    def send(self, frame: spdy.Frame) -> None:
        self.sock.sendall(self.framer.encode(frame))

    def next_frame(self) -> spdy.Frame | None:
        """The next frame the server sent (None: it closed the connection)."""
        while not self.pending:
            if self.buffer:
                self.pending += self.framer.feed(self.buffer)
                self.buffer = b""
                continue
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                return None
            self.buffer = chunk
        return self.pending.pop(0)

    def open(self, stream_id: int, kind: str) -> spdy.Frame | None:
        self.send(spdy.SynStream(stream_id, {"streamtype": [kind]}))
        return self.next_frame()

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def _raw(env: Env, to_agent: bool = False) -> Iterator[RawSpdy]:
    client = RawSpdy(env.kubelet_port if to_agent else env.cluster.port,
                     None if to_agent else env.cluster.ca)
    try:
        yield client
    finally:
        client.close()


EXEC_CAT = "/api/v1/namespaces/default/pods/p/exec?container=app&command=cat" \
           "&stdin=true&stdout=true"


def test_raw_spdy_exec_refuses_unknown_streams_and_reports_success(env: Env) -> None:
    with _raw(env) as client:
        status, head, _ = client.upgrade(EXEC_CAT, env.cluster.token,
                                         ["v5.channel.k8s.io", *V4_AND_OLDER])
        assert status == 101
        assert "X-Stream-Protocol-Version: v4.channel.k8s.io" in head  # v5 is WebSocket only
        refused = client.open(1, "bogus")
        assert isinstance(refused, spdy.RstStream) and refused.stream_id == 1
        for stream_id, kind in ((3, "error"), (5, "stdin"), (7, "stdout")):
            reply = client.open(stream_id, kind)
            assert isinstance(reply, spdy.SynReply) and reply.stream_id == stream_id, reply
        duplicate = client.open(9, "stdout")
        assert isinstance(duplicate, spdy.RstStream) and duplicate.stream_id == 9
        client.send(spdy.DataFrame(5, b"echoed back\n"))
        client.send(spdy.DataFrame(5, b"", spdy.FLAG_FIN))  # stdin EOF: cat ends
        received: dict[int, bytes] = {}
        finished: set[int] = set()
        while (frame := client.next_frame()) is not None:
            if isinstance(frame, spdy.DataFrame):
                received[frame.stream_id] = received.get(frame.stream_id, b"") + frame.data
                if frame.flags & spdy.FLAG_FIN:
                    finished.add(frame.stream_id)
            if finished >= {3, 5, 7}:
                break
        assert received[7] == b"echoed back\n"
        assert json.loads(received[3]) == {"metadata": {}, "status": "Success"}


def test_raw_spdy_v2_reports_failures_as_text(env: Env) -> None:
    path = "/api/v1/namespaces/default/pods/p/exec?container=app&command=false&stdout=true"
    with _raw(env) as client:
        status, head, _ = client.upgrade(path, env.cluster.token, ["v2.channel.k8s.io"])
        assert status == 101 and "v2.channel.k8s.io" in head
        for stream_id, kind in ((1, "error"), (3, "stdout")):
            assert isinstance(client.open(stream_id, kind), spdy.SynReply)
        error = b""
        while (frame := client.next_frame()) is not None:
            if isinstance(frame, spdy.DataFrame) and frame.stream_id == 1:
                error += frame.data
                if frame.flags & spdy.FLAG_FIN:
                    break
        assert error == b"command terminated with non-zero exit code: command 'false' " \
                        b"exited with 1"


def test_raw_spdy_tty_exec_follows_resizes(env: Env) -> None:
    path = "/api/v1/namespaces/default/pods/p/exec?container=app&command=sh&command=-c" \
           "&command=read+x%3B+stty+size&stdin=true&stdout=true&tty=true"
    with _raw(env) as client:
        assert client.upgrade(path, env.cluster.token, V4_AND_OLDER)[0] == 101
        for stream_id, kind in ((1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")):
            assert isinstance(client.open(stream_id, kind), spdy.SynReply)
        client.send(spdy.DataFrame(7, b'{"Width":100,"Height":40}'))
        client.send(spdy.DataFrame(3, b"go\n"))
        output = b""
        while (frame := client.next_frame()) is not None:
            if isinstance(frame, spdy.DataFrame) and frame.stream_id == 5:
                output += frame.data
                if frame.flags & spdy.FLAG_FIN:
                    break
        assert b"40 100" in output


def test_raw_spdy_garbage_after_the_upgrade_ends_the_connection(env: Env) -> None:
    with _raw(env) as client:
        # not SPDY/3 at all (a control frame of version 0x7fff), sent with the request
        status, _, _ = client.upgrade(EXEC_CAT, env.cluster.token, V4_AND_OLDER,
                                      after=b"\xff" * 16)
        assert status == 101
        frame = client.next_frame()
        assert isinstance(frame, spdy.GoAway), frame
        assert frame.status == spdy.GOAWAY_PROTOCOL_ERROR
        assert client.next_frame() is None  # and the connection is closed
    # the API server and the agent still serve the next one
    result = _kubectl(env, SPDY_EXEC, "exec", "p", "-c", "app", "--", "echo", "still")
    assert result.stdout == "still\n", result.stderr


def test_raw_spdy_refusals_come_before_the_upgrade(env: Env) -> None:
    def refused(path: str, token: str | None, protocols: list[str] = V4_AND_OLDER,
                upgrade: str = "SPDY/3.1", to_agent: bool = False) -> tuple[int, str]:
        with _raw(env, to_agent) as client:
            status, _, body = client.upgrade(path, token, protocols, upgrade=upgrade)
            return status, body

    token = env.cluster.token
    status, body = refused(EXEC_CAT, "not-a-token")
    assert (status, json.loads(body)["reason"]) == (401, "Unauthorized")
    status, body = refused(EXEC_CAT, None)  # anonymous: authenticated, not authorized
    assert (status, json.loads(body)["reason"]) == (403, "Forbidden")
    assert 'User "system:anonymous" cannot' in json.loads(body)["message"]
    status, body = refused(EXEC_CAT.replace("/p/", "/nosuch/"), token)
    assert status == 404
    assert json.loads(body)["message"] == 'pods "nosuch" not found'
    status, body = refused("/api/v1/namespaces/default/pods/nosuch/portforward", token)
    assert (status, json.loads(body)["reason"]) == (404, "NotFound")
    status, body = refused(EXEC_CAT, token, upgrade="h2c")
    assert (status, json.loads(body)["message"]) == (400, "Upgrade request required")
    status, body = refused(EXEC_CAT, token, protocols=[])
    assert status == 400
    assert "X-Stream-Protocol-Version is required" in json.loads(body)["message"]
    status, body = refused(EXEC_CAT, token, protocols=["v9.channel.k8s.io"])
    assert status == 403
    assert "unable to negotiate protocol: client supports [v9.channel.k8s.io]" in \
        json.loads(body)["message"]
    # the agent: only the API server's token; a container or pod it does not run is 404
    agent_exec = "/exec/default/p/app?command=cat&stdin=1&stdout=1"
    assert refused(agent_exec, None, to_agent=True) == (401, "Unauthorized")
    assert refused(agent_exec, "wrong", to_agent=True) == (401, "Unauthorized")
    assert refused(agent_exec.replace("/app?", "/nope?"), env.token, to_agent=True) == \
        (404, 'container not found ("nope")')
    assert refused("/portForward/default/nosuch", env.token, ["portforward.k8s.io"],
                   to_agent=True) == (404, 'pod "nosuch" not found')
    assert refused("/exec/default/p/app?stdout=1", env.token, to_agent=True) == \
        (400, "you must specify a command to execute")


def test_agent_gives_up_on_streams_that_never_come(env: Env) -> None:
    server = env.kubelet_app
    saved = server.stream_creation_timeout
    server.stream_creation_timeout = 0.5
    try:
        with _raw(env, to_agent=True) as client:
            path = "/exec/default/p/app?command=sleep&command=1000&stdout=1"
            assert client.upgrade(path, env.token, V4_AND_OLDER)[0] == 101
            assert isinstance(client.open(1, "error"), spdy.SynReply)
            # no stdout stream: the agent hangs up (and ends the process)
            assert client.next_frame() is None
    finally:
        server.stream_creation_timeout = saved


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
