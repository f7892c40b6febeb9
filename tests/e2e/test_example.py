"""The README's first command: scripts/example.sh runs the book's walkthrough, with real
containers where the machine allows, and leaves nothing running behind."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_example_walks_through_the_book(tmp_path: Path, seed_dir: Path) -> None:
    data = tmp_path / "example"
    env = dict(os.environ, KUBI_DATA_DIR=str(data), KUBI_PORT=str(free_port()),
               SEED_MANIFESTS=str(seed_dir / "manifests"))
    result = subprocess.run(["bash", "scripts/example.sh"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    real = os.geteuid() == 0 and shutil.which("runc") is not None and \
        Path("/usr/bin/docker-registry").exists()
    if real:
        assert "== real containers" in output
        assert "Hello Docker!!" in output and "received request" in output
        assert "hello from simple-echo" in output
        assert output.count('deployment "echo" successfully rolled out') == 3
    else:
        assert "== simulated nodes" in output
        assert 'deployment "echo" successfully rolled out' in output
    assert "deployment.apps/echo" in output
    # Nothing of the example keeps running or stays mounted.
    assert str(data) not in Path("/proc/mounts").read_text()
    leftover = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""
