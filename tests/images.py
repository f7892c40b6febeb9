"""Offline equivalents of the book's images, built from this machine's Debian binaries.

Every image is an OCI image (manifest + config + gzip layers) made here, deterministic
(fixed mtimes and owners), so digests are stable within one machine:

- busybox:latest: Debian's busybox-static with its applet links (every image's base layer).
- gihyodocker/echo:latest: real nginx (Debian's, its ldd libraries copied in) answering
  every request on :8080 with `Hello Docker!!` and logging `received request` to stdout
  per request (an access_log format).
- gihyodocker/echo:patched: the same with another config label, so another digest.
- gihyodocker/nginx:latest: real nginx on :80 proxying every request to
  http://$BACKEND_HOST (a busybox sh entrypoint writes the config from the env).
- gihyodocker/fundamental:0.1.0: Debian's bash and curl with their libraries.

`push_images` uploads them to a registry through kubi's own distribution client.
Needs: busybox-static, nginx (nginx-light), bash, curl.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kubi.kubelet.images.distribution import (
    MEDIA_OCI_CONFIG,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_LAYER_GZIP,
    MEDIA_OCI_MANIFEST,
    DistributionClient,
    push_image,
)

MTIME = 1_600_000_000  # fixed, so that layers are byte-identical between builds
CREATED = "2020-09-13T12:26:40Z"
BUSYBOX = "/usr/bin/busybox"
NGINX = "/usr/sbin/nginx"
BASH = "/usr/bin/bash"
CURL = "/usr/bin/curl"
REQUIRED_TOOLS = (BUSYBOX, NGINX, BASH, CURL)

ECHO_NGINX_CONF = """\
user root root;
worker_processes 1;
daemon off;
pid /tmp/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
    client_body_temp_path /tmp/nginx-body;
    proxy_temp_path /tmp/nginx-proxy;
    fastcgi_temp_path /tmp/nginx-fastcgi;
    uwsgi_temp_path /tmp/nginx-uwsgi;
    scgi_temp_path /tmp/nginx-scgi;
    log_format received 'received request';
    access_log /dev/stdout received;
    server {
        listen 8080;
        default_type text/plain;
        location / { return 200 'Hello Docker!!'; }
    }
}
"""

PROXY_NGINX_TEMPLATE = """\
user root root;
worker_processes 1;
daemon off;
pid /tmp/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
    client_body_temp_path /tmp/nginx-body;
    proxy_temp_path /tmp/nginx-proxy;
    fastcgi_temp_path /tmp/nginx-fastcgi;
    uwsgi_temp_path /tmp/nginx-uwsgi;
    scgi_temp_path /tmp/nginx-scgi;
    access_log /dev/stdout;
    server {
        listen 80;
        location / {
            proxy_pass http://${BACKEND_HOST};
            proxy_set_header Host $host;
        }
    }
}
"""

PROXY_ENTRYPOINT = """\
#!/bin/sh
# Write nginx's config from the environment (as the original image's entrypoint does).
set -e
: "${BACKEND_HOST:?BACKEND_HOST must be set}"
sed "s|\\${BACKEND_HOST}|${BACKEND_HOST}|g" /etc/nginx/nginx.conf.tmpl > /tmp/nginx.conf
exec "$@"
"""

BASE_FILES = {
    "etc/passwd": (
        "root:x:0:0:root:/root:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    ),
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
    "etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
}


class MissingToolError(RuntimeError):
    """A host binary the images are built from is not installed."""


def missing_tools() -> list[str]:
    return [tool for tool in REQUIRED_TOOLS if not os.path.exists(tool)]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class LayerBuilder:
    """A deterministic tar of files, dirs and links, all owned by root."""

    entries: dict[str, tarfile.TarInfo] = field(default_factory=dict)
    contents: dict[str, bytes] = field(default_factory=dict)

    def _info(self, path: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(path.strip("/"))
        info.type = kind
        info.mode = mode
        info.mtime = MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def _parents(self, path: str) -> None:
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.dir("/".join(parts[:i]))

    def dir(self, path: str, mode: int = 0o755) -> None:
        key = path.strip("/")
        if key and key not in self.entries:
            self._parents(key)
            self.entries[key] = self._info(key, tarfile.DIRTYPE, mode)

    def file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self._parents(path)
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(raw)
        self.entries[path.strip("/")] = info
        self.contents[path.strip("/")] = raw

    def symlink(self, path: str, target: str) -> None:
        self._parents(path)
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.entries[path.strip("/")] = info

    def host_file(self, host_path: str, path: str | None = None) -> None:
        """A host file's content (symlinks followed) at `path` (default: the same path)."""
        source = Path(host_path)
        mode = source.stat().st_mode & 0o7777
        self.file(path or host_path, source.read_bytes(), mode)

    def binary(self, host_path: str) -> None:
        """A dynamically linked binary and every library ldd says it loads."""
        self.host_file(host_path)
        for library in shared_libraries(host_path):
            if library.strip("/") not in self.entries:
                self.host_file(library)

    def tar(self) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for key in sorted(self.entries):
                info = self.entries[key]
                data = self.contents.get(key)
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return buffer.getvalue()


