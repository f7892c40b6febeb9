"""A real `kubi server` process for tests, driven by the real kubectl."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import yaml

T = TypeVar("T")

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Cluster:
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    home: Path

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig.yaml"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        config = yaml.safe_load(self.kubeconfig.read_text())
        token: str = config["users"][0]["user"]["token"]
        return token

    @property
    def ca(self) -> str:
        return str(self.data_dir / "pki" / "ca.crt")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["HOME"] = str(self.home)
        return env

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["kubectl", *args], input=input, capture_output=True,
                                text=True, env=self.env(), timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=self.ca),
                            headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait()
        return self.process.returncode


def start_cluster(data_dir: Path, *extra: str, port: int | None = None,
                  agent_netns: str | None = None) -> Cluster:
    """A `kubi server`; its node agent (real containers) runs only with `agent_netns`, a
    network namespace the test made, so pod networking never touches the host's."""
    port = port or free_port()
    agent = ["--agent-netns", agent_netns] if agent_netns else ["--disable-agent"]
    home = data_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "server.log", "ab")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [sys.executable, "-m", "kubi.cli.main", "server", "--data-dir", str(data_dir),
         "--port", str(port), *agent, *extra],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = Cluster(data_dir, port, process, home)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kubi server exited: {(data_dir / 'server.log').read_text()}")
        if cluster.kubeconfig.exists():
            try:
                context = ssl.create_default_context(cafile=cluster.ca)
                if httpx.get(f"{cluster.url}/readyz", verify=context, timeout=2).text == "ok":
                    return cluster
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    cluster.stop(signal.SIGKILL)
    raise RuntimeError("kubi server did not become ready")


def wait_for(check: Callable[[], T], timeout: float = 180, cluster: Cluster | None = None
             ) -> T:
    """Poll `check` until it returns something truthy; on a timeout the error shows the
    last value and, given the cluster, its pods as `kubectl describe` tells them."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    state = cluster.kubectl("describe", "pods", check=False).stdout[-4000:] if cluster else ""
    raise AssertionError(f"condition not met; last value {last!r}\n{state}")
