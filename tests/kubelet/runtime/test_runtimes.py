"""Choosing the OCI runtime binary: auto prefers a crun that works, falls back to runc,
and a runtime that cannot work is a clear error, not a hang. Broken runtimes are small
executables on a test-made search path standing in for a crun that fails on this host."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from kubi.kubelet.runtime import cgroups
from kubi.kubelet.runtime.oci import OciRuntime
from kubi.kubelet.runtime.runtimes import (
    RuntimeUnavailableError,
    probe,
    problem_of,
    resolve_runtime,
)

from .conftest import MISSING

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runc") is None or bool(MISSING),
    reason="needs root and runc")

HYBRID_ERROR = "cgroups in hybrid mode not supported, drop all controllers from cgroupv2"


def fake_runtime(directory: Path, name: str, run_body: str) -> Path:
    """An executable `name` that answers --version like crun and runs `run_body` for
    anything else."""
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n"
                    f'if [ "$1" = --version ]; then echo "{name} version 9.9.9"; exit 0; fi\n'
                    f"{run_body}\n")
    path.chmod(0o755)
    return path


def search_path(directory: Path) -> str:
    """The test's directory first, then where runc really is."""
    runc = shutil.which("runc")
    assert runc is not None
    return f"{directory}{os.pathsep}{Path(runc).parent}"


@needs_root
def test_auto_falls_back_to_runc_when_crun_fails_here(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_runtime(bin_dir, "crun", f'echo "{HYBRID_ERROR}" >&2; exit 1')
    chosen = resolve_runtime("auto", search_path=search_path(bin_dir))
    assert (chosen.name, chosen.path) == ("runc", shutil.which("runc"))
    assert chosen.version_string.startswith("runc://1.")
    # Named explicitly, the same crun is an error that says what is wrong and what to do.
    with pytest.raises(RuntimeUnavailableError) as error:
        resolve_runtime("crun", search_path=search_path(bin_dir))
    message = str(error.value)
    assert message.startswith("crun cannot run containers on this host: " + HYBRID_ERROR)
    assert "mount -t cgroup -o hugetlb" in message


@needs_root
def test_auto_prefers_crun_exactly_when_it_works() -> None:
    chosen = resolve_runtime("auto")
    crun = shutil.which("crun")
    if crun is not None and not problem_of(crun):
        assert (chosen.name, chosen.path) == ("crun", crun)
    else:
        assert chosen.name == "runc"


@needs_root
def test_a_runtime_that_hangs_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    hanging = fake_runtime(bin_dir, "stuck", "exec sleep 30")
    problem = probe(str(hanging), timeout=0.5)
    assert problem == "a probe container did not finish within 0.5s"
    assert not any(p.name.startswith("kubi-probe-")
                   for mount in cgroups.hierarchies().values() if mount.is_dir()
                   for p in mount.iterdir())


@needs_root
def test_bad_choices_are_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeUnavailableError, match="'crun' not found"):
        resolve_runtime("crun", search_path=str(empty))
    with pytest.raises(RuntimeUnavailableError, match="no usable OCI runtime: crun is not "
                       "installed; runc is not installed"):
        resolve_runtime("auto", search_path=str(empty))
    with pytest.raises(RuntimeUnavailableError, match="not found"):
        resolve_runtime(str(tmp_path / "no-such-runtime"))
    with pytest.raises(RuntimeUnavailableError, match="does not look like an OCI runtime"):
        resolve_runtime(shutil.which("false") or "/bin/false")
    with pytest.raises(RuntimeUnavailableError, match="no OCI runtime given"):
        resolve_runtime("")
    # The driver refuses to come up on such a choice, and creates nothing.
    with pytest.raises(RuntimeUnavailableError):
        OciRuntime(tmp_path / "root", None, runtime=str(tmp_path / "no-such-runtime"))
    assert not (tmp_path / "root").exists()


@needs_root
def test_runtime_by_path_reports_its_own_name(tmp_path: Path) -> None:
    runc = shutil.which("runc")
    assert runc is not None
    runtime = OciRuntime(tmp_path / "root", None, runtime=runc)
    name, version = asyncio.run(runtime.version())
    assert (name, runtime.binary.path) == ("runc", runc)
    assert runtime.state_root == tmp_path / "root" / "runc"
    assert version and version != "unknown"
