"""The node's image store: content by digest, unpacked snapshots, rootfs preparation, GC.

Layout under DATA_DIR/images/:
    blobs/sha256/<hex>          manifests, configs and layer blobs, verified by digest
    index.json                  name -> {target, manifest, config, layers, size, created, lastUsed}
    snapshots/<chainID hex>/fs  one layer's changes (see unpack.py for whiteouts)
    leases/<id>.json            rootfs prepared for a container: keeps its snapshots alive

`ensure_image` is the kubelet's image manager (pull policies, upstream's error reasons);
an image's id is its config digest and its repo digest is `<repo>@<top manifest digest>`,
what the kubelet reports as a container's imageID. Every call is blocking: an asyncio
caller runs it with `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kubi.api.durations import go_duration
from kubi.kubelet.images import unpack
from kubi.kubelet.images.credentials import credentials_for
from kubi.kubelet.images.distribution import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MEDIA_DOCKER_CONFIG,
    MEDIA_DOCKER_MANIFEST,
    DistributionClient,
    DistributionError,
    NotFoundError,
    Platform,
    host_platform_default,
    select_platform,
    sha256_digest,
)
from kubi.kubelet.images.reference import (
    InvalidReferenceError,
    Reference,
    parse_reference,
)
from kubi.kubelet.images.registries import AuthConfig, RegistriesConfig

Obj = dict[str, Any]

PULL_ALWAYS = "Always"
PULL_IF_NOT_PRESENT = "IfNotPresent"
PULL_NEVER = "Never"
# Container waiting reasons, as upstream's kubelet names them.
ERR_IMAGE_PULL = "ErrImagePull"
ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"
ERR_INVALID_IMAGE_NAME = "InvalidImageName"
IMAGE_PULL_BACKOFF = "ImagePullBackOff"  # the caller's back-off, after ErrImagePull

_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
_OCI_NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


class ImageError(Exception):
    """Why a container's image is not usable: `reason` is the container's waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ImageNotFoundError(LookupError):
    """No image by that name or id in the store."""


class ArchiveError(ValueError):
    """An archive given to `import_archive` is not a usable image archive."""


@dataclass(frozen=True)
class Image:
    """One image as the CRI lists it: an id and every name that points at it."""

    id: str  # config digest
    repo_tags: list[str]
    repo_digests: list[str]
    size: int
    created: str
    last_used: float
    chain_ids: list[str]


@dataclass(frozen=True)
class EnsureResult:
    image_id: str  # config digest: the CRI image id
    repo_digest: str  # docker.io/gihyodocker/echo@sha256:…: what a pod's status shows as imageID
    image: str  # the normalised reference, docker.io/gihyodocker/echo:latest
    pulled: bool
    message: str  # the kubelet's event text ("Successfully pulled image …" / "… already present …")


@dataclass(frozen=True)
class Rootfs:
    path: Path
    method: str  # "overlay" or "copy"
    image_id: str


