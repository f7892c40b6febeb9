"""OCI runtime bundles: the config.json runc runs, and the per-pod files it mounts.

Pure functions over the CRI-shaped configs (no root needed to call them), so what a
container gets is testable without starting it. Defaults follow containerd's CRI plugin
(default capabilities, masked paths, Entrypoint/Cmd merging, HOSTNAME in the env).
"""

from __future__ import annotations

import json
import os
import re
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubi.kubelet.runtime.interface import (
    ContainerConfig,
    DNSConfig,
    InvalidArgumentError,
    MountPropagation,
)

Spec = dict[str, Any]

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WANTED_NOFILE = 1048576  # what containerd asks for; capped by the host's hard limit

ALL_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
    "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # indexed by capability number
DEFAULT_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_PROPAGATION_OPTION = {
    MountPropagation.PRIVATE: "rprivate",
    MountPropagation.HOST_TO_CONTAINER: "rslave",
    MountPropagation.BIDIRECTIONAL: "rshared",
}
_ENV_NAME = re.compile(r"^[^=\x00]+$")


@dataclass
class SandboxContext:
    """What a container takes from its pod: namespaces to join and the pod's files.

    A namespace path of None means a new namespace (pid) or the caller's (network and
    UTS of host-network pods, when the agent runs in the node's namespaces)."""

    hostname: str
    network_ns: str | None
    ipc_ns: str
    uts_ns: str | None
    pid_ns: str | None = None
    hosts_file: str = ""
    resolv_file: str = ""
    hostname_file: str = ""


def host_capabilities() -> set[str]:
    """Capabilities in this process's bounding set: a container cannot get any other."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return set(ALL_CAPABILITIES)
    match = re.search(r"^CapBnd:\s*([0-9a-f]+)$", text, re.MULTILINE)
    if not match:
        return set(ALL_CAPABILITIES)
    mask = int(match.group(1), 16)
    return {name for bit, name in enumerate(ALL_CAPABILITIES) if mask >> bit & 1}


def _capability_name(raw: str) -> str:
    name = raw.upper().removeprefix("CAP_")
    if name != "ALL" and name not in ALL_CAPABILITIES:
        raise InvalidArgumentError(f"unknown capability {raw!r}")
    return name


def capabilities(add: list[str], drop: list[str], privileged: bool,
                 available: set[str]) -> list[str]:
    """The container's capability set (as CAP_ names) by containerd's rules, applied in
    order: add ALL, drop ALL, add each, drop each; privileged gets everything."""
    added = [_capability_name(c) for c in add]
    dropped = [_capability_name(c) for c in drop]
    chosen = set(DEFAULT_CAPABILITIES)
    if privileged or "ALL" in added:
        chosen = set(ALL_CAPABILITIES)
    if not privileged:
        if "ALL" in dropped:
            chosen = set()
        chosen |= set(added) - {"ALL"}
        chosen -= set(dropped)
    return [f"CAP_{name}" for name in ALL_CAPABILITIES if name in chosen & available]


def process_args(config: ContainerConfig) -> list[str]:
    """Kubernetes' command/args over the image's Entrypoint/Cmd."""
    image = config.image_config
    entrypoint = list(image.get("Entrypoint") or [])
    cmd = list(image.get("Cmd") or [])
    if config.command:
        args = [*config.command, *config.args]
    elif config.args:
        args = [*entrypoint, *config.args]
    else:
        args = [*entrypoint, *cmd]
    if not args:
        raise InvalidArgumentError(f"container {config.name!r}: no command specified")
    return args


def environment(config: ContainerConfig, hostname: str) -> list[str]:
    """HOSTNAME, then the image's Env, then the container's env (later wins, order kept)."""
    merged: dict[str, str] = {"HOSTNAME": hostname}
    for item in config.image_config.get("Env") or []:
        key, _, value = str(item).partition("=")
        merged[key] = value
    for key, value in config.env:
        if not _ENV_NAME.match(key):
            raise InvalidArgumentError(f"invalid environment variable name {key!r}")
        merged[key] = value
    merged.setdefault("PATH", DEFAULT_PATH)
    return [f"{key}={value}" for key, value in merged.items()]


def _read_db(path: Path) -> list[list[str]]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line.split(":") for line in lines if line and not line.startswith("#")]


def resolve_user(config: ContainerConfig) -> tuple[int, int, list[int]]:
    """(uid, gid, additional gids) from runAsUser/runAsGroup over the image's User,
    names looked up in the rootfs' /etc/passwd and /etc/group."""
    passwd = _read_db(config.rootfs / "etc" / "passwd")
    groups = _read_db(config.rootfs / "etc" / "group")
    user_part, _, group_part = str(config.image_config.get("User") or "").partition(":")
    uid, gid, username = 0, None, "root" if not user_part else ""
    if user_part:
        if user_part.isdigit():
            uid = int(user_part)
        else:
            entry = next((e for e in passwd if e[0] == user_part and len(e) > 3), None)
            if entry is None:
                raise InvalidArgumentError(f"no such user {user_part!r} in the image")
            uid = int(entry[2])
    if config.security.run_as_user is not None:
        if config.security.run_as_user < 0:
            raise InvalidArgumentError("runAsUser must not be negative")
        uid = config.security.run_as_user
    entry = next((e for e in passwd if len(e) > 3 and e[2] == str(uid)), None)
    if entry is not None:
        username = entry[0]
        if gid is None and entry[3].isdigit():
            gid = int(entry[3])
    if group_part and config.security.run_as_group is None:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            gentry = next((e for e in groups if e[0] == group_part and len(e) > 2), None)
            if gentry is None:
                raise InvalidArgumentError(f"no such group {group_part!r} in the image")
            gid = int(gentry[2])
    if config.security.run_as_group is not None:
        if config.security.run_as_group < 0:
            raise InvalidArgumentError("runAsGroup must not be negative")
        gid = config.security.run_as_group
    final_gid = gid if gid is not None else 0
    extra = sorted({int(e[2]) for e in groups
                    if len(e) > 3 and e[2].isdigit() and username
                    and username in e[3].split(",") and int(e[2]) != final_gid})
    return uid, final_gid, extra


