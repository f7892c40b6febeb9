"""`kubi agent --runtime simulated` joins a running server over HTTPS."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.cluster import start_cluster


def test_simulated_agent_joins_and_runs_pods(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "server")
    agent_log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 - closed below
    agent = subprocess.Popen(
        [sys.executable, "-m", "kubi.cli.main", "agent", "--server", cluster.url,
         "--token-file", str(cluster.data_dir / "node-token"), "--ca-file", cluster.ca,
         "--runtime", "simulated", "--node-name", "edge-1"],
        stdout=agent_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while " Ready " not in cluster.kubectl("get", "nodes").stdout:
            assert agent.poll() is None, (tmp_path / "agent.log").read_text()
            assert time.monotonic() < deadline, "edge-1 never became Ready"
            time.sleep(0.2)
        cluster.kubectl("run", "p", "--image=busybox", "--restart=Never", "--", "true")
        while True:
            pod = json.loads(cluster.kubectl("get", "pod", "p", "-o", "json").stdout)
            if pod["status"].get("phase") == "Succeeded":
                break
            assert time.monotonic() < deadline + 60, pod["status"]
            time.sleep(0.2)
        assert pod["spec"]["nodeName"] == "edge-1"
    finally:
        agent.terminate()
        agent.wait(timeout=20)
        agent_log.close()
        cluster.stop()


def test_agent_with_a_bad_token_says_so(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "server", "--disable-controller-manager")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "kubi.cli.main", "agent", "--server", cluster.url,
             "--token", "wrong", "--ca-file", cluster.ca, "--runtime", "simulated"],
            capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "Unauthorized" in result.stderr
        missing = subprocess.run(
            [sys.executable, "-m", "kubi.cli.main", "agent", "--server", cluster.url],
            capture_output=True, text=True, timeout=60)
        assert missing.returncode == 2 and "--token" in missing.stderr
    finally:
        cluster.stop()
