"""Which OCI runtime binary the driver uses: runc, crun, or a path, and `auto`.

`auto` prefers crun (it starts containers faster) when it is installed and a probe
container runs with it on this host's cgroup setup, else runc. crun 1.8 refuses a
cgroup v1 + v2 hybrid host while any controller sits on the v2 hierarchy ("cgroups in
hybrid mode not supported"), which the probe catches. A runtime named explicitly is
probed too, so a choice that cannot work fails at once with the runtime's own message.

The probe runs `true` from the host's /usr in a throw-away bundle with the namespaces,
cgroup and limits a container gets; results are cached per binary and cgroup layout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kubi.kubelet.runtime import cgroups
from kubi.kubelet.runtime.interface import RuntimeServiceError

CHOICES = ("auto", "runc", "crun")  # or a path to an OCI runtime binary
AUTO_PREFERENCE = ("crun", "runc")
PROBE_TIMEOUT_SECONDS = 15.0
HOST_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64")
HYBRID_HINT = ("crun needs every cgroup controller on a v1 hierarchy here; e.g. mount hugetlb "
               "as one: mkdir -p /sys/fs/cgroup/hugetlb && "
               "mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb")


class RuntimeUnavailableError(RuntimeServiceError):
    """The chosen OCI runtime is missing or cannot run containers on this host."""


@dataclass(frozen=True)
class RuntimeBinary:
    name: str  # what `--version` calls itself: "runc", "crun"
    version: str
    path: str

    @property
    def version_string(self) -> str:
        """As in Node status.nodeInfo.containerRuntimeVersion: `crun://1.8.1`."""
        return f"{self.name}://{self.version}"


_probed: dict[tuple[str, str], str] = {}


def _cgroup_layout() -> str:
    """What decides whether a runtime copes with the host's cgroups: the mounted
    hierarchies and the controllers left on the unified one."""
    mounts = cgroups.hierarchies()
    unified = mounts.get(cgroups.UNIFIED)
    controllers = ""
    if unified is not None:
        try:
            controllers = (unified / "cgroup.controllers").read_text().strip()
        except OSError:
            controllers = "?"
    return f"{sorted((k, str(v)) for k, v in mounts.items())}|{controllers}"


def binary_version(path: str) -> tuple[str, str]:
    """(name, version) from `<binary> --version`, e.g. ("crun", "1.8.1")."""
    try:
        result = subprocess.run([path, "--version"], capture_output=True, text=True,
                                timeout=PROBE_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeUnavailableError(f"OCI runtime {path}: {error}") from None
    match = re.search(r"^(\S+) version\s+(\S+)", result.stdout, re.MULTILINE)
    if result.returncode != 0 or match is None:
        said = (result.stdout + result.stderr).strip().partition("\n")[0][:120]
        raise RuntimeUnavailableError(
            f"{path} does not look like an OCI runtime (`--version` said {said!r})")
    return match.group(1), match.group(2)


def _probe_spec(cgroup_path: str) -> dict[str, object]:
    true = os.path.realpath(shutil.which("true") or "/bin/true")
    mounts: list[dict[str, object]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}]
    for directory in HOST_DIRS:
        if os.path.isdir(directory):
            mounts.append({"destination": directory, "type": "bind",
                           "source": os.path.realpath(directory),
                           "options": ["rbind", "ro", "nosuid", "nodev"]})
    return {
        "ociVersion": "1.0.2",
        "process": {"args": [true], "cwd": "/", "user": {"uid": 0, "gid": 0},
                    "env": ["PATH=/usr/bin:/bin"], "noNewPrivileges": True},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "probe",
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroup_path,
            "resources": {"memory": {"limit": 64 << 20}, "cpu": {"shares": 2},
                          "pids": {"limit": 64}},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]}}


def probe(path: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> str:
    """Run a throw-away container with the runtime; "" when it works, else the problem.
    Leaves nothing behind: state, cgroup and bundle go, also after a failure."""
    work = Path(tempfile.mkdtemp(prefix="kubi-runtime-probe-"))
    container_id = f"kubi-probe-{secrets.token_hex(6)}"
    cgroup_path = f"/{container_id}"
    state = work / "state"
    try:
        (work / "rootfs").mkdir()
        (work / "config.json").write_text(json.dumps(_probe_spec(cgroup_path)))
        try:
            result = subprocess.run(
                [path, "--root", str(state), "run", "--bundle", str(work), container_id],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                check=False)
        except subprocess.TimeoutExpired:
            return f"a probe container did not finish within {timeout:g}s"
        except OSError as error:
            return str(error)
        if result.returncode == 0:
            return ""
        lines = (result.stderr + result.stdout).strip().splitlines()
        message = lines[-1] if lines else f"exit code {result.returncode}"
        with_json = re.search(r'"msg"\s*:\s*"([^"]*)"', message)  # runc logs JSON lines
        return with_json.group(1) if with_json else message
    finally:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run([path, "--root", str(state), "delete", "--force", container_id],
                           capture_output=True, check=False, timeout=timeout)
        cgroups.remove(cgroup_path)
        shutil.rmtree(work, ignore_errors=True)


def problem_of(path: str) -> str:
    """`probe`, cached for this binary and cgroup layout."""
    key = (os.path.realpath(path), _cgroup_layout())
    if key not in _probed:
        _probed[key] = probe(path)
    return _probed[key]


def _explain(name: str, problem: str) -> str:
    hint = f" ({HYBRID_HINT})" if "hybrid" in problem and name == "crun" else ""
    return f"{name} cannot run containers on this host: {problem}{hint}"


def _find(choice: str, search_path: str | None) -> str | None:
    if "/" in choice:
        return choice if os.path.isfile(choice) and os.access(choice, os.X_OK) else None
    return shutil.which(choice, path=search_path)


def resolve_runtime(choice: str = "auto", *, search_path: str | None = None) -> RuntimeBinary:
    """The runtime binary for `choice` (auto, runc, crun, or a path), checked to work;
    RuntimeUnavailableError says why not. `search_path` replaces $PATH (tests)."""
    if not choice:
        raise RuntimeUnavailableError("no OCI runtime given (auto, runc, crun or a path)")
    if choice == "auto":
        problems = []
        for candidate in AUTO_PREFERENCE:
            path = _find(candidate, search_path)
            if path is None:
                problems.append(f"{candidate} is not installed")
                continue
            name, version = binary_version(path)
            problem = problem_of(path)
            if not problem:
                return RuntimeBinary(name, version, path)
            problems.append(_explain(name, problem))
        raise RuntimeUnavailableError("no usable OCI runtime: " + "; ".join(problems))
    path = _find(choice, search_path)
    if path is None:
        raise RuntimeUnavailableError(
            f"OCI runtime {choice!r} not found" + ("" if "/" in choice else
                                                   " (install it, or choose auto or runc)"))
    name, version = binary_version(path)
    problem = problem_of(path)
    if problem:
        raise RuntimeUnavailableError(_explain(name, problem))
    return RuntimeBinary(name, version, path)