def _default_mounts(privileged: bool) -> list[Spec]:
    sys_options = ["nosuid", "noexec", "nodev"] + ([] if privileged else ["ro"])
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                     "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime",
                     "rw" if privileged else "ro"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    ]


def _bind(source: str, destination: str, readonly: bool,
          propagation: MountPropagation = MountPropagation.PRIVATE) -> Spec:
    options = ["rbind", _PROPAGATION_OPTION[propagation], "ro" if readonly else "rw"]
    return {"destination": destination, "type": "bind", "source": source, "options": options}


def mounts(config: ContainerConfig, sandbox: SandboxContext) -> list[Spec]:
    """Default filesystems, the pod's /etc files, then the container's mounts (parents
    before children); a container mount replaces a default at the same destination."""
    wanted: list[Spec] = []
    for mount in config.mounts:
        if not os.path.isabs(mount.container_path):
            raise InvalidArgumentError(
                f"mount destination {mount.container_path!r} is not an absolute path")
        if not os.path.isabs(mount.host_path):
            raise InvalidArgumentError(
                f"mount source {mount.host_path!r} is not an absolute path")
        if not os.path.exists(mount.host_path):
            raise InvalidArgumentError(f"mount source {mount.host_path!r} does not exist")
        wanted.append(_bind(mount.host_path, os.path.normpath(mount.container_path),
                            mount.readonly, mount.propagation))
    taken = {m["destination"] for m in wanted}
    ro = config.security.read_only_root_filesystem
    pod_files = [(sandbox.hosts_file, "/etc/hosts"), (sandbox.resolv_file, "/etc/resolv.conf"),
                 (sandbox.hostname_file, "/etc/hostname")]
    result = [m for m in _default_mounts(config.security.privileged)
              if m["destination"] not in taken]
    result += [_bind(source, destination, ro) for source, destination in pod_files
               if source and destination not in taken]
    result += sorted(wanted, key=lambda m: len(Path(m["destination"]).parts))
    return result


