"""The OCI driver: pods and containers with runc or crun, state kept on disk.

Layout under the runtime root (all of it survives a restart of the agent, so a new
`OciRuntime` over the same root sees the same sandboxes and containers):

    runc/, crun/                  the OCI runtime's --root (one per runtime binary name)
    sandboxes/<id>/sandbox.json   config, creation time, network, state
    sandboxes/<id>/ns/{ipc,uts}   the pod's IPC and UTS namespaces (bind-mounted files)
    sandboxes/<id>/{hosts,resolv.conf,hostname}
    containers/<id>/container.json, bundle/config.json, and the shim's files (shim.py)

A pod is a network namespace (network.py) plus IPC and UTS namespaces held by bind
mounts, so no pause process runs; with shareProcessNamespace a `sleep` started in a new
PID namespace holds it. Each container is supervised by its own shim, which keeps the
exit code and times and writes the CRI log.

Which runtime binary runs containers is chosen at construction (runtimes.py: auto, runc,
crun or a path); each container remembers the binary and state root it was started
with, so a driver over the same root with another choice still stops and removes it.

Processes that outlive the command starting them (the shim, the PID namespace holder)
are started through `_run_detaching`, never through the event loop's subprocess
support: uvloop ignores close_fds, so they would inherit the loop's copies of the other
end of its stdio pipes and the wait for end-of-output would never finish.

What this driver wrote once and never changes (container.json; a shim's started.json,
exit.json and shim.pid once there) is kept in memory after the first read, and so is
which containers each sandbox has (for the name check of create_container); state that
changes (sandbox.json, whether a shim lives) is read from disk every time. A container
another driver object over the same root removed is noticed (its container.json is
gone); one it created is seen by the listings, not by the name check.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import Any

from kubi.kubelet.runtime import bundle, cgroups
from kubi.kubelet.runtime.interface import (
    ContainerConfig,
    ContainerState,
    ContainerStatus,
    DNSConfig,
    ExecResult,
    InvalidArgumentError,
    Mount,
    MountPropagation,
    NotFoundError,
    PodSandboxConfig,
    PodSandboxStatus,
    PortMapping,
    Resources,
    RuntimeServiceError,
    SandboxState,
    Security,
    StreamSession,
)
from kubi.kubelet.runtime.logs import format_time_ns
from kubi.kubelet.runtime.network import PodNetwork, connect_in_netns, run
from kubi.kubelet.runtime.runtimes import RuntimeBinary, resolve_runtime

SHIM = Path(__file__).with_name("shim.py")
# How the shim is started: imported by path rather than run as a script, so its compiled
# bytecode is cached (a script is compiled on every start); `python -I -S -c BOOT SHIM
# DIR`, the shim's path and directory on its command line (_shim_alive looks for them).
SHIM_BOOT = ("import sys; sys.path.append(sys.argv[1].rpartition('/')[0]); "
             "import shim; shim.main(sys.argv[2])")
STOP_POLL_SECONDS = 0.02
KILL_WAIT_SECONDS = 10.0
START_ERROR_EXIT_CODE = 128
_HOSTNAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,62})$", re.IGNORECASE)
_ID = re.compile(r"[0-9a-f]{1,64}")


def _now_ns() -> int:
    return time.time_ns()


def _stamp(time_ns: int | None) -> str:
    return format_time_ns(time_ns) if time_ns else ""


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def _sandbox_config(data: dict[str, Any]) -> PodSandboxConfig:
    fields = dict(data)
    fields["dns"] = DNSConfig(**fields.get("dns") or {})
    fields["port_mappings"] = [PortMapping(**p) for p in fields.get("port_mappings") or []]
    fields["host_aliases"] = [(ip, list(names)) for ip, names in fields.get("host_aliases") or []]
    return PodSandboxConfig(**fields)


def _container_config(data: dict[str, Any]) -> ContainerConfig:
    fields = dict(data)
    fields["rootfs"] = Path(fields["rootfs"])
    fields["env"] = [(k, v) for k, v in fields.get("env") or []]
    fields["mounts"] = [Mount(**{**m, "propagation": MountPropagation(m["propagation"])})
                        for m in fields.get("mounts") or []]
    fields["resources"] = Resources(**fields.get("resources") or {})
    fields["security"] = Security(**fields.get("security") or {})
    return ContainerConfig(**fields)


def _write_json(path: Path, data: Any) -> None:
    """Atomically; compact, which json encodes in C (indented, it takes the Python path)."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as file:
        file.write(json.dumps(data))
    os.replace(temporary, path)


