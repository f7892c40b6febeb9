"""A real local registry (Debian's docker-registry) holding the book's images.

Hook into tests/conftest.py with:  `from tests.conftest_registry import registry  # noqa: F401`
(or `pytest_plugins = ["tests.conftest_registry"]`).

`registry` (session scope) starts /usr/bin/docker-registry on 127.0.0.1:<free port> with a
temporary storage dir, pushes every image of tests/images.py once (as docker.io holds
them: `busybox` under library/), and yields a LocalRegistry whose `registries_yaml`
mirrors docker.io to it over plain HTTP (and never falls back to Docker Hub). Skips
when docker-registry or the host binaries the images are built from are missing
(CI installs: docker-registry busybox-static nginx-light bash curl).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.images import BuiltImage, build_images, missing_tools, push_images

REGISTRY_BINARY = "/usr/bin/docker-registry"


@dataclass
class LocalRegistry:
    address: str  # 127.0.0.1:PORT
    storage: Path  # the filesystem driver's root directory
    registries_yaml: Path  # mirrors docker.io (and "*") to this registry
    images: dict[str, BuiltImage]

    @property
    def url(self) -> str:
        return f"http://{self.address}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def run_registry(workdir: Path, extra_config: dict[str, object] | None = None
                 ) -> Iterator[tuple[str, Path]]:
    """docker-registry serving `workdir`/storage; yields (address, storage dir)."""
    storage = workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"127.0.0.1:{port}"
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True},
                    "cache": {"blobdescriptor": ""}},
        "http": {"addr": address, "secret": "kubi-test"},
        **(extra_config or {}),
    }
    config_path = workdir / "config.yml"
    config_path.write_text(yaml.safe_dump(config))
    log = (workdir / "registry.log").open("wb")
    proc = subprocess.Popen([REGISTRY_BINARY, "serve", str(config_path)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError("docker-registry exited: "
                                   + (workdir / "registry.log").read_text()[-2000:])
            try:
                if httpx.get(f"http://{address}/v2/", timeout=1).status_code in (200, 401):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("docker-registry did not come up in 20s")
            time.sleep(0.05)
        yield address, storage
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def write_registries_yaml(path: Path, address: str) -> Path:
    path.write_text(yaml.safe_dump({
        "mirrors": {"docker.io": {"endpoint": [f"http://{address}"]}},
        # Never fall back to Docker Hub: tests stay on loopback.
        "disable-default-endpoint": True,
    }))
    return path


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    if not shutil.which(REGISTRY_BINARY):
        pytest.skip(f"{REGISTRY_BINARY} missing (apt-get install docker-registry)")
    if missing_tools():
        pytest.skip(f"image builder needs {', '.join(missing_tools())}")
    workdir = tmp_path_factory.mktemp("registry")
    images = build_images()
    with run_registry(workdir) as (address, storage):
        push_images(f"http://{address}", images.values())
        yield LocalRegistry(address, storage,
                            write_registries_yaml(workdir / "registries.yaml", address), images)