def rlimits() -> list[Spec]:
    """nofile as high as containerd asks but never above the host's hard limit: raising a
    hard limit needs CAP_SYS_RESOURCE, which these machines do not grant."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = WANTED_NOFILE if hard == resource.RLIM_INFINITY else min(WANTED_NOFILE, hard)
    return [{"type": "RLIMIT_NOFILE", "hard": limit, "soft": limit}]


def build_spec(config: ContainerConfig, sandbox: SandboxContext, cgroups_path: str, *,
               available_capabilities: set[str] | None = None) -> Spec:
    """The OCI runtime spec (config.json) for one container of a pod."""
    if not config.name:
        raise InvalidArgumentError("container name must not be empty")
    if not config.rootfs.is_absolute() or not config.rootfs.is_dir():
        raise InvalidArgumentError(f"rootfs {str(config.rootfs)!r} is not a directory")
    cwd = config.working_dir or str(config.image_config.get("WorkingDir") or "") or "/"
    if not os.path.isabs(cwd):
        raise InvalidArgumentError(f"working directory {cwd!r} is not an absolute path")
    security = config.security
    uid, gid, extra_gids = resolve_user(config)
    caps = capabilities(security.capabilities_add, security.capabilities_drop,
                        security.privileged,
                        available_capabilities if available_capabilities is not None
                        else host_capabilities())
    user: Spec = {"uid": uid, "gid": gid}
    if extra_gids:
        user["additionalGids"] = extra_gids
    process: Spec = {
        "terminal": config.tty,
        "user": user,
        "args": process_args(config),
        "env": environment(config, sandbox.hostname),
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": rlimits(),
        "noNewPrivileges": security.no_new_privileges,
    }
    if config.tty:
        process["env"].append("TERM=xterm")
    namespaces: list[Spec] = [
        {"type": "pid", **({"path": sandbox.pid_ns} if sandbox.pid_ns else {})},
        {"type": "ipc", "path": sandbox.ipc_ns},
        {"type": "mount"},
    ]
    if sandbox.uts_ns is not None:
        namespaces.insert(2, {"type": "uts", "path": sandbox.uts_ns})
    if sandbox.network_ns is not None:
        namespaces.insert(1, {"type": "network", "path": sandbox.network_ns})
    res = config.resources
    if min(res.cpu_shares, res.cpu_quota, res.cpu_period, res.memory_limit) < 0:
        raise InvalidArgumentError("resource values must not be negative")
    resources: Spec = {"devices": [{"allow": security.privileged, "access": "rwm"}]}
    if res.memory_limit:
        resources["memory"] = {"limit": res.memory_limit}
    cpu: Spec = {}
    if res.cpu_shares:
        cpu["shares"] = res.cpu_shares
    if res.cpu_quota:
        cpu["quota"] = res.cpu_quota
        cpu["period"] = res.cpu_period or 100000
    elif res.cpu_period:
        cpu["period"] = res.cpu_period
    if cpu:
        resources["cpu"] = cpu
    container_mounts = mounts(config, sandbox)
    linux: Spec = {
        "cgroupsPath": cgroups_path,
        "namespaces": namespaces,
        "resources": resources,
    }
    if not security.privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
    propagations = {opt for m in container_mounts for opt in m.get("options", [])}
    if "rshared" in propagations:
        linux["rootfsPropagation"] = "rshared"
    elif "rslave" in propagations:
        linux["rootfsPropagation"] = "rslave"
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": str(config.rootfs), "readonly": security.read_only_root_filesystem},
        "mounts": container_mounts,
        "linux": linux,
    }


def write_spec(bundle_dir: Path, spec: Spec) -> Path:
    bundle_dir.mkdir(parents=True, exist_ok=True)
    path = bundle_dir / "config.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(spec, indent=1))
    temporary.replace(path)
    return path


# -- per-pod files ----------------------------------------------------------------------


def hosts_content(hostname: str, pod_ip: str, host_aliases: list[tuple[str, list[str]]],
                  host_network: bool, host_hosts: Path = Path("/etc/hosts")) -> str:
    """/etc/hosts the way the kubelet writes it (managedHostsFileContent)."""
    if host_network:
        try:
            base = host_hosts.read_text()
        except OSError:
            base = ""
        lines = ["# Kubernetes-managed hosts file (host network).", base.rstrip("\n")]
    else:
        lines = ["# Kubernetes-managed hosts file.",
                 "127.0.0.1\tlocalhost",
                 "::1\tlocalhost ip6-localhost ip6-loopback",
                 "fe00::0\tip6-localnet",
                 "fe00::0\tip6-mcastprefix",
                 "fe00::1\tip6-allnodes",
                 "fe00::2\tip6-allrouters"]
        if pod_ip and hostname:
            lines.append(f"{pod_ip}\t{hostname}")
    if host_aliases:
        lines += ["", "# Entries added by HostAliases."]
        lines += [f"{ip}\t" + "\t".join(names) for ip, names in host_aliases]
    return "\n".join(lines) + "\n"


def resolv_content(dns: DNSConfig, host_resolv: Path = Path("/etc/resolv.conf")) -> str:
    """resolv.conf from the pod's DNS config; the host's file when none was given."""
    if not (dns.servers or dns.searches or dns.options):
        try:
            return host_resolv.read_text()
        except OSError:
            return ""
    lines = []
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    lines += [f"nameserver {server}" for server in dns.servers]
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"
