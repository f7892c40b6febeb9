"""The OCI driver end to end: real containers from a busybox rootfs, in pods wired to a
bridge inside a network namespace that plays the node (see conftest.py). The tests marked
BOTH_RUNTIMES run with runc and with crun (when crun works on the machine)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from pathlib import Path

import pytest

from kubi.kubelet.runtime import (
    ContainerConfig,
    ContainerState,
    InvalidArgumentError,
    Mount,
    NotFoundError,
    PodSandboxConfig,
    Resources,
    RuntimeServiceError,
    SandboxState,
    cgroups,
)
from kubi.kubelet.runtime.logs import LogOptions, parse_line, read_log
from kubi.kubelet.runtime.network import NETNS_DIR
from kubi.kubelet.runtime.oci import OciRuntime

from .conftest import BOTH_RUNTIMES, POD_CIDR, Node, leftover_mounts, leftover_processes

HTTPD = ["httpd", "-f", "-p", "8080", "-h", "/www"]


def pod(name: str = "web", **extra: object) -> PodSandboxConfig:
    return PodSandboxConfig(name=name, namespace="default", uid=f"uid-{name}", **extra)  # type: ignore[arg-type]


def container(rootfs: Path, name: str, command: list[str], logs: Path | None = None,
              **extra: object) -> ContainerConfig:
    return ContainerConfig(name=name, rootfs=rootfs, image="busybox:test", command=command,
                           log_path=str(logs / f"{name}.log") if logs else "", **extra)  # type: ignore[arg-type]


async def wait_state(node: Node, cid: str, state: ContainerState) -> None:
    for _ in range(500):
        if (await node.runtime.container_status(cid)).state == state:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{cid} never reached {state}")


async def run_to_exit(node: Node, sandbox: str, config: ContainerConfig) -> str:
    cid = await node.runtime.create_container(sandbox, config)
    await node.runtime.start_container(cid)
    await wait_state(node, cid, ContainerState.EXITED)
    return cid


async def fetch(node: Node, sandbox: str, rootfs: Path, url: str, name: str) -> str:
    """Output of a container that wgets `url` (retrying while the server comes up)."""
    script = f"for i in $(seq 50); do wget -qO- {url} && exit 0; sleep 0.1; done; exit 1"
    cid = await run_to_exit(node, sandbox, container(rootfs, name, ["sh", "-c", script],
                                                     node.root / "logs"))
    status = await node.runtime.container_status(cid)
    assert status.exit_code == 0, Path(status.log_path).read_text()
    return b"".join([chunk async for chunk in read_log(Path(status.log_path),
                                                       LogOptions())]).decode()


@BOTH_RUNTIMES
def test_pod_shares_network_and_reaches_other_pods(node: Node, rootfs: Path) -> None:
    async def scenario() -> None:
        rt = node.runtime
        first = await rt.run_pod_sandbox(pod("first"))
        second = await rt.run_pod_sandbox(pod("second"))
        ip_first = (await rt.pod_sandbox_status(first)).ip
        ip_second = (await rt.pod_sandbox_status(second)).ip
        network = ipaddress.ip_network(POD_CIDR)
        assert ipaddress.ip_address(ip_first) in network
        assert ipaddress.ip_address(ip_second) in network
        assert ip_first != ip_second
        assert ip_first != str(network.network_address + 1)  # the gateway's
        web = await rt.create_container(first, container(rootfs, "httpd", HTTPD))
        await rt.start_container(web)
        # A second container of the same pod: same network namespace, so localhost.
        assert await fetch(node, first, rootfs, "http://localhost:8080/index.html",
                           "local") == "hello from httpd\n"
        # Another pod, over the bridge, by pod IP.
        assert await fetch(node, second, rootfs, f"http://{ip_first}:8080/index.html",
                           "remote") == "hello from httpd\n"
        listed = await rt.list_pod_sandbox(state=SandboxState.READY)
        assert {s.id for s in listed} == {first, second}
        # The node side: bridge with the gateway, masquerade for traffic leaving the CIDR.
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", node.netns, "nft", "list", "table", "ip", "kubi",
            stdout=asyncio.subprocess.PIPE)
        rules, _ = await proc.communicate()
        assert f"ip saddr {POD_CIDR} ip daddr != {POD_CIDR} masquerade" in rules.decode()

    asyncio.run(scenario())


@BOTH_RUNTIMES
def test_logs_exit_codes_and_reasons(node: Node, rootfs: Path) -> None:
    async def scenario() -> None:
        rt = node.runtime
        sandbox = await rt.run_pod_sandbox(pod())
        logs = node.root / "logs"
        failed = await run_to_exit(node, sandbox, container(
            rootfs, "fail", ["sh", "-c", "echo out; echo err >&2; printf partial; exit 3"], logs))
        ok = await run_to_exit(node, sandbox, container(rootfs, "ok", ["true"], logs))
        status = await rt.container_status(failed)
        assert (status.state, status.exit_code, status.reason) == (
            ContainerState.EXITED, 3, "Error")
        assert status.started_at and status.finished_at >= status.started_at
        done = await rt.container_status(ok)
        assert (done.exit_code, done.reason) == (0, "Completed")
        lines = Path(status.log_path).read_bytes().splitlines()
        entries = [parse_line(line) for line in lines]
        assert [(e.stream, e.partial, e.content) for e in entries] == [
            ("stdout", False, b"out"), ("stderr", False, b"err"), ("stdout", True, b"partial")]
        assert lines[0].decode().split(" ")[0].endswith("Z")
        stderr_only = [c async for c in read_log(Path(status.log_path),
                                                 LogOptions(stream="stderr"))]
        assert stderr_only == [b"err\n"]

    asyncio.run(scenario())


@BOTH_RUNTIMES
def test_exec_non_tty_and_tty(node: Node, rootfs: Path) -> None:
    async def scenario() -> None:
        rt = node.runtime
        sandbox = await rt.run_pod_sandbox(pod())
        cid = await rt.create_container(sandbox, container(rootfs, "sleeper", ["sleep", "300"]))
        with pytest.raises(RuntimeServiceError, match="not running"):
            await rt.exec_sync(cid, ["echo", "hi"])
        await rt.start_container(cid)
        result = await rt.exec_sync(cid, ["sh", "-c", "echo hi; echo oops >&2; exit 5"])
        assert (result.exit_code, result.stdout, result.stderr) == (5, b"hi\n", b"oops\n")
        with pytest.raises(TimeoutError):
            await rt.exec_sync(cid, ["sleep", "31"], timeout=0.3)
        # The timed-out process was killed (a zombie at most: sleep as PID 1 never reaps).
        ps = await rt.exec_sync(cid, ["ps", "-o", "args"])
        assert b"sleep 31" not in ps.stdout

        piped = await rt.exec(cid, ["sh", "-c", "read line; echo got $line; exit 7"],
                              stdin=True)
        await piped.write_stdin(b"abc\n")
        assert await piped.read_stdout() == b"got abc\n"
        assert await piped.wait() == 7
        await piped.close()

        session = await rt.exec(cid, ["sh", "-c", "tty; while read line; do "
                                      "[ $line = done ] && exit 9; stty size; done"],
                                tty=True, stdin=True)
        output = b""
        while b"/dev/pts/" not in output:
            output += await asyncio.wait_for(session.read_stdout(), 30)
        await session.resize(100, 40)
        # The resize travels through runc (SIGWINCH) beside the input: ask until it shows.
        for _ in range(100):
            await session.write_stdin(b"size\n")
            output += await asyncio.wait_for(session.read_stdout(), 30)
            if b"40 100" in output:
                break
        assert b"40 100" in output
        await session.write_stdin(b"done\n")
        while await asyncio.wait_for(session.read_stdout(), 30):
            pass
        assert await session.wait() == 9
        await session.close()

    asyncio.run(scenario())


def test_attach_and_port_forward(node: Node, rootfs: Path) -> None:
    async def scenario() -> None:
        rt = node.runtime
        sandbox = await rt.run_pod_sandbox(pod())
        echo = await rt.create_container(sandbox, container(
            rootfs, "cat", ["cat"], node.root / "logs", stdin=True, stdin_once=True))
        await rt.start_container(echo)
        session = await rt.attach(echo)
        await session.write_stdin(b"ping\n")
        assert await session.read_stdout() == b"ping\n"
        await session.close_stdin()  # cat sees EOF and exits 0
        assert await session.wait() == 0
        await session.close()

        web = await rt.create_container(sandbox, container(rootfs, "httpd", HTTPD))
        await rt.start_container(web)
        for _ in range(100):
            try:
                reader, writer = await rt.port_forward(sandbox, 8080)
                break
            except RuntimeServiceError:
                await asyncio.sleep(0.05)
        writer.write(b"GET /index.html HTTP/1.0\r\n\r\n")
        response = await reader.read()
        writer.close()
        assert response.startswith(b"HTTP/1.") and response.endswith(b"hello from httpd\n")
        with pytest.raises(InvalidArgumentError):
            await rt.port_forward(sandbox, 0)

    asyncio.run(scenario())


@BOTH_RUNTIMES
def test_stop_kills_after_grace_period_and_restart_finds_running(node: Node,
                                                                 rootfs: Path) -> None:
    async def scenario() -> None:
        rt = node.runtime
        sandbox = await rt.run_pod_sandbox(pod())
        web = await rt.create_container(sandbox, container(rootfs, "httpd", HTTPD))
        await rt.start_container(web)
        pid = (await rt.container_status(web)).pid
        assert pid > 0

        # A new runtime object over the same root: the agent restarted.
        again = OciRuntime(node.root, node.network, runtime=node.runtime_name,
                           cgroup_root=node.cgroup_root)
        assert await again.version() == await rt.version()
        assert (await rt.version())[0] == node.runtime_name
        found = await again.list_containers()
        assert [(c.id, c.state) for c in found] == [(web, ContainerState.RUNNING)]
        assert [s.id for s in await again.list_pod_sandbox()] == [sandbox]

        # httpd as PID 1 ignores SIGTERM: only the SIGKILL after the timeout stops it.
        await again.stop_container(web, 0.3)
        status = await again.container_status(web)
        assert (status.state, status.exit_code, status.reason) == (
            ContainerState.EXITED, 137, "Error")
        assert not Path(f"/proc/{pid}").exists()

        # A shell that traps TERM and exits 143 on its own within the grace period.
        polite = await rt.create_container(sandbox, container(
            rootfs, "polite", ["sh", "-c", "trap 'exit 143' TERM; while :; do sleep 0.05; done"]))
        await rt.start_container(polite)
        await rt.stop_container(polite, 30)
        assert (await rt.container_status(polite)).exit_code == 143

    asyncio.run(scenario())


def test_memory_limit_and_oom(node: Node, rootfs: Path) -> None:
    async def scenario() -> None:
        rt = node.runtime
        sandbox = await rt.run_pod_sandbox(pod())
        limited = await rt.create_container(sandbox, container(
            rootfs, "limited", ["sleep", "300"],
            resources=Resources(memory_limit=64 * 1024 * 1024, cpu_shares=512)))
        await rt.start_container(limited)
        path = f"{node.cgroup_root}/poduid-web/{limited}"
        assert cgroups.memory_limit(path) == 64 * 1024 * 1024
        hog = await run_to_exit(node, sandbox, container(
            rootfs, "hog", ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1"],
            resources=Resources(memory_limit=16 * 1024 * 1024)))
        status = await rt.container_status(hog)
        assert (status.exit_code, status.reason) == (137, "OOMKilled")

    asyncio.run(scenario())


def test_shared_process_namespace(node: Node, rootfs: Path) -> None:
    async def scenario() -> None:
        rt = node.runtime
        sandbox = await rt.run_pod_sandbox(pod(share_process_namespace=True))
        first = await rt.create_container(sandbox, container(rootfs, "a", ["sleep", "301"]))
        second = await rt.create_container(sandbox, container(rootfs, "b", ["sleep", "302"]))
        await rt.start_container(first)
        await rt.start_container(second)
        ps = await rt.exec_sync(second, ["ps", "-o", "args"])
        assert b"sleep 301" in ps.stdout and b"sleep 302" in ps.stdout
        alone = await rt.run_pod_sandbox(pod("alone"))
        third = await rt.create_container(alone, container(rootfs, "c", ["sleep", "303"]))
        await rt.start_container(third)
        ps = await rt.exec_sync(third, ["ps", "-o", "args"])
        assert b"sleep 303" in ps.stdout and b"sleep 301" not in ps.stdout

    asyncio.run(scenario())


@BOTH_RUNTIMES
def test_bad_requests_change_nothing(node: Node, rootfs: Path) -> None:
    async def scenario() -> None:
        rt = node.runtime
        with pytest.raises(NotFoundError):
            await rt.create_container("ab" * 32, container(rootfs, "x", ["true"]))
        with pytest.raises(NotFoundError):
            await rt.container_status("../../etc")
        with pytest.raises(InvalidArgumentError):
            await rt.run_pod_sandbox(PodSandboxConfig(name="", namespace="d", uid="u"))
        with pytest.raises(InvalidArgumentError):
            await rt.run_pod_sandbox(pod(hostname="not a hostname"))
        assert await rt.list_pod_sandbox() == []
        sandbox = await rt.run_pod_sandbox(pod())
        with pytest.raises(InvalidArgumentError, match="not an absolute path"):
            await rt.create_container(sandbox, container(
                rootfs, "m", ["true"], mounts=[Mount("/tmp", "relative/path")]))
        with pytest.raises(InvalidArgumentError, match="does not exist"):
            await rt.create_container(sandbox, container(
                rootfs, "m", ["true"], mounts=[Mount("/no/such/dir", "/data")]))
        with pytest.raises(InvalidArgumentError, match="no command"):
            await rt.create_container(sandbox, container(rootfs, "m", []))
        assert await rt.list_containers() == []
        cid = await rt.create_container(sandbox, container(rootfs, "m", ["true"]))
        with pytest.raises(InvalidArgumentError, match="reserved"):
            await rt.create_container(sandbox, container(rootfs, "m", ["true"]))
        bad = await rt.create_container(sandbox, container(rootfs, "n", ["/no/such/binary"],
                                                           attempt=1))
        with pytest.raises(RuntimeServiceError, match=r"(?i)no such file"):
            await rt.start_container(bad)
        status = await rt.container_status(bad)
        assert (status.state, status.exit_code, status.reason) == (
            ContainerState.EXITED, 128, "StartError")
        assert [c.id for c in await rt.list_containers(state=ContainerState.CREATED)] == [cid]

    asyncio.run(scenario())


@BOTH_RUNTIMES
def test_remove_leaves_nothing_behind(node: Node, rootfs: Path) -> None:
    async def scenario() -> None:
        rt = node.runtime
        source = node.root / "shared"
        source.mkdir(parents=True)
        (source / "note").write_text("from the host\n")
        sandbox = await rt.run_pod_sandbox(pod(share_process_namespace=True))
        status = await rt.pod_sandbox_status(sandbox)
        netns = Path(status.netns_path).name
        cid = await rt.create_container(sandbox, container(
            rootfs, "reader", ["sh", "-c", "cat /data/note; sleep 300"], node.root / "logs",
            mounts=[Mount(str(source), "/data", readonly=True)],
            resources=Resources(memory_limit=32 << 20)))
        await rt.start_container(cid)
        result = await rt.exec_sync(cid, ["sh", "-c", "touch /data/x"])
        assert result.exit_code != 0  # read-only mount
        assert (await rt.exec_sync(cid, ["hostname"])).stdout == b"web\n"
        assert b"web" in (await rt.exec_sync(cid, ["cat", "/etc/hosts"])).stdout
        assert leftover_processes(node.root)
        assert cgroups.exists(f"{node.cgroup_root}/poduid-web")
        assert (NETNS_DIR / netns).exists()

        await rt.stop_pod_sandbox(sandbox)
        assert (await rt.pod_sandbox_status(sandbox)).state == SandboxState.NOTREADY
        assert (await rt.container_status(cid)).state == ContainerState.EXITED
        await rt.remove_pod_sandbox(sandbox)
        await rt.remove_pod_sandbox(sandbox)  # idempotent
        with pytest.raises(NotFoundError):
            await rt.pod_sandbox_status(sandbox)
        assert await rt.list_containers() == []
        assert leftover_processes(node.root) == []
        assert leftover_mounts(node.root) == []
        assert not cgroups.exists(node.cgroup_root + "/poduid-web")
        assert not (NETNS_DIR / netns).exists()
        assert node.network.allocations() == {}
        assert os.listdir(node.state_root) == []
        assert (node.root / "logs" / "reader.log").read_text().endswith("F from the host\n")

    asyncio.run(scenario())


@BOTH_RUNTIMES
def test_tty_container_attach_and_resize(node: Node, rootfs: Path) -> None:
    async def scenario() -> None:
        rt = node.runtime
        sandbox = await rt.run_pod_sandbox(pod())
        cid = await rt.create_container(sandbox, container(
            rootfs, "term", ["sh", "-c", "tty; while read line; do "
                             "[ $line = done ] && exit 4; stty size; done"],
            node.root / "logs", tty=True, stdin=True))
        await rt.start_container(cid)
        session = await rt.attach(cid)
        assert session.tty
        await session.resize(100, 40)
        output = b""
        for _ in range(100):  # the resize and the input travel apart: ask until it shows
            await session.write_stdin(b"size\n")
            output += await asyncio.wait_for(session.read_stdout(), 30)
            if b"40 100" in output:
                break
        assert b"40 100" in output
        await session.write_stdin(b"done\n")
        assert await asyncio.wait_for(session.wait(), 30) == 4
        await session.close()
        await wait_state(node, cid, ContainerState.EXITED)
        status = await rt.container_status(cid)
        assert (status.exit_code, status.reason) == (4, "Error")
        assert b"/dev/pts/" in Path(status.log_path).read_bytes()

    asyncio.run(scenario())


def test_container_names_are_reserved_per_sandbox_and_attempt(node: Node,
                                                               rootfs: Path) -> None:
    async def scenario() -> None:
        rt = node.runtime
        sandbox = await rt.run_pod_sandbox(pod())
        other = await rt.run_pod_sandbox(pod("db"))
        first = await rt.create_container(sandbox, container(rootfs, "app", ["true"]))
        # Another pod, or the next attempt, may use the name.
        await rt.create_container(other, container(rootfs, "app", ["true"]))
        retry = await rt.create_container(sandbox, container(rootfs, "app", ["true"],
                                                             attempt=1))
        with pytest.raises(InvalidArgumentError, match=f"reserved for {first}"):
            await rt.create_container(sandbox, container(rootfs, "app", ["true"]))

        # A new driver over the same root (the agent restarted) knows the names too.
        again = OciRuntime(node.root, node.network, runtime=node.runtime_name,
                           cgroup_root=node.cgroup_root)
        with pytest.raises(InvalidArgumentError, match="reserved"):
            await again.create_container(sandbox, container(rootfs, "app", ["true"],
                                                            attempt=1))
        assert len(await again.list_containers()) == 3
        # What it removes is gone for the first one as well, and the name is free again.
        await again.remove_container(first)
        with pytest.raises(NotFoundError):
            await rt.container_status(first)
        replacement = await rt.create_container(sandbox, container(rootfs, "app", ["true"]))
        assert {c.id for c in await rt.list_containers(sandbox_id=sandbox)} == {
            retry, replacement}
        await rt.remove_pod_sandbox(sandbox)
        assert [c.sandbox_id for c in await rt.list_containers()] == [other]
        with pytest.raises(NotFoundError):
            await rt.create_container(sandbox, container(rootfs, "app", ["true"]))

    asyncio.run(scenario())


def test_host_network_sandbox_keeps_the_node_hostname(node: Node, rootfs: Path) -> None:
    async def scenario() -> None:
        rt = node.runtime
        sandbox = await rt.run_pod_sandbox(pod("hostnet", host_network=True))
        status = await rt.pod_sandbox_status(sandbox)
        assert (status.netns_path, status.ip) == (str(NETNS_DIR / node.netns), "")
        assert not (node.root / "sandboxes" / sandbox / "ns" / "uts").exists()
        cid = await rt.create_container(sandbox, container(rootfs, "c", ["sleep", "300"]))
        await rt.start_container(cid)
        result = await rt.exec_sync(cid, ["hostname"])
        assert result.stdout.decode().strip() == socket.gethostname()
        await rt.remove_pod_sandbox(sandbox)
        assert leftover_mounts(node.root) == []

    asyncio.run(scenario())