@dataclass
class GCResult:
    freed_bytes: int = 0
    removed: list[str] = field(default_factory=list)  # image ids
    usage_percent: int = 0


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The OCI chain ids of a layer stack: each one names a layer and all below it."""
    found: list[str] = []
    for diff_id in diff_ids:
        found.append(diff_id if not found else sha256_digest(f"{found[-1]} {diff_id}".encode()))
    return found


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _repository_of(name: str) -> str:
    """`docker.io/library/nginx:latest` or `…@sha256:…` -> `docker.io/library/nginx`."""
    if "@" in name:
        return name.split("@", 1)[0]
    head, _, tail = name.rpartition(":")
    return head if head and "/" not in tail else name


def _looks_like_id(text: str) -> bool:
    bare = text.removeprefix("sha256:")
    return len(bare) >= 12 and all(c in "0123456789abcdef" for c in bare)


def _mount_points() -> set[str]:
    points = set()
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            raw = line.split()[4]
            points.add(raw.encode().decode("unicode_escape"))
    return points


class ImageStore:
    """Images of one node, kept under `data_dir`/images."""

    def __init__(self, data_dir: str | Path, registries: RegistriesConfig | None = None, *,
                 platform: Platform | None = None, timeout: float = 30.0) -> None:
        self.root = Path(data_dir) / "images"
        self.blobs = self.root / "blobs" / "sha256"
        self.snapshots = self.root / "snapshots"
        self.leases = self.root / "leases"
        self.tmp = self.root / "tmp"
        for d in (self.blobs, self.snapshots, self.leases, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self.index_path = self.root / "index.json"
        self.platform = platform or host_platform_default()
        self.client = DistributionClient(registries, platform=self.platform, timeout=timeout)
        self._thread_lock = threading.RLock()
        self._whiteouts: unpack.WhiteoutFormat | None = None

    def close(self) -> None:
        self.client.close()

    # -- the index -------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise index changes between threads and processes (the CLI and the agent)."""
        with self._thread_lock, open(self.root / ".lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _read_index(self) -> dict[str, Obj]:
        try:
            data = json.loads(self.index_path.read_text())
        except FileNotFoundError:
            return {}
        images = data.get("images")
        return images if isinstance(images, dict) else {}

    def _write_index(self, images: dict[str, Obj]) -> None:
        tmp = self.index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": 1, "images": images}, indent=1, sort_keys=True))
        tmp.replace(self.index_path)

    def blob_path(self, digest: str) -> Path:
        return self.blobs / _hex(digest)

    def _read_json_blob(self, digest: str) -> Obj:
        try:
            data = json.loads(self.blob_path(digest).read_bytes())
        except FileNotFoundError as exc:
            raise ImageNotFoundError(f"content {digest} is missing") from exc
        if not isinstance(data, dict):
            raise DistributionError(f"{digest}: not a JSON object")
        return data

    def _write_blob(self, data: bytes, expected: str | None = None) -> str:
        digest = sha256_digest(data)
        if expected is not None and digest != expected:
            raise DistributionError(
                f"unexpected commit digest {digest}, expected {expected}: failed precondition"
            )
        path = self.blob_path(digest)
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".ingest-")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, 0o444)
            os.replace(tmp, path)
        return digest

    # -- lookup ----------------------------------------------------------------

    def _entries_for(self, images: dict[str, Obj], text: str) -> list[str]:
        """Names in the index that `text` (name, repo digest, image id or id prefix) means."""
        if text in images:
            return [text]
        bare = text.removeprefix("sha256:")
        if _looks_like_id(text):
            by_id = [n for n, e in images.items() if _hex(e["config"]).startswith(bare)]
            if by_id and (len({images[n]["config"] for n in by_id}) == 1):
                return by_id
        try:
            ref = parse_reference(text)
        except InvalidReferenceError:
            return []
        if str(ref) in images:
            return [str(ref)]
        if ref.digest is not None:
            return [n for n, e in images.items()
                    if e["target"]["digest"] == ref.digest and _repository_of(n) == ref.name]
        return []

    def get(self, text: str) -> Image:
        """The image a name, repo digest or id means; ImageNotFoundError otherwise."""
        images = self._read_index()
        names = self._entries_for(images, text)
        if not names:
            raise ImageNotFoundError(f"no such image: {text!r}")
        config = images[names[0]]["config"]
        return self._image(config, images)

    def _image(self, config: str, images: dict[str, Obj]) -> Image:
        names = sorted(n for n, e in images.items() if e["config"] == config)
        entries = [images[n] for n in names]
        tags = [n for n in names if "@" not in n]
        digests = sorted({f"{_repository_of(n)}@{images[n]['target']['digest']}" for n in names})
        return Image(
            id=config,
            repo_tags=tags,
            repo_digests=digests,
            size=max(e["size"] for e in entries),
            created=entries[0].get("created", ""),
            last_used=max(e.get("lastUsed", 0.0) for e in entries),
            chain_ids=list(entries[0]["chainIDs"]),
        )

    def list_images(self) -> list[Image]:
        images = self._read_index()
        return [self._image(c, images) for c in sorted({e["config"] for e in images.values()})]

    def image_config(self, text: str) -> Obj:
        """The image's OCI config JSON (`config` holds Env, Cmd, Entrypoint, WorkingDir …)."""
        return self._read_json_blob(self.get(text).id)

    def _touch(self, config: str) -> None:
        with self._locked():
            images = self._read_index()
            now = time.time()
            for entry in images.values():
                if entry["config"] == config:
                    entry["lastUsed"] = now
            self._write_index(images)

    # -- pulling ---------------------------------------------------------------

    def ensure_image(self, image: str, policy: str = "",
                     pull_secrets: Sequence[Obj] = ()) -> EnsureResult:
        """Make `image` present per the container's imagePullPolicy, as the kubelet does.

        Raises ImageError with reason InvalidImageName, ErrImageNeverPull or ErrImagePull
        and the message upstream's kubelet puts in the container's waiting state.
        """
        try:
            ref = parse_reference(image)
        except InvalidReferenceError as exc:
            raise ImageError(
                ERR_INVALID_IMAGE_NAME,
                f"Failed to apply default image tag {image!r}: couldn't parse image reference "
                f"{image!r}: {exc}".replace("'", '"'),
            ) from exc
        if not policy:
            policy = PULL_ALWAYS if ref.tag == "latest" and ref.digest is None \
                else PULL_IF_NOT_PRESENT
        if policy not in (PULL_ALWAYS, PULL_IF_NOT_PRESENT, PULL_NEVER):
            raise ValueError(f"unknown image pull policy {policy!r}")
        present = self._present(ref)
        if present is not None and policy != PULL_ALWAYS:
            self._touch(present.image_id)
            return EnsureResult(present.image_id, present.repo_digest, str(ref), False,
                                f'Container image "{image}" already present on machine')
        if present is None and policy == PULL_NEVER:
            raise ImageError(
                ERR_IMAGE_NEVER_PULL,
                f'Container image "{image}" is not present with pull policy of Never',
            )
        started = time.monotonic()
        try:
            result = self.pull(ref, pull_secrets)
        except (DistributionError, unpack.UnpackError) as exc:
            code = getattr(exc, "grpc_code", "Unknown")
            raise ImageError(
                ERR_IMAGE_PULL,
                f'rpc error: code = {code} desc = failed to pull and unpack image "{ref}": {exc}',
            ) from exc
        # Both durations truncated to milliseconds, as the kubelet prints them.
        elapsed = go_duration(int((time.monotonic() - started) * 1000) * 1_000_000)
        size = self._image(result.image_id, self._read_index()).size
        return EnsureResult(result.image_id, result.repo_digest, str(ref), True,
                            f'Successfully pulled image "{image}" in {elapsed} ({elapsed} '
                            f'including waiting). Image size: {size} bytes.')

    def _present(self, ref: Reference) -> EnsureResult | None:
        images = self._read_index()
        names = self._entries_for(images, str(ref))
        if not names:
            return None
        entry = images[names[0]]
        if not all((self.snapshots / _hex(c) / "fs").is_dir() for c in entry["chainIDs"]):
            return None  # half-removed: pull again
        return EnsureResult(entry["config"], f"{ref.name}@{entry['target']['digest']}",
                            str(ref), False, "")

    def pull(self, ref: Reference | str, pull_secrets: Sequence[Obj] = ()) -> EnsureResult:
        """Pull and unpack `ref`, trying each matching pull-secret credential in turn."""
        if isinstance(ref, str):
            ref = parse_reference(ref)
        attempts: list[AuthConfig | None] = list(credentials_for(ref.domain, pull_secrets))
        if not attempts:
            attempts = [None]
        last: DistributionError | None = None
        for credentials in attempts:
            try:
                return self._pull_once(ref, credentials)
            except DistributionError as exc:
                if exc.grpc_code == "NotFound" or credentials is None:
                    raise
                last = exc
        assert last is not None
        raise last

    def _pull_once(self, ref: Reference, credentials: AuthConfig | None) -> EnsureResult:
        try:
            resolved = self.client.resolve(ref, credentials)
        except DistributionError as exc:
            raise type(exc)(f'failed to resolve reference "{ref}": {exc}') from exc
        top_digest = self._write_blob(resolved.body)
        media_type = resolved.media_type
        manifest_digest, body = top_digest, resolved.body
        if media_type in INDEX_TYPES:
            desc = select_platform(json.loads(body), self.platform)
            manifest_digest = desc["digest"]
            if not self.blob_path(manifest_digest).exists():
                body, media_type = self.client.fetch_manifest(resolved, manifest_digest)
                self._write_blob(body, manifest_digest)
        elif media_type not in MANIFEST_TYPES:
            raise DistributionError(f"{ref}: unsupported manifest media type {media_type!r}")
        manifest = self._read_json_blob(manifest_digest)
        for desc in [manifest.get("config") or {}, *(manifest.get("layers") or [])]:
            digest = desc.get("digest", "")
            if not self.blob_path(digest).exists():
                self.client.fetch_blob(resolved, digest, desc.get("size"), self.blob_path(digest))
        config_digest = self._commit(str(ref), top_digest, resolved.media_type, manifest_digest)
        return EnsureResult(config_digest, f"{ref.name}@{top_digest}", str(ref), True, "")

    # -- committing content to the index ---------------------------------------

    def _whiteout_format(self) -> unpack.WhiteoutFormat:
        if self._whiteouts is None:
            self._whiteouts = unpack.probe_whiteout_format(self.tmp)
        return self._whiteouts

    def _unpack(self, manifest: Obj, config: Obj) -> list[str]:
        layers = manifest.get("layers") or []
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(layers):
            raise DistributionError(
                f"image config has {len(diff_ids)} diff ids for {len(layers)} layers"
            )
        chains = chain_ids(diff_ids)
        for layer, diff_id, chain in zip(layers, diff_ids, chains, strict=True):
            final = self.snapshots / _hex(chain)
            if (final / "fs").is_dir():
                continue
            work = Path(tempfile.mkdtemp(prefix="unpack-", dir=self.tmp))
            try:
                (work / "fs").mkdir()
                actual = unpack.unpack_layer_file(self.blob_path(layer["digest"]), work / "fs",
                                                  self._whiteout_format())
                if actual != diff_id:
                    raise unpack.UnpackError(
                        f"failed to unpack layer {layer['digest']}: uncompressed content has "
                        f"digest {actual}, config says {diff_id}"
                    )
                (work / "meta.json").write_text(json.dumps(
                    {"diffID": diff_id, "layer": layer["digest"], "format": self._whiteout_format()}
                ))
                try:
                    work.rename(final)
                except OSError:
                    if not (final / "fs").is_dir():
                        raise  # not a concurrent unpack of the same layer
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return chains

    def _commit(self, name: str, top_digest: str, top_media_type: str,
                manifest_digest: str) -> str:
        manifest = self._read_json_blob(manifest_digest)
        config_desc = manifest.get("config") or {}
        config_digest = config_desc.get("digest", "")
        config = self._read_json_blob(config_digest)
        chains = self._unpack(manifest, config)
        layers = manifest.get("layers") or []
        size = int(config_desc.get("size", 0)) + sum(int(layer.get("size", 0)) for layer in layers)
        blobs = sorted({top_digest, manifest_digest, config_digest,
                        *(layer["digest"] for layer in layers)})
        now = time.time()
        with self._locked():
            images = self._read_index()
            previous = images.get(name, {})
            images[name] = {
                "target": {"digest": top_digest, "mediaType": top_media_type},
                "manifest": manifest_digest,
                "config": config_digest,
                "chainIDs": chains,
                "blobs": blobs,
                "size": size,
                "created": str(config.get("created", "")),
                "pulledAt": now,
                "lastUsed": now,
                "firstSeen": previous.get("firstSeen", now),
            }
            self._write_index(images)
            if previous and previous["config"] != config_digest:
                self._collect_content(images)  # the tag moved: drop what nothing uses now
        return config_digest

    # -- removal and GC --------------------------------------------------------

    def _lease_records(self) -> list[Obj]:
        records = []
        for path in self.leases.glob("*.json"):
            with contextlib.suppress(FileNotFoundError, ValueError):
                records.append(json.loads(path.read_text()))
        return records

    def _collect_content(self, images: dict[str, Obj]) -> None:
        """Delete blobs and snapshots that no image and no prepared rootfs refer to."""
        keep_blobs = {_hex(b) for e in images.values() for b in e.get("blobs", [])}
        keep_chains = {_hex(c) for e in images.values() for c in e["chainIDs"]}
        keep_chains |= {_hex(c) for r in self._lease_records() for c in r.get("chainIDs", [])}
        for path in self.blobs.iterdir():
            if not path.name.startswith(".") and path.name not in keep_blobs:
                path.unlink(missing_ok=True)
        for path in self.snapshots.iterdir():
            if path.name not in keep_chains:
                shutil.rmtree(path, ignore_errors=True)

    def remove(self, text: str) -> list[str]:
        """Remove a name (or, given an image id, all its names); returns the names removed."""
        with self._locked():
            images = self._read_index()
            names = self._entries_for(images, text)
            if not names:
                raise ImageNotFoundError(f"no such image: {text!r}")
            if text not in images and _looks_like_id(text):
                config = images[names[0]]["config"]
                names = [n for n, e in images.items() if e["config"] == config]
            for name in names:
                del images[name]
            self._write_index(images)
            self._collect_content(images)
        return names

    def disk_usage(self) -> tuple[int, int]:
        """(capacity, available) bytes of the filesystem holding the images."""
        st = os.statvfs(self.root)
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize

    def gc(self, high_percent: int, low_percent: int, in_use: Collection[str] = (), *,
           capacity: int | None = None, available: int | None = None) -> GCResult:
        """Kubelet image GC: above `high_percent` disk use, delete images not in use, least
        recently used first, until use would be at `low_percent`.

        `in_use` holds ids or names of images that containers use; images with a prepared
        rootfs are skipped too. Capacity/available default to the filesystem's.
        """
        if not 0 <= low_percent <= high_percent <= 100:
            raise ValueError("need 0 <= low_percent <= high_percent <= 100")
        real_capacity, real_available = self.disk_usage()
        capacity = real_capacity if capacity is None else capacity
        available = real_available if available is None else available
        result = GCResult()
        if capacity <= 0:
            return result
        result.usage_percent = 100 - int(available * 100 / capacity)
        if result.usage_percent < high_percent:
            return result
        to_free = (capacity - available) - capacity * low_percent // 100
        images = self._read_index()
        busy = {r.get("image") for r in self._lease_records()}
        for text in in_use:
            busy |= {images[n]["config"] for n in self._entries_for(images, text)}
        candidates = [self._image(c, images) for c in {e["config"] for e in images.values()}
                      if c not in busy]
        candidates.sort(key=lambda image: image.last_used)
        for image in candidates:
            if result.freed_bytes >= to_free:
                break
            with contextlib.suppress(ImageNotFoundError):
                self.remove(image.id)
                result.freed_bytes += image.size
                result.removed.append(image.id)
        return result

    # -- container root filesystems --------------------------------------------

    def _lease_path(self, container_dir: Path) -> Path:
        key = hashlib.sha256(str(container_dir.resolve()).encode()).hexdigest()[:32]
        return self.leases / f"{key}.json"

    def prepare_rootfs(self, image: str, container_dir: str | Path, *,
                       method: str = "auto") -> Rootfs:
        """A writable root filesystem for a container at `container_dir`/rootfs.

        method "overlay" mounts overlayfs (lowerdir = the image's snapshots, upper and work
        dirs beside rootfs); "copy" merges the layers into a plain directory; "auto" tries
        overlay and falls back to copying. Undo with `release_rootfs`.
        """
        if method not in ("auto", "overlay", "copy"):
            raise ValueError(f"unknown rootfs method {method!r}")
        info = self.get(image)
        container_dir = Path(container_dir)
        rootfs = container_dir / "rootfs"
        if rootfs.exists() and any(rootfs.iterdir()):
            raise FileExistsError(f"{rootfs} exists and is not empty")
        container_dir.mkdir(parents=True, exist_ok=True)
        lease = self._lease_path(container_dir)
        record = {"image": info.id, "chainIDs": info.chain_ids, "rootfs": str(rootfs.resolve())}
        lease.write_text(json.dumps({**record, "method": "pending"}))
        layers = [self.snapshots / _hex(c) / "fs" for c in info.chain_ids]
        try:
            for layer in layers:
                if not layer.is_dir():
                    raise ImageNotFoundError(f"snapshot {layer.parent.name} is missing")
            used = ""
            errors = []
            if method in ("auto", "overlay"):
                try:
                    self._mount_overlay(layers, container_dir)
                    used = "overlay"
                except OSError as exc:
                    if method == "overlay":
                        raise
                    errors.append(str(exc))
            if not used:
                self._cleanup_dirs(container_dir)
                rootfs.mkdir(exist_ok=True)
                for layer in layers:
                    unpack.merge_layer(layer, rootfs)
                used = "copy"
        except BaseException:
            self._cleanup_dirs(container_dir)
            lease.unlink(missing_ok=True)
            raise
        lease.write_text(json.dumps({**record, "method": used}))
        self._touch(info.id)
        return Rootfs(rootfs, used, info.id)

    def _mount_overlay(self, layers: list[Path], container_dir: Path) -> None:
        if not layers:
            raise OSError("an image without layers cannot be an overlay lowerdir")
        formats = {json.loads((p.parent / "meta.json").read_text()).get("format") for p in layers}
        if formats != {"overlay"}:
            raise OSError("snapshots keep OCI whiteout files; overlayfs cannot read them")
        lower = [str(p.resolve()) for p in reversed(layers)]  # topmost first
        if any(c in p for p in lower for c in ":,"):
            raise OSError("snapshot paths contain ':' or ','")
        upper, work, rootfs = (container_dir / d for d in ("upper", "work", "rootfs"))
        for d in (upper, work, rootfs):
            d.mkdir(parents=True, exist_ok=True)
        options = f"lowerdir={':'.join(lower)},upperdir={upper.resolve()},workdir={work.resolve()}"
        if len(options) > 4000:
            raise OSError("overlay mount options exceed a page")
        proc = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(rootfs.resolve())],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise OSError(f"mount -t overlay failed: {proc.stderr.strip() or proc.returncode}")

    def _cleanup_dirs(self, container_dir: Path) -> None:
        rootfs = container_dir / "rootfs"
        if str(rootfs.resolve()) in _mount_points():
            proc = subprocess.run(["umount", str(rootfs.resolve())], capture_output=True,
                                  text=True, check=False)
            if proc.returncode != 0:
                subprocess.run(["umount", "-l", str(rootfs.resolve())], check=False,
                               capture_output=True)
        for d in ("rootfs", "upper", "work"):
            shutil.rmtree(container_dir / d, ignore_errors=True)

    def release_rootfs(self, container_dir: str | Path) -> None:
        """Unmount and delete a container's rootfs (and upper/work dirs); drop its lease."""
        container_dir = Path(container_dir)
        self._cleanup_dirs(container_dir)
        self._lease_path(container_dir).unlink(missing_ok=True)
        with self._locked():
            self._collect_content(self._read_index())

    # -- offline import ---------------------------------------------------------

    def import_archive(self, path: str | Path) -> list[str]:
        """Import a `docker save` tarball or an OCI image layout archive; returns the names."""
        try:
            tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by the with below
        except (OSError, tarfile.TarError) as exc:
            raise ArchiveError(f"{path}: not a tar archive: {exc}") from exc
        with tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isreg()}

            def read(name: str) -> bytes:
                member = members.get(name.removeprefix("./"))
                if member is None:
                    raise ArchiveError(f"{path}: archive lacks {name}")
                handle = tar.extractfile(member)
                assert handle is not None
                return handle.read()

            def open_member(name: str) -> IO[bytes]:
                member = members.get(name.removeprefix("./"))
                if member is None:
                    raise ArchiveError(f"{path}: archive lacks {name}")
                handle = tar.extractfile(member)
                assert handle is not None
                return handle

            if "index.json" in members:
                named = self._import_oci(json.loads(read("index.json")), read, open_member)
                if named:
                    return named
            if "manifest.json" in members:
                return self._import_docker(json.loads(read("manifest.json")), read, open_member)
            if "index.json" in members:
                raise ArchiveError(f"{path}: the OCI index names no image "
                                   f"(annotation {_OCI_NAME_ANNOTATIONS[0]})")
            raise ArchiveError(f"{path}: neither manifest.json (docker save) nor index.json (OCI)")

    def _ingest_member(self, handle: IO[bytes], expected: str | None = None) -> str:
        hasher = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".ingest-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := handle.read(1024 * 1024):
                    hasher.update(chunk)
                    out.write(chunk)
            digest = "sha256:" + hasher.hexdigest()
            if expected is not None and digest != expected:
                raise ArchiveError(f"blob {expected} has digest {digest}")
            os.chmod(tmp, 0o444)
            os.replace(tmp, self.blob_path(digest))
            return digest
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _import_oci(self, index: Obj, read: Any, open_member: Any) -> list[str]:
        names = []
        for desc in index.get("manifests") or []:
            annotations = desc.get("annotations") or {}
            name = next((annotations[k] for k in _OCI_NAME_ANNOTATIONS if k in annotations), None)
            if not name:
                continue
            try:
                ref = parse_reference(name)
            except InvalidReferenceError:
                continue  # a bare tag ("latest") names no repository
            top = desc["digest"]
            self._ingest_member(open_member(f"blobs/sha256/{_hex(top)}"), top)
            manifest_digest = top
            if desc.get("mediaType") in INDEX_TYPES:
                chosen = select_platform(self._read_json_blob(top), self.platform)
                manifest_digest = chosen["digest"]
                self._ingest_member(open_member(f"blobs/sha256/{_hex(manifest_digest)}"),
                                    manifest_digest)
            manifest = self._read_json_blob(manifest_digest)
            for blob in [manifest.get("config") or {}, *(manifest.get("layers") or [])]:
                if not self.blob_path(blob["digest"]).exists():
                    self._ingest_member(open_member(f"blobs/sha256/{_hex(blob['digest'])}"),
                                        blob["digest"])
            self._commit(str(ref), top, desc.get("mediaType", MANIFEST_TYPES[0]), manifest_digest)
            names.append(str(ref))
        return names

    def _import_docker(self, entries: Any, read: Any, open_member: Any) -> list[str]:
        if not isinstance(entries, list):
            raise ArchiveError("manifest.json is not a list")
        names = []
        for entry in entries:
            config_bytes = read(entry["Config"])
            config_digest = self._write_blob(config_bytes)
            layers = []
            for layer_path in entry.get("Layers") or []:
                handle = open_member(layer_path)
                magic = handle.read(2)
                handle.seek(0)
                digest = self._ingest_member(handle)
                media = _DOCKER_LAYER_GZIP if magic == b"\x1f\x8b" else _DOCKER_LAYER
                layers.append({"mediaType": media, "digest": digest,
                               "size": self.blob_path(digest).stat().st_size})
            manifest = {
                "schemaVersion": 2,
                "mediaType": MEDIA_DOCKER_MANIFEST,
                "config": {"mediaType": MEDIA_DOCKER_CONFIG, "digest": config_digest,
                           "size": len(config_bytes)},
                "layers": layers,
            }
            manifest_digest = self._write_blob(json.dumps(manifest, indent=3).encode())
            tags = entry.get("RepoTags") or []
            if not tags:
                raise ArchiveError(f"image {config_digest} in manifest.json has no RepoTags")
            for tag in tags:
                try:
                    ref = parse_reference(tag)
                except InvalidReferenceError as exc:
                    raise ArchiveError(f"RepoTags entry {tag!r}: {exc}") from exc
                try:
                    self._commit(str(ref), manifest_digest, MEDIA_DOCKER_MANIFEST, manifest_digest)
                except unpack.UnpackError as exc:
                    raise ArchiveError(f"{tag}: {exc}") from exc
                names.append(str(ref))
        return names


__all__ = [
    "ERR_IMAGE_NEVER_PULL",
    "ERR_IMAGE_PULL",
    "ERR_INVALID_IMAGE_NAME",
    "IMAGE_PULL_BACKOFF",
    "PULL_ALWAYS",
    "PULL_IF_NOT_PRESENT",
    "PULL_NEVER",
    "ArchiveError",
    "EnsureResult",
    "GCResult",
    "Image",
    "ImageError",
    "ImageNotFoundError",
    "ImageStore",
    "NotFoundError",
    "Rootfs",
    "chain_ids",
]