def shared_libraries(binary: str) -> list[str]:
    """Paths of the shared libraries (and loader) `ldd` lists for a binary."""
    proc = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    if "not a dynamic executable" in proc.stdout + proc.stderr:
        return []
    found = []
    for line in proc.stdout.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            found.append(match.group(1))
    return found


def gzip_layer(tar_bytes: bytes) -> bytes:
    return gzip.compress(tar_bytes, compresslevel=1, mtime=0)


@dataclass
class BuiltImage:
    name: str  # e.g. gihyodocker/echo:latest
    config: bytes
    layers: list[bytes]  # gzip blobs
    diff_ids: list[str]
    manifest: bytes

    @property
    def repository(self) -> str:
        return self.name.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.rsplit(":", 1)[1]

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256(self.config)

    def blobs(self) -> list[bytes]:
        return [self.config, *self.layers]


def make_image(name: str, layer_tars: Iterable[bytes], config: dict[str, object],
               labels: dict[str, str] | None = None) -> BuiltImage:
    """An OCI image: gzip layers, a config with diff ids, a manifest."""
    tars = list(layer_tars)
    diff_ids = [sha256(t) for t in tars]
    layers = [gzip_layer(t) for t in tars]
    image_config = {
        "created": CREATED,
        "architecture": _arch(),
        "os": "linux",
        "config": {**config, "Labels": labels or {}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": CREATED, "created_by": "tests/images.py"} for _ in tars],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": sha256(config_bytes),
                   "size": len(config_bytes)},
        "layers": [{"mediaType": MEDIA_OCI_LAYER_GZIP, "digest": sha256(b), "size": len(b)}
                   for b in layers],
    }
    return BuiltImage(name, config_bytes, layers, diff_ids,
                      json.dumps(manifest, sort_keys=True).encode())