def _read_json(path: Path | str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as file:
            data: dict[str, Any] = json.loads(file.read())
    except (OSError, ValueError):
        return None
    return data


def _process_start_time(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat: tells a process from a later one with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start_time: str) -> bool:
    return pid > 0 and bool(start_time) and _process_start_time(pid) == start_time


def _unix_path(path: Path) -> str:
    """Unix socket paths are limited to 107 bytes; go through /proc/self/fd if longer."""
    if len(str(path)) < 100:
        return str(path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{path.name}"  # the fd stays open with the connection


def _labels_match(have: dict[str, str], want: dict[str, str] | None) -> bool:
    return not want or all(have.get(k) == v for k, v in want.items())


async def _run_detaching(*argv: str) -> tuple[int, str]:
    """Run a command that leaves a process behind; (exit code, stderr + stdout).
    network.run starts it with subprocess (close_fds: every other descriptor closed in
    the child, whatever event loop runs) on its own threads, not the loop's default
    executor: a shim start holds its thread for a tenth of a second or more."""
    return await run(*argv, check=False)


class OciRuntime:
    """`RuntimeService` on an OCI runtime (`runtime`: auto, runc, crun or a path; a
    choice that cannot work here raises RuntimeUnavailableError). `network` is None for
    a node without pod networking (every sandbox then needs host_network)."""

    def __init__(self, root: Path, network: PodNetwork | None, *, runtime: str = "auto",
                 cgroup_root: str = cgroups.DEFAULT_PARENT) -> None:
        if not cgroup_root.startswith("/"):
            raise InvalidArgumentError(f"cgroup root {cgroup_root!r} must be absolute")
        self.binary: RuntimeBinary = resolve_runtime(runtime)
        self.root = root.absolute()
        self.runtime = self.binary.path
        self.network = network
        self.cgroup_root = cgroup_root.rstrip("/") or "/"
        self.state_root = self.root / self.binary.name
        self.sandboxes_dir = self.root / "sandboxes"
        self.containers_dir = self.root / "containers"
        for directory in (self.state_root, self.sandboxes_dir, self.containers_dir):
            directory.mkdir(parents=True, exist_ok=True)
        # Files written once, by id (see the module's docstring).
        self._records: dict[str, dict[str, Any]] = {}
        self._started: dict[str, dict[str, Any]] = {}
        self._exited: dict[str, dict[str, Any]] = {}
        self._shim_pids: dict[str, int] = {}
        # Sandbox id -> its containers' ids -> (name, attempt); None until first needed.
        self._by_sandbox: dict[str, dict[str, tuple[str, int]]] | None = None

    def _runtime_of(self, record: dict[str, Any]) -> tuple[str, str]:
        """(binary, state root) the container was created with (runc before both were
        recorded)."""
        return (record.get("runtime") or shutil.which("runc") or "runc",
                record.get("runtime_root") or str(self.root / "runc"))

    async def _oci(self, record: dict[str, Any], *args: str,
                   check: bool = True) -> tuple[int, str]:
        binary, state_root = self._runtime_of(record)
        return await run(binary, "--root", state_root, *args, check=check)

    async def version(self) -> tuple[str, str]:
        return self.binary.name, self.binary.version

    # -- sandboxes ----------------------------------------------------------------------

    def _sandbox_dir(self, sandbox_id: str) -> Path:
        if not _ID.fullmatch(sandbox_id):
            raise NotFoundError(f"sandbox {sandbox_id!r} not found")
        return self.sandboxes_dir / sandbox_id

    def _sandbox_record(self, sandbox_id: str) -> dict[str, Any]:
        record = _read_json(self._sandbox_dir(sandbox_id) / "sandbox.json")
        if record is None:
            raise NotFoundError(f"sandbox {sandbox_id!r} not found")
        return record

    def _cgroup_parent(self, config: PodSandboxConfig) -> str:
        if config.cgroup_parent:
            if not config.cgroup_parent.startswith("/"):
                raise InvalidArgumentError(
                    f"cgroup parent {config.cgroup_parent!r} must be an absolute path "
                    "(only the cgroupfs driver is supported)")
            return config.cgroup_parent.rstrip("/")
        return f"{self.cgroup_root.rstrip('/')}/pod{config.uid}"

    async def run_pod_sandbox(self, config: PodSandboxConfig) -> str:
        for label, value in (("name", config.name), ("namespace", config.namespace),
                             ("uid", config.uid)):
            if not value:
                raise InvalidArgumentError(f"sandbox metadata.{label} must not be empty")
        hostname = config.hostname or config.name
        if not _HOSTNAME.match(hostname):
            raise InvalidArgumentError(f"invalid hostname {hostname!r}")
        if not config.host_network and self.network is None:
            raise InvalidArgumentError("this node has no pod network: host_network only")
        cgroup_parent = self._cgroup_parent(config)
        sandbox_id = secrets.token_hex(32)
        directory = self.sandboxes_dir / sandbox_id
        (directory / "ns").mkdir(parents=True)
        record: dict[str, Any] = {
            "id": sandbox_id, "config": _to_json(config), "created_at": _now_ns(),
            "state": SandboxState.READY.value, "cgroup_parent": cgroup_parent,
            "hostname": hostname, "ip": "", "netns": "", "netns_path": None,
            "pid_holder": None,
        }
        _write_json(directory / "sandbox.json", record)
        try:
            # The IPC and UTS namespaces and the network are independent: made at once.
            outcomes = await asyncio.gather(
                self._make_namespaces(directory / "ns", hostname, config.host_network),
                self._make_network(sandbox_id, config, record), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            (directory / "hosts").write_text(bundle.hosts_content(
                hostname, record["ip"], config.host_aliases, config.host_network))
            (directory / "resolv.conf").write_text(bundle.resolv_content(config.dns))
            (directory / "hostname").write_text(hostname + "\n")
            if config.share_process_namespace:
                record["pid_holder"] = await self._start_pid_holder(record)
            _write_json(directory / "sandbox.json", record)
        except BaseException:
            await self._remove_sandbox_files(sandbox_id, record)
            raise
        return sandbox_id

    async def _make_namespaces(self, directory: Path, hostname: str,
                               host_network: bool) -> None:
        """The pod's IPC namespace and, unless on the host's network, its UTS namespace
        named `hostname`, held by bind mounts on files in `directory`."""
        namespaces = [f"--ipc={directory / 'ipc'}"]
        (directory / "ipc").touch()
        command = ["true"]
        if not host_network:
            (directory / "uts").touch()
            namespaces.append(f"--uts={directory / 'uts'}")
            # In the new UTS namespace, this file is its hostname (sethostname(2)).
            command = ["sh", "-c", 'printf "%s\\n" "$1" > /proc/sys/kernel/hostname', "sh",
                       hostname]
        await run("unshare", *namespaces, *command)

    async def _make_network(self, sandbox_id: str, config: PodSandboxConfig,
                            record: dict[str, Any]) -> None:
        """The pod's network namespace (or the node's); fills in the record."""
        if config.host_network:
            record["netns_path"] = self.network.node_netns_path() if self.network else None
            return
        assert self.network is not None
        info = await self.network.setup(sandbox_id, config.port_mappings)
        record.update(ip=info.ip, netns=info.netns, netns_path=info.netns_path)

    async def _start_pid_holder(self, record: dict[str, Any]) -> dict[str, Any]:
        """A process in a new PID namespace (inside the pod's others) for the containers
        to join; its parent `unshare` is orphaned so the agent does not have to reap it."""
        directory = self.sandboxes_dir / record["id"]
        enter = ["nsenter", f"--ipc={directory / 'ns' / 'ipc'}"]
        if not record["config"]["host_network"]:
            enter.append(f"--uts={directory / 'ns' / 'uts'}")
        if record["netns_path"]:
            enter.append(f"--net={record['netns_path']}")
        script = ("setsid " + " ".join(enter) + " unshare --pid --fork sleep infinity "
                  "</dev/null >/dev/null 2>&1 & echo $!")
        code, out = await _run_detaching("sh", "-c", script)
        if code != 0:
            raise RuntimeServiceError(f"the PID namespace holder did not start: {out}")
        parent = int(out.split()[-1])
        for _ in range(500):
            children: list[str] = []
            namespace = ""
            with contextlib.suppress(OSError):
                children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
                if children:
                    namespace = os.readlink(f"/proc/{children[0]}/ns/pid")
            # nsenter execs unshare, which forks sleep as PID 1 of the new namespace.
            if namespace and namespace != os.readlink("/proc/self/ns/pid"):
                child = int(children[0])
                return {"pid": child, "start_time": _process_start_time(child),
                        "parent": parent}
            await asyncio.sleep(0.005)
        raise RuntimeServiceError("the PID namespace holder did not start")

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        record = self._sandbox_record(sandbox_id)
        for container in await self.list_containers(sandbox_id=sandbox_id):
            if container.state == ContainerState.RUNNING:
                await self.stop_container(container.id, 0)
        holder = record.get("pid_holder")
        if holder and _alive(holder["pid"], holder["start_time"]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(holder["pid"], signal.SIGKILL)
        if self.network is not None and not record["config"]["host_network"]:
            await self.network.teardown(sandbox_id)
        record["state"] = SandboxState.NOTREADY.value
        _write_json(self.sandboxes_dir / sandbox_id / "sandbox.json", record)

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        """Stops what still runs and removes everything; no error when already gone."""
        try:
            record = self._sandbox_record(sandbox_id)
        except NotFoundError:
            return
        if record["state"] != SandboxState.NOTREADY.value:
            await self.stop_pod_sandbox(sandbox_id)
        for container in await self.list_containers(sandbox_id=sandbox_id):
            await self.remove_container(container.id)
        await self._remove_sandbox_files(sandbox_id, record)

    async def _remove_sandbox_files(self, sandbox_id: str, record: dict[str, Any]) -> None:
        directory = self.sandboxes_dir / sandbox_id
        holder = record.get("pid_holder")
        if holder and _alive(holder["pid"], holder["start_time"]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(holder["pid"], signal.SIGKILL)
        if self.network is not None and not record["config"].get("host_network"):
            await self.network.teardown(sandbox_id)
        for name in ("ipc", "uts"):
            path = directory / "ns" / name
            if path.exists():
                await run("umount", str(path), check=False)
        cgroups.remove(record["cgroup_parent"])
        shutil.rmtree(directory, ignore_errors=True)
        if self._by_sandbox is not None and not self._by_sandbox.get(sandbox_id):
            self._by_sandbox.pop(sandbox_id, None)

    def _sandbox_status(self, record: dict[str, Any]) -> PodSandboxStatus:
        return PodSandboxStatus(
            id=record["id"], config=_sandbox_config(record["config"]),
            state=SandboxState(record["state"]), created_at=_stamp(record["created_at"]),
            ip=record["ip"], netns_path=record["netns_path"] or "")

    async def pod_sandbox_status(self, sandbox_id: str) -> PodSandboxStatus:
        return self._sandbox_status(self._sandbox_record(sandbox_id))

    async def list_pod_sandbox(self, state: SandboxState | None = None,
                               labels: dict[str, str] | None = None
                               ) -> list[PodSandboxStatus]:
        result = []
        for directory in sorted(self.sandboxes_dir.iterdir()):
            record = _read_json(directory / "sandbox.json")
            if record is None:
                continue
            status = self._sandbox_status(record)
            if (state is None or status.state == state) and \
                    _labels_match(status.config.labels, labels):
                result.append(status)
        return sorted(result, key=lambda s: s.created_at)

    # -- containers ---------------------------------------------------------------------

    def _container_dir(self, container_id: str) -> Path:
        if not _ID.fullmatch(container_id):
            raise NotFoundError(f"container {container_id!r} not found")
        return self.containers_dir / container_id

    def _container_record(self, container_id: str) -> dict[str, Any]:
        path = self._container_dir(container_id) / "container.json"
        record = self._records.get(container_id)
        if record is not None and not os.path.exists(str(path)):
            self._forget(container_id)  # removed by another driver over this root
            record = None
        elif record is None:
            record = self._load_record(path)
        if record is None:
            raise NotFoundError(f"container {container_id!r} not found")
        return record

    def _load_record(self, path: Path) -> dict[str, Any] | None:
        record = _read_json(path)
        if record is not None:
            self._remember(record)
        return record

    def _remember(self, record: dict[str, Any]) -> None:
        self._records[record["id"]] = record
        if self._by_sandbox is not None:
            self._by_sandbox.setdefault(record["sandbox_id"], {})[record["id"]] = (
                record["config"]["name"], record["config"]["attempt"])

    def _forget(self, container_id: str) -> None:
        record = self._records.pop(container_id, None)
        for cache in (self._started, self._exited, self._shim_pids):
            cache.pop(container_id, None)
        if record is not None and self._by_sandbox is not None:
            self._by_sandbox.get(record["sandbox_id"], {}).pop(container_id, None)

    def _containers_of(self, sandbox_id: str) -> dict[str, tuple[str, int]]:
        """Container id -> (name, attempt) of the sandbox's containers, from memory once
        every container record was read."""
        if self._by_sandbox is None:
            self._by_sandbox = {}
            with os.scandir(self.containers_dir) as entries:
                for entry in entries:
                    record = self._records.get(entry.name) or _read_json(
                        f"{entry.path}/container.json")
                    if record is not None:
                        self._remember(record)
        return self._by_sandbox.get(sandbox_id, {})

    async def create_container(self, sandbox_id: str, config: ContainerConfig) -> str:
        sandbox = self._sandbox_record(sandbox_id)
        if sandbox["state"] != SandboxState.READY.value:
            raise InvalidArgumentError(f"sandbox {sandbox_id} is not ready")
        if config.attempt < 0:
            raise InvalidArgumentError("attempt must not be negative")
        if config.log_path and not os.path.isabs(config.log_path):
            raise InvalidArgumentError(f"log path {config.log_path!r} is not absolute")
        for existing, (name, attempt) in list(self._containers_of(sandbox_id).items()):
            if (name, attempt) == (config.name, config.attempt) and \
                    self._exists(existing):
                raise InvalidArgumentError(
                    f"container name {config.name!r} attempt {config.attempt} is reserved "
                    f"for {existing}")
        sandbox_dir = self.sandboxes_dir / sandbox_id
        host_network = sandbox["config"]["host_network"]
        holder = sandbox.get("pid_holder")
        context = bundle.SandboxContext(
            hostname=sandbox["hostname"], network_ns=sandbox["netns_path"],
            ipc_ns=str(sandbox_dir / "ns" / "ipc"),
            uts_ns=None if host_network else str(sandbox_dir / "ns" / "uts"),
            pid_ns=f"/proc/{holder['pid']}/ns/pid" if holder else None,
            hosts_file=str(sandbox_dir / "hosts"),
            resolv_file=str(sandbox_dir / "resolv.conf"),
            hostname_file=str(sandbox_dir / "hostname"))
        container_id = secrets.token_hex(32)
        cgroups_path = f"{sandbox['cgroup_parent']}/{container_id}"
        spec = bundle.build_spec(config, context, cgroups_path)
        directory = self.containers_dir / container_id
        (directory / "bundle").mkdir(parents=True)
        _write_json(directory / "bundle" / "config.json", spec)
        record = {
            "id": container_id, "sandbox_id": sandbox_id, "config": _to_json(config),
            "created_at": _now_ns(), "cgroups_path": cgroups_path,
            "runtime": self.runtime, "runtime_root": str(self.state_root)}
        _write_json(directory / "container.json", record)
        self._remember(record)
        return container_id

    def _exists(self, container_id: str) -> bool:
        """Whether its record is still there; forgotten when not."""
        try:
            self._container_record(container_id)
        except NotFoundError:
            self._forget(container_id)
            return False
        return True

    async def start_container(self, container_id: str) -> None:
        record = self._container_record(container_id)
        directory = self.containers_dir / container_id
        if (directory / "shim.json").exists() or (directory / "exit.json").exists():
            raise InvalidArgumentError(f"container {container_id} was already started")
        config = record["config"]
        binary, state_root = self._runtime_of(record)
        _write_json(directory / "shim.json", {
            "runtime": binary, "runtime_root": state_root, "id": container_id,
            "bundle": str(directory / "bundle"), "log_path": config["log_path"],
            "tty": config["tty"], "stdin": config["stdin"],
            "stdin_once": config["stdin_once"]})
        code, message = await _run_detaching(sys.executable, "-I", "-S", "-c", SHIM_BOOT,
                                             str(SHIM), str(directory))
        if code != 0:
            await self._oci(record, "delete", "--force", container_id, check=False)
            _write_json(directory / "exit.json", {
                "exit_code": START_ERROR_EXIT_CODE, "finished_at": _now_ns(),
                "oom_killed": False, "reason": "StartError", "message": message})
            raise RuntimeServiceError(f"failed to start container {container_id}: {message}")

    def _shim_alive(self, directory: Path) -> bool:
        pid = self._shim_pids.get(directory.name)
        try:
            if pid is None:
                with open(directory / "shim.pid", "rb") as file:
                    pid = int(file.read())
                self._shim_pids[directory.name] = pid
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                cmdline = file.read()
        except (OSError, ValueError):
            return False
        return str(SHIM).encode() in cmdline and str(directory).encode() in cmdline

    def _written_once(self, cache: dict[str, dict[str, Any]], directory: Path,
                      name: str) -> dict[str, Any] | None:
        """A file the shim (or a failed start) writes once: read until it is there."""
        data = cache.get(directory.name)
        if data is None:
            data = _read_json(directory / name)
            if data is not None:
                cache[directory.name] = data
        return data

    def _status(self, record: dict[str, Any]) -> ContainerStatus:
        directory = self.containers_dir / record["id"]
        config = record["config"]
        status = ContainerStatus(
            id=record["id"], sandbox_id=record["sandbox_id"], name=config["name"],
            attempt=config["attempt"], image=config["image"], state=ContainerState.CREATED,
            created_at=_stamp(record["created_at"]), log_path=config["log_path"],
            labels=dict(config["labels"]), annotations=dict(config["annotations"]))
        started = self._written_once(self._started, directory, "started.json")
        exited = self._written_once(self._exited, directory, "exit.json")
        if started:
            status.started_at = _stamp(started["started_at"])
        if exited:
            status.state = ContainerState.EXITED
            status.exit_code = exited["exit_code"]
            status.finished_at = _stamp(exited["finished_at"])
            status.message = exited.get("message", "")
            status.reason = exited.get("reason") or (
                "OOMKilled" if exited.get("oom_killed")
                else "Completed" if exited["exit_code"] == 0 else "Error")
        elif started:
            if self._shim_alive(directory):
                status.state = ContainerState.RUNNING
                status.pid = started["pid"]
            else:
                status.state = ContainerState.UNKNOWN
                status.message = "the container's supervisor is gone"
        elif (directory / "shim.json").exists():
            status.state = ContainerState.UNKNOWN  # starting, or the start was interrupted
        return status

    async def container_status(self, container_id: str) -> ContainerStatus:
        return self._status(self._container_record(container_id))

    async def list_containers(self, sandbox_id: str | None = None,
                              state: ContainerState | None = None,
                              labels: dict[str, str] | None = None
                              ) -> list[ContainerStatus]:
        result = []
        with os.scandir(self.containers_dir) as entries:
            records = [self._records.get(entry.name)
                       or self._load_record(Path(entry.path, "container.json"))
                       for entry in entries]
        for record in records:
            if record is None or (sandbox_id and record["sandbox_id"] != sandbox_id):
                continue
            status = self._status(record)
            if (state is None or status.state == state) and _labels_match(status.labels, labels):
                result.append(status)
        return sorted(result, key=lambda s: s.created_at)

    async def _wait_exited(self, container_id: str, timeout: float) -> bool:
        directory = self.containers_dir / container_id
        deadline = time.monotonic() + timeout
        while True:
            if (directory / "exit.json").exists() or not self._shim_alive(directory):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(STOP_POLL_SECONDS)

    async def stop_container(self, container_id: str, timeout: float) -> None:
        """SIGTERM, up to `timeout` seconds, then SIGKILL (at once when timeout <= 0)."""
        record = self._container_record(container_id)
        if self._status(record).state != ContainerState.RUNNING:
            return
        if timeout > 0:
            await self._oci(record, "kill", container_id, "TERM", check=False)
            if await self._wait_exited(container_id, timeout):
                return
        await self._oci(record, "kill", container_id, "KILL", check=False)
        if not await self._wait_exited(container_id, KILL_WAIT_SECONDS):
            raise RuntimeServiceError(f"container {container_id} did not die after SIGKILL")

    async def remove_container(self, container_id: str) -> None:
        """Kills the container if it runs, then removes it; no error when already gone."""
        try:
            record = self._container_record(container_id)
        except NotFoundError:
            return
        await self.stop_container(container_id, 0)
        await self._oci(record, "delete", "--force", container_id, check=False)
        cgroups.remove(record["cgroups_path"])
        shutil.rmtree(self.containers_dir / container_id, ignore_errors=True)
        self._forget(container_id)

    # -- exec, attach, port forward, logs -----------------------------------------------

    async def _require_running(self, container_id: str) -> tuple[str, str]:
        """The container's (runtime binary, state root); it must be running."""
        record = self._container_record(container_id)
        if self._status(record).state != ContainerState.RUNNING:
            raise RuntimeServiceError(f"container {container_id} is not running")
        return self._runtime_of(record)

    async def exec_sync(self, container_id: str, cmd: list[str],
                        timeout: float | None = None) -> ExecResult:
        if not cmd:
            raise InvalidArgumentError("exec needs a command")
        binary, state_root = await self._require_running(container_id)
        pid_file = self.containers_dir / container_id / f"exec-{secrets.token_hex(6)}.pid"
        process = await asyncio.create_subprocess_exec(
            binary, "--root", state_root, "exec", "--pid-file", str(pid_file),
            container_id, *cmd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            _kill_exec(pid_file)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise TimeoutError(f"command {cmd!r} timed out after {timeout}s") from None
        finally:
            pid_file.unlink(missing_ok=True)
        return ExecResult(process.returncode or 0, out, err)

    async def exec(self, container_id: str, cmd: list[str], *, tty: bool = False,
                   stdin: bool = False) -> StreamSession:
        if not cmd:
            raise InvalidArgumentError("exec needs a command")
        binary, state_root = await self._require_running(container_id)
        pid_file = self.containers_dir / container_id / f"exec-{secrets.token_hex(6)}.pid"
        argv = [binary, "--root", state_root, "exec", "--pid-file",
                str(pid_file), *(["-t"] if tty else []), container_id, *cmd]
        if not tty:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            return PipeSession(process, pid_file)
        name = self.binary.name if binary == self.runtime else Path(binary).name
        if name == "crun":
            return await self._exec_with_console_socket(binary, state_root, container_id,
                                                        cmd, pid_file)
        master, slave = os.openpty()
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                preexec_fn=_take_controlling_terminal)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return TerminalSession(process, master, pid_file)

    async def _exec_with_console_socket(self, binary: str, state_root: str,
                                        container_id: str, cmd: list[str],
                                        pid_file: Path) -> StreamSession:
        """A tty exec whose terminal the runtime hands over (--console-socket): crun's own
        relay of a terminal it is run on does not pass window size changes on."""
        directory = Path(tempfile.mkdtemp(prefix="kubi-exec-"))  # short: a unix socket path
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(directory / "console.sock"))
            listener.listen(1)
            listener.setblocking(False)
            process = await asyncio.create_subprocess_exec(
                binary, "--root", state_root, "exec", "--pid-file", str(pid_file),
                "--console-socket", str(directory / "console.sock"), "--tty", container_id,
                *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
            fds = await self._receive_terminal(process, listener, container_id, pid_file)
        finally:
            listener.close()
            shutil.rmtree(directory, ignore_errors=True)
        if not fds:
            raise RuntimeServiceError(f"exec in {container_id}: no terminal from the runtime")
        fcntl.ioctl(fds[0], termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        return TerminalSession(process, fds[0], pid_file)

    async def _receive_terminal(self, process: asyncio.subprocess.Process,
                                listener: socket.socket, container_id: str,
                                pid_file: Path) -> list[int]:
        """The terminal the runtime sends to `listener`; an error if it exits first."""
        loop = asyncio.get_running_loop()
        accepting = asyncio.ensure_future(loop.sock_accept(listener))
        exiting = asyncio.ensure_future(process.wait())
        try:
            await asyncio.wait([accepting, exiting], timeout=KILL_WAIT_SECONDS,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            exiting.cancel()
            if not accepting.done():
                accepting.cancel()
        if accepting.cancelled() or accepting.exception() is not None:
            if process.returncode is None:
                _kill_exec(pid_file)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            assert process.stderr is not None
            error = (await process.stderr.read()).decode(errors="replace").strip()
            await process.wait()
            raise RuntimeServiceError(f"exec in {container_id} failed: "
                                      f"{error or 'no terminal from the runtime'}")
        connection, _ = accepting.result()
        with connection:
            connection.setblocking(True)
            connection.settimeout(KILL_WAIT_SECONDS)
            _, fds, _, _ = socket.recv_fds(connection, 4096, 1)
        return fds

    async def attach(self, container_id: str) -> StreamSession:
        await self._require_running(container_id)
        record = self._container_record(container_id)
        path = _unix_path(self.containers_dir / container_id / "attach.sock")
        try:
            reader, writer = await asyncio.open_unix_connection(path)
        except OSError as error:
            raise RuntimeServiceError(f"attach to {container_id}: {error}") from None
        finally:
            if path.startswith("/proc/self/fd/"):
                os.close(int(path.split("/")[4]))
        return AttachSession(reader, writer, bool(record["config"]["tty"]))

    async def port_forward(self, sandbox_id: str, port: int
                           ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        record = self._sandbox_record(sandbox_id)
        if record["state"] != SandboxState.READY.value:
            raise RuntimeServiceError(f"sandbox {sandbox_id} is not ready")
        if not 0 < port < 65536:
            raise InvalidArgumentError(f"invalid port {port}")
        return await connect_in_netns(record["netns_path"], port)

    async def reopen_container_log(self, container_id: str) -> None:
        await self._require_running(container_id)
        pid = int((self.containers_dir / container_id / "shim.pid").read_text())
        os.kill(pid, signal.SIGUSR1)


def _kill_exec(pid_file: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _take_controlling_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PipeSession:
    """A non-tty exec: runc exec in the foreground, its stdio as pipes."""

    tty = False

    def __init__(self, process: asyncio.subprocess.Process, pid_file: Path) -> None:
        self.process = process
        self.pid_file = pid_file

    async def write_stdin(self, data: bytes) -> None:
        if self.process.stdin is None:
            raise RuntimeServiceError("exec was started without stdin")
        self.process.stdin.write(data)
        await self.process.stdin.drain()

    async def close_stdin(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()

    async def read_stdout(self, limit: int = 65536) -> bytes:
        assert self.process.stdout is not None
        return await self.process.stdout.read(limit)

    async def read_stderr(self, limit: int = 65536) -> bytes:
        assert self.process.stderr is not None
        return await self.process.stderr.read(limit)

    async def resize(self, width: int, height: int) -> None:
        return None  # no terminal to resize

    async def wait(self) -> int:
        code = await self.process.wait()
        self.pid_file.unlink(missing_ok=True)
        return code

    async def close(self) -> None:
        if self.process.returncode is None:
            _kill_exec(self.pid_file)
            await self.process.wait()
        self.pid_file.unlink(missing_ok=True)


class TerminalSession:
    """A tty exec: `runc exec -t` with a pseudo-terminal of ours as its controlling
    terminal, which runc relays to the container's terminal, resizes included
    (SIGWINCH); or the container's terminal itself (crun, --console-socket)."""

    tty = True

    def __init__(self, process: asyncio.subprocess.Process, master: int,
                 pid_file: Path) -> None:
        self.process = process
        self.master = master
        self.pid_file = pid_file
        os.set_blocking(master, False)

    async def write_stdin(self, data: bytes) -> None:
        while data:
            try:
                written = os.write(self.master, data)
            except BlockingIOError:
                await asyncio.sleep(0.01)
                continue
            data = data[written:]

    async def close_stdin(self) -> None:
        await self.write_stdin(b"\x04")

    async def read_stdout(self, limit: int = 65536) -> bytes:
        loop = asyncio.get_running_loop()
        while True:
            try:
                return os.read(self.master, limit)
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_reader(self.master, ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_reader(self.master)
            except OSError:
                return b""  # EIO: every process holding the terminal has gone

    async def read_stderr(self, limit: int = 65536) -> bytes:
        return b""

    async def resize(self, width: int, height: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    async def wait(self) -> int:
        code = await self.process.wait()
        self.pid_file.unlink(missing_ok=True)
        return code

    async def close(self) -> None:
        if self.process.returncode is None:
            _kill_exec(self.pid_file)
            await self.process.wait()
        with contextlib.suppress(OSError):
            os.close(self.master)
        self.pid_file.unlink(missing_ok=True)


class AttachSession:
    """The container's own stdio through its shim (frames, see shim.py)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 tty: bool) -> None:
        self.tty = tty
        self.writer = writer
        self.streams: dict[int, asyncio.Queue[bytes]] = {1: asyncio.Queue(), 2: asyncio.Queue()}
        self.leftover: dict[int, bytes] = {1: b"", 2: b""}
        self.exit_code: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._pump(reader))

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await reader.readexactly(5)
                kind, length = struct.unpack("!BI", header)
                payload = await reader.readexactly(length)
                if kind in self.streams:
                    self.streams[kind].put_nowait(payload)
                elif kind == 4 and not self.exit_code.done():
                    self.exit_code.set_result(struct.unpack("!i", payload)[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for queue in self.streams.values():
                queue.put_nowait(b"")
            if not self.exit_code.done():
                self.exit_code.set_exception(RuntimeServiceError("attach connection closed"))

    async def _read(self, stream: int, limit: int) -> bytes:
        data = self.leftover[stream] or await self.streams[stream].get()
        if not data:
            self.streams[stream].put_nowait(b"")  # keep reporting the end
        self.leftover[stream] = data[limit:]
        return data[:limit]

    async def _send(self, kind: int, payload: bytes) -> None:
        self.writer.write(struct.pack("!BI", kind, len(payload)) + payload)
        await self.writer.drain()

    async def write_stdin(self, data: bytes) -> None:
        await self._send(0, data)

    async def close_stdin(self) -> None:
        await self._send(1, b"")

    async def read_stdout(self, limit: int = 65536) -> bytes:
        return await self._read(1, limit)

    async def read_stderr(self, limit: int = 65536) -> bytes:
        return await self._read(2, limit)

    async def resize(self, width: int, height: int) -> None:
        await self._send(3, struct.pack("!HH", width, height))

    async def wait(self) -> int:
        return await self.exit_code

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if self.exit_code.done() and not self.exit_code.cancelled():
            self.exit_code.exception()  # retrieved: no "never retrieved" warning
