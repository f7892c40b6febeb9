"""cgroup file system helpers: where a cgroup path lives in every mounted hierarchy.

runc's cgroupfs manager puts a container at the same relative path in each v1
hierarchy (and in the unified one of a hybrid host, or the only one of a v2 host); the
pod's parent directories are ours to remove when the pod goes away.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DEFAULT_PARENT = "/kubi"
UNIFIED = ""  # key of the cgroup2 hierarchy in `hierarchies()`


def hierarchies(mountinfo: Path = Path("/proc/self/mountinfo")) -> dict[str, Path]:
    """Mounted hierarchies: each v1 controller (and named hierarchy) -> its mount point;
    UNIFIED -> the cgroup2 mount."""
    found: dict[str, Path] = {}
    with contextlib.suppress(OSError):
        for line in mountinfo.read_text().splitlines():
            before, _, after = line.partition(" - ")
            fields, tail = before.split(), after.split()
            if len(fields) < 5 or len(tail) < 3:
                continue
            if tail[0] == "cgroup":
                for option in tail[2].split(","):
                    if option in ("rw", "ro", "relatime", "noatime", "nosuid", "nodev",
                                  "noexec", "clone_children") or ("=" in option and not \
                            option.startswith("name=")):
                        continue
                    found.setdefault(option, Path(fields[4]))
            elif tail[0] == "cgroup2":
                found.setdefault(UNIFIED, Path(fields[4]))
    return found


def directories(cgroup_path: str) -> list[Path]:
    """Every existing directory of `cgroup_path` (absolute within the hierarchies)."""
    relative = cgroup_path.strip("/")
    seen: set[Path] = set()
    result = []
    for mount in hierarchies().values():
        directory = mount / relative
        if directory not in seen and directory.is_dir():
            seen.add(directory)
            result.append(directory)
    return result


def controller_dir(cgroup_path: str, controller: str) -> Path | None:
    """The directory of `cgroup_path` in the hierarchy with `controller` (v1), else in
    the unified hierarchy when it has that controller enabled (v2)."""
    mounts = hierarchies()
    mount = mounts.get(controller)
    if mount is None:
        unified = mounts.get(UNIFIED)
        if unified is None:
            return None
        with contextlib.suppress(OSError):
            if controller in (unified / "cgroup.controllers").read_text().split():
                mount = unified
    if mount is None:
        return None
    directory = mount / cgroup_path.strip("/")
    return directory if directory.is_dir() else None


def memory_limit(cgroup_path: str) -> int | None:
    """The memory limit in bytes written for the cgroup; None when unlimited or absent."""
    directory = controller_dir(cgroup_path, "memory")
    if directory is None:
        return None
    for name in ("memory.limit_in_bytes", "memory.max"):
        with contextlib.suppress(OSError):
            value = (directory / name).read_text().strip()
            if value == "max":
                return None
            limit = int(value)
            return None if limit >= 1 << 62 else limit
    return None


def processes(cgroup_path: str) -> set[int]:
    pids: set[int] = set()
    for directory in directories(cgroup_path):
        for procs in directory.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids |= {int(p) for p in procs.read_text().split()}
    return pids


def remove(cgroup_path: str) -> list[Path]:
    """Remove the cgroup (children first) from every hierarchy; returns what could not be
    removed (still has processes)."""
    left: list[Path] = []
    for directory in directories(cgroup_path):
        for root, subdirs, _ in os.walk(directory, topdown=False):
            for sub in subdirs:
                with contextlib.suppress(FileNotFoundError):
                    try:
                        os.rmdir(os.path.join(root, sub))
                    except OSError:
                        left.append(Path(root, sub))
        try:
            directory.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            left.append(directory)
    return left


def exists(cgroup_path: str) -> bool:
    return bool(directories(cgroup_path))