def _arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def busybox_layer() -> bytes:
    layer = LayerBuilder()
    layer.host_file(BUSYBOX, "/bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            layer.symlink(f"/bin/{applet}", "busybox")
    for path, text in BASE_FILES.items():
        layer.file(path, text)
    layer.dir("/tmp", 0o1777)
    layer.dir("/root", 0o700)
    layer.dir("/var/log/nginx")
    layer.dir("/proc")
    layer.dir("/sys")
    layer.dir("/dev")
    return layer.tar()


def nginx_layer(conf_path: str, conf: str,
                extra: dict[str, tuple[str, int]] | None = None) -> bytes:
    layer = LayerBuilder()
    layer.binary(NGINX)
    layer.dir("/var/lib/nginx")
    layer.dir("/usr/share/nginx")
    layer.file(conf_path, conf)
    for path, (text, mode) in (extra or {}).items():
        layer.file(path, text, mode)
    return layer.tar()


def fundamental_layer() -> bytes:
    layer = LayerBuilder()
    layer.binary(BASH)
    layer.binary(CURL)
    layer.symlink("/bin/bash", "/usr/bin/bash")
    layer.file("/root/.bashrc", "PS1='\\h:\\w\\$ '\n")
    return layer.tar()


SHELL_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@functools.cache
def build_images() -> dict[str, BuiltImage]:
    """The book's images, by familiar name (busybox and busybox:latest are the same)."""
    if missing_tools():
        raise MissingToolError(f"missing {', '.join(missing_tools())}: "
                               "apt-get install busybox-static nginx-light bash curl")
    base = busybox_layer()
    echo_layer = nginx_layer("/etc/nginx/nginx.conf", ECHO_NGINX_CONF)
    echo_config: dict[str, object] = {
        "Env": [SHELL_PATH],
        "Cmd": ["nginx", "-c", "/etc/nginx/nginx.conf"],
        "WorkingDir": "/",
        "ExposedPorts": {"8080/tcp": {}},
    }
    proxy_layer = nginx_layer(
        "/etc/nginx/nginx.conf.tmpl", PROXY_NGINX_TEMPLATE,
        {"/usr/local/bin/docker-entrypoint.sh": (PROXY_ENTRYPOINT, 0o755)},
    )
    images = [
        make_image("busybox:latest", [base], {"Env": [SHELL_PATH], "Cmd": ["sh"]}),
        make_image("gihyodocker/echo:latest", [base, echo_layer], echo_config),
        make_image("gihyodocker/echo:patched", [base, echo_layer], echo_config,
                   {"kubi.dev/variant": "patched"}),
        make_image("gihyodocker/nginx:latest", [base, proxy_layer], {
            "Env": [SHELL_PATH, "BACKEND_HOST=localhost:8080"],
            "Entrypoint": ["/usr/local/bin/docker-entrypoint.sh"],
            "Cmd": ["nginx", "-c", "/tmp/nginx.conf"],
            "WorkingDir": "/",
            "ExposedPorts": {"80/tcp": {}},
        }),
        make_image("gihyodocker/fundamental:0.1.0", [base, fundamental_layer()], {
            "Env": [SHELL_PATH], "Cmd": ["bash"], "WorkingDir": "/root",
        }),
    ]
    return {image.name: image for image in images}


def registry_path(name: str) -> str:
    """Where a familiar name lives in a registry: `busybox` -> `library/busybox`."""
    return name if "/" in name else f"library/{name}"


def push_images(registry_url: str, images: Iterable[BuiltImage] | None = None) -> None:
    """Push images (default: all of them) to a registry as docker.io would hold them."""
    with DistributionClient() as client:
        for image in images if images is not None else build_images().values():
            push_image(client, registry_url, registry_path(image.repository), image.tag,
                       image.blobs(), image.manifest, MEDIA_OCI_MANIFEST)


def write_docker_save(image: BuiltImage, path: Path, repo_tags: list[str] | None = None) -> None:
    """A `docker save` archive: manifest.json, the config, one uncompressed tar per layer."""
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = MTIME
            tar.addfile(info, io.BytesIO(data))

        config_name = f"{image.config_digest.split(':')[1]}.json"
        add(config_name, image.config)
        layer_names = []
        for blob, diff_id in zip(image.layers, image.diff_ids, strict=True):
            name = f"{diff_id.split(':')[1]}/layer.tar"
            add(name, gzip.decompress(blob))
            layer_names.append(name)
        manifest = [{"Config": config_name, "RepoTags": repo_tags or [image.name],
                     "Layers": layer_names}]
        add("manifest.json", json.dumps(manifest).encode())


def write_oci_archive(image: BuiltImage, path: Path, ref_name: str | None = None) -> None:
    """An OCI image layout archive: oci-layout, index.json naming the image, blobs/sha256/*."""
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = MTIME
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        for blob in [*image.blobs(), image.manifest]:
            add(f"blobs/sha256/{sha256(blob).split(':')[1]}", blob)
        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_INDEX,
            "manifests": [{
                "mediaType": MEDIA_OCI_MANIFEST,
                "digest": image.manifest_digest,
                "size": len(image.manifest),
                "annotations": {"io.containerd.image.name": ref_name or image.name},
            }],
        }
        add("index.json", json.dumps(index).encode())


def registry_storage_blob(storage: Path, digest: str) -> Path:
    """Where docker-registry's filesystem driver keeps a blob's bytes."""
    hex_digest = digest.split(":", 1)[1]
    return storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"


__all__ = [
    "BuiltImage",
    "LayerBuilder",
    "MissingToolError",
    "build_images",
    "make_image",
    "missing_tools",
    "push_images",
    "registry_storage_blob",
    "write_docker_save",
    "write_oci_archive",
]
