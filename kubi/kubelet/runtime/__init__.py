"""The node agent's container runtime layer: a CRI-shaped interface and its OCI driver
(oci.py, on runc or crun as runtimes.py chooses)."""

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
    RuntimeService,
    RuntimeServiceError,
    SandboxState,
    Security,
    StreamSession,
)

__all__ = [
    "ContainerConfig",
    "ContainerState",
    "ContainerStatus",
    "DNSConfig",
    "ExecResult",
    "InvalidArgumentError",
    "Mount",
    "MountPropagation",
    "NotFoundError",
    "PodSandboxConfig",
    "PodSandboxStatus",
    "PortMapping",
    "Resources",
    "RuntimeService",
    "RuntimeServiceError",
    "SandboxState",
    "Security",
    "StreamSession",
]
