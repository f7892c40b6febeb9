"""The container runtime seam of the node agent, in CRI vocabulary (k8s.io/cri-api v1).

Everything here is data or a Protocol: the OCI driver (`oci.OciRuntime`) implements it
with runc, and a driver without root (simulated) can implement it with plain objects.
Method names are the CRI RPC names in snake_case; all methods are coroutines because the
agent is an asyncio program and a runtime shells out or waits on processes.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


class RuntimeServiceError(Exception):
    """A runtime call failed; the message says why (CRI: an error with a gRPC status)."""


class NotFoundError(RuntimeServiceError):
    """The sandbox or container id is unknown (CRI: codes.NotFound)."""


class InvalidArgumentError(RuntimeServiceError):
    """The request is malformed; nothing was changed (CRI: codes.InvalidArgument)."""


# -- sandboxes --------------------------------------------------------------------------


@dataclass
class DNSConfig:
    servers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


@dataclass
class PortMapping:
    container_port: int
    host_port: int = 0
    protocol: str = "TCP"  # TCP, UDP or SCTP
    host_ip: str = ""


@dataclass
class PodSandboxConfig:
    name: str
    namespace: str
    uid: str
    attempt: int = 0
    hostname: str = ""
    dns: DNSConfig = field(default_factory=DNSConfig)
    port_mappings: list[PortMapping] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    cgroup_parent: str = ""  # e.g. /kubepods/burstable/pod<uid>; empty: the runtime picks
    share_process_namespace: bool = False
    host_network: bool = False
    host_aliases: list[tuple[str, list[str]]] = field(default_factory=list)  # ip, hostnames
    log_directory: str = ""


class SandboxState(enum.Enum):
    READY = "SANDBOX_READY"
    NOTREADY = "SANDBOX_NOTREADY"


@dataclass
class PodSandboxStatus:
    id: str
    config: PodSandboxConfig
    state: SandboxState
    created_at: str  # RFC 3339 with nanoseconds
    ip: str = ""
    netns_path: str = ""


# -- containers -------------------------------------------------------------------------


class MountPropagation(enum.Enum):
    PRIVATE = "PROPAGATION_PRIVATE"
    HOST_TO_CONTAINER = "PROPAGATION_HOST_TO_CONTAINER"
    BIDIRECTIONAL = "PROPAGATION_BIDIRECTIONAL"


@dataclass
class Mount:
    host_path: str
    container_path: str
    readonly: bool = False
    propagation: MountPropagation = MountPropagation.PRIVATE


@dataclass
class Resources:
    cpu_shares: int = 0  # 0: unset (the runtime leaves the cgroup default)
    cpu_quota: int = 0  # microseconds per period; 0: unlimited
    cpu_period: int = 0
    memory_limit: int = 0  # bytes; 0: unlimited


@dataclass
class Security:
    run_as_user: int | None = None
    run_as_group: int | None = None
    privileged: bool = False
    capabilities_add: list[str] = field(default_factory=list)  # "NET_ADMIN" or "ALL"
    capabilities_drop: list[str] = field(default_factory=list)
    read_only_root_filesystem: bool = False
    no_new_privileges: bool = False


@dataclass
class ContainerConfig:
    name: str
    rootfs: Path  # a prepared root directory (the images layer made it)
    image: str = ""  # the image reference, reported back in status
    image_config: dict[str, Any] = field(default_factory=dict)  # OCI image config's `config`
    attempt: int = 0
    command: list[str] = field(default_factory=list)  # overrides the image Entrypoint
    args: list[str] = field(default_factory=list)  # overrides the image Cmd
    working_dir: str = ""
    env: list[tuple[str, str]] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    security: Security = field(default_factory=Security)
    log_path: str = ""  # absolute; empty: no log file
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


class ContainerState(enum.Enum):
    CREATED = "CONTAINER_CREATED"
    RUNNING = "CONTAINER_RUNNING"
    EXITED = "CONTAINER_EXITED"
    UNKNOWN = "CONTAINER_UNKNOWN"


@dataclass
class ContainerStatus:
    id: str
    sandbox_id: str
    name: str
    attempt: int
    image: str
    state: ContainerState
    created_at: str
    started_at: str = ""
    finished_at: str = ""
    exit_code: int = 0
    reason: str = ""  # Completed, Error, OOMKilled (exited only)
    message: str = ""
    pid: int = 0
    log_path: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


# -- streams ----------------------------------------------------------------------------


@runtime_checkable
class StreamSession(Protocol):
    """A running exec or an attachment to a container's stdio.

    With a tty everything arrives on stdout and `read_stderr` returns b"" at once.
    Reads return b"" at end of stream. `wait` returns the exit code."""

    tty: bool

    async def write_stdin(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...

    async def read_stdout(self, limit: int = 65536) -> bytes: ...

    async def read_stderr(self, limit: int = 65536) -> bytes: ...

    async def resize(self, width: int, height: int) -> None: ...

    async def wait(self) -> int: ...

    async def close(self) -> None: ...


@dataclass
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


# -- the service ------------------------------------------------------------------------


@runtime_checkable
class RuntimeService(Protocol):
    """CRI RuntimeService, as the node agent uses it."""

    async def version(self) -> tuple[str, str]:
        """(runtime name, runtime version), e.g. ("runc", "1.1.5")."""
        ...

    async def run_pod_sandbox(self, config: PodSandboxConfig) -> str: ...

    async def stop_pod_sandbox(self, sandbox_id: str) -> None: ...

    async def remove_pod_sandbox(self, sandbox_id: str) -> None: ...

    async def pod_sandbox_status(self, sandbox_id: str) -> PodSandboxStatus: ...

    async def list_pod_sandbox(self, state: SandboxState | None = None,
                               labels: dict[str, str] | None = None
                               ) -> list[PodSandboxStatus]: ...

    async def create_container(self, sandbox_id: str, config: ContainerConfig) -> str: ...

    async def start_container(self, container_id: str) -> None: ...

    async def stop_container(self, container_id: str, timeout: float) -> None: ...

    async def remove_container(self, container_id: str) -> None: ...

    async def list_containers(self, sandbox_id: str | None = None,
                              state: ContainerState | None = None,
                              labels: dict[str, str] | None = None
                              ) -> list[ContainerStatus]: ...

    async def container_status(self, container_id: str) -> ContainerStatus: ...

    async def exec_sync(self, container_id: str, cmd: list[str],
                        timeout: float | None = None) -> ExecResult:
        """Raises TimeoutError (after killing the process) when `timeout` passes."""
        ...

    async def exec(self, container_id: str, cmd: list[str], *, tty: bool = False,
                   stdin: bool = False) -> StreamSession: ...

    async def attach(self, container_id: str) -> StreamSession: ...

    async def port_forward(self, sandbox_id: str, port: int
                           ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...

    async def reopen_container_log(self, container_id: str) -> None: ...
