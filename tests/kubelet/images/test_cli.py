"""`kubi images import|ls|rm` on a node's data dir, with an archive built offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.images import build_images, missing_tools, write_docker_save


def kubi(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubi.cli.main", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif(bool(missing_tools()), reason="needs the Debian binaries images are built from")
def test_import_list_remove(tmp_path: Path) -> None:
    archive = tmp_path / "echo.tar"
    write_docker_save(build_images()["gihyodocker/echo:latest"], archive,
                      ["gihyodocker/echo:latest"])
    data = str(tmp_path / "node")
    imported = kubi("images", "--data-dir", data, "import", str(archive))
    assert imported.returncode == 0, imported.stderr
    assert "docker.io/gihyodocker/echo:latest" in imported.stdout
    listed = kubi("images", "--data-dir", data, "ls")
    assert "gihyodocker/echo" in listed.stdout and "latest" in listed.stdout
    removed = kubi("images", "--data-dir", data, "rm", "gihyodocker/echo:latest")
    assert removed.returncode == 0, removed.stderr
    assert "gihyodocker/echo" not in kubi("images", "--data-dir", data, "ls").stdout
    # Given a server's data dir, the images go where its node agent reads them.
    server = tmp_path / "server"
    (server / "db").mkdir(parents=True)
    assert kubi("images", "--data-dir", str(server), "import", str(archive)).returncode == 0
    assert (server / "agent" / "images").is_dir() and not (server / "images").exists()
    assert "gihyodocker/echo" in kubi("images", "--data-dir", str(server), "ls").stdout


def test_bad_inputs_are_reported(tmp_path: Path) -> None:
    data = str(tmp_path / "node")
    not_an_archive = tmp_path / "junk.tar"
    not_an_archive.write_bytes(b"definitely not a tar")
    bad = kubi("images", "--data-dir", data, "import", str(not_an_archive))
    assert bad.returncode == 1 and "kubi images import:" in bad.stderr
    missing = kubi("images", "--data-dir", data, "rm", "nope:1")
    assert missing.returncode == 1 and "nope" in missing.stderr
