"""Pod volumes on the node: what each volume source becomes on disk, and its mounts.

Layout (as upstream's /var/lib/kubelet/pods): PODS_DIR/<pod uid>/volumes/
kubernetes.io~<plugin>/<volume name>. configMap, secret, downwardAPI and projected
volumes are written by the atomic writer (a timestamped directory, `..data` pointing at
it, and each top-level entry a symlink through `..data`), so a rewrite swaps one symlink
and a container that has the directory mounted sees the new files at once. emptyDir is a
directory (tmpfs mounted on it for medium Memory), hostPath is checked against its type,
a persistentVolumeClaim resolves to its bound volume's hostPath or local path. The
runtime bind-mounts the host paths into the containers.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import json
import math
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from kubi.api.errors import StatusError
from kubi.client.rest import Client
from kubi.kubelet.runtime.interface import Mount

Obj = dict[str, Any]
T = TypeVar("T")

DEFAULT_MODE = 0o644
EMPTY_DIR_MODE = 0o777
DEFAULT_TOKEN_EXPIRATION = 3600
# Upstream's token manager refreshes a projected token once 80% of its life has passed.
TOKEN_REFRESH_FRACTION = 0.8
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"


class VolumeError(Exception):
    """A volume could not be set up; the message is what the FailedMount event says."""


# -- quantities --------------------------------------------------------------------------

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
            "": Fraction(1), "k": Fraction(10**3), "M": Fraction(10**6),
            "G": Fraction(10**9), "T": Fraction(10**12), "P": Fraction(10**15),
            "E": Fraction(10**18)}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")


def parse_quantity(value: Any) -> Fraction:
    """A resource.Quantity as an exact number; ValueError when it is not one."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Fraction(value)
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"quantities must match the regular expression: {value!r}")
    amount, suffix = Fraction(match.group(1)), match.group(2) or ""
    if suffix in _BINARY:
        return amount * _BINARY[suffix]
    if suffix in _DECIMAL:
        return amount * _DECIMAL[suffix]
    return amount * Fraction(10) ** int(suffix[1:])


# -- downward API ----------------------------------------------------------------------

_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def _format_map(values: dict[str, Any]) -> str:
    """k="v" lines sorted by key, as upstream's fieldpath.FormatMap (Go's %q)."""
    return "\n".join(f"{k}={json.dumps(str(v), ensure_ascii=False)}"
                     for k, v in sorted(values.items()))


def field_ref_value(pod: Obj, path: str) -> str:
    """The value of a downward API fieldRef; ValueError for an unsupported path."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    match = _SUBSCRIPT.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"), "status.podIP": status.get("podIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    if path in ("metadata.labels", "metadata.annotations"):
        return _format_map(meta.get(path.split(".")[1]) or {})
    if path in ("status.hostIPs", "status.podIPs"):
        return ",".join(str(i.get("ip")) for i in status.get(path.split(".")[1]) or [])
    raise ValueError(f"unsupported fieldPath: {path}")


def resource_field_value(pod: Obj, container_name: str, ref: Obj,
                         allocatable: dict[str, str]) -> str:
    """limits.cpu / requests.memory … of a container, divided by `divisor` and rounded
    up; a missing limit falls back to the node's allocatable (upstream's behaviour)."""
    resource = str(ref.get("resource") or "")
    spec = pod.get("spec") or {}
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    container = next((c for c in containers if c.get("name") == container_name), None)
    if container is None:
        raise ValueError(f"container {container_name!r} not found")
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory",
                                                          "ephemeral-storage"):
        raise ValueError(f"unsupported container resource: {resource}")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    if raw is None:
        raw = allocatable.get(name, "0") if kind == "limits" else "0"
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor == 0:
        divisor = Fraction(1)
    return str(math.ceil(parse_quantity(raw) / divisor))


# -- blocking work ------------------------------------------------------------------------

# Threads for the agent's blocking file and image work. The loop's default executor has
# a handful of threads, and runtimes also wait there for the processes they start: a pod
# start must not queue behind those.
_WORKERS = concurrent.futures.ThreadPoolExecutor(max_workers=8,
                                                 thread_name_prefix="kubi-kubelet")


async def in_thread(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`asyncio.to_thread` on the agent's own threads."""
    return await asyncio.get_running_loop().run_in_executor(
        _WORKERS, functools.partial(function, *args, **kwargs))


# -- the atomic writer -------------------------------------------------------------------


@dataclass
class FileProjection:
    data: bytes
    mode: int = DEFAULT_MODE


def write_atomic(target: Path, files: dict[str, FileProjection]) -> bool:
    """Make `target` hold exactly `files` (relative paths), upstream's AtomicWriter way.
    Returns False when the content was already there (nothing written)."""
    for relative in files:
        parts = Path(relative).parts
        if Path(relative).is_absolute() or ".." in parts or not parts or \
                parts[0].startswith(".."):
            raise VolumeError(f"invalid path {relative!r}: must be relative without '..'")
    target.mkdir(parents=True, exist_ok=True)
    data_link = target / "..data"
    current = target / os.readlink(data_link) if data_link.is_symlink() else None
    if current is not None and current.is_dir() and _same_content(current, files):
        return False
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()) + f"{time.time_ns() % 10**9:09d}"
    fresh = target / stamp
    fresh.mkdir(mode=0o755)
    for relative, projection in files.items():
        path = fresh / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(projection.data)
        path.chmod(projection.mode)
    temporary = target / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(stamp)
    temporary.replace(data_link)
    wanted = {Path(r).parts[0] for r in files}
    for name in wanted:
        link = target / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    for entry in target.iterdir():
        if entry.name.startswith(".."):
            if entry.is_dir() and not entry.is_symlink() and entry.name != stamp:
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.name not in wanted and entry.is_symlink():
            entry.unlink()
    return True


def _same_content(directory: Path, files: dict[str, FileProjection]) -> bool:
    found = {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}
    if found != set(files):
        return False
    for relative, projection in files.items():
        path = directory / relative
        if path.read_bytes() != projection.data or stat.S_IMODE(path.stat().st_mode) != \
                projection.mode:
            return False
    return True


# -- mounts ------------------------------------------------------------------------------


def mounted(path: Path) -> bool:
    wanted = str(path.resolve())
    with open("/proc/self/mountinfo") as mountinfo:
        return any(line.split()[4].encode().decode("unicode_escape") == wanted
                   for line in mountinfo)


def _unmount(path: Path) -> None:
    if mounted(path):
        result = subprocess.run(["umount", str(path)], capture_output=True, check=False)
        if result.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


# -- the manager ---------------------------------------------------------------------------


@dataclass
class _Token:
    expires: float
    refresh_at: float


@dataclass
class PodVolumes:
    """Host paths of one pod's volumes, by volume name, and which are read-only."""

    paths: dict[str, Path] = field(default_factory=dict)
    readonly: set[str] = field(default_factory=set)


class VolumeManager:
    def __init__(self, client: Client, pods_dir: Path, *,
                 allocatable: Callable[[], dict[str, str]] = dict) -> None:
        self.client = client
        self.pods_dir = pods_dir
        self.allocatable = allocatable
        self._tokens: dict[tuple[str, str, str], _Token] = {}

    def pod_dir(self, uid: str) -> Path:
        return self.pods_dir / uid

    def volume_dir(self, uid: str, plugin: str, name: str) -> Path:
        return self.pod_dir(uid) / "volumes" / f"kubernetes.io~{plugin}" / name

    async def setup(self, pod: Obj) -> PodVolumes:
        """Create or refresh every volume of `pod`; raises VolumeError for the first one
        that cannot be set up."""
        result = PodVolumes()
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            name = str(volume.get("name"))
            try:
                path, readonly = await self._setup_one(pod, volume)
            except VolumeError as err:
                raise VolumeError(
                    f'MountVolume.SetUp failed for volume "{name}" : {err}') from None
            result.paths[name] = path
            if readonly:
                result.readonly.add(name)
        return result

    async def _setup_one(self, pod: Obj, volume: Obj) -> tuple[Path, bool]:
        meta = pod["metadata"]
        uid, namespace, name = str(meta["uid"]), str(meta.get("namespace") or ""), \
            str(volume["name"])
        if "emptyDir" in volume:
            return self._empty_dir(uid, name, volume["emptyDir"] or {}), False
        if "hostPath" in volume:
            source = volume["hostPath"] or {}
            return check_host_path(str(source.get("path") or ""),
                                   str(source.get("type") or "")), False
        if "configMap" in volume:
            source = volume["configMap"] or {}
            files = await self._config_map_files(namespace, source,
                                                 source.get("defaultMode", DEFAULT_MODE))
            path = self.volume_dir(uid, "configmap", name)
            await in_thread(write_atomic, path, files or {})
            return path, True
        if "secret" in volume:
            source = volume["secret"] or {}
            files = await self._secret_files(namespace, source,
                                             source.get("defaultMode", DEFAULT_MODE))
            path = self.volume_dir(uid, "secret", name)
            await in_thread(write_atomic, path, files or {})
            return path, True
        if "downwardAPI" in volume:
            source = volume["downwardAPI"] or {}
            path = self.volume_dir(uid, "downward-api", name)
            await in_thread(write_atomic, path, self._downward_files(
                pod, source.get("items") or [], source.get("defaultMode", DEFAULT_MODE)))
            return path, True
        if "projected" in volume:
            source = volume["projected"] or {}
            path = self.volume_dir(uid, "projected", name)
            # Off the event loop: a first write is a dozen metadata syscalls (~10 ms).
            await in_thread(write_atomic, path,
                                    await self._projected_files(pod, name, source))
            return path, True
        if "persistentVolumeClaim" in volume:
            source = volume["persistentVolumeClaim"] or {}
            return await self._claim_path(namespace, str(source.get("claimName") or "")), \
                bool(source.get("readOnly"))
        kinds = [k for k in volume if k != "name"]
        raise VolumeError(f"volume type {kinds[0] if kinds else '?'} is not supported "
                          "on this node")

    def _empty_dir(self, uid: str, name: str, source: Obj) -> Path:
        path = self.volume_dir(uid, "empty-dir", name)
        path.mkdir(parents=True, exist_ok=True)
        if source.get("medium") == "Memory":
            if not mounted(path):
                options = "mode=1777"
                if source.get("sizeLimit"):
                    size = int(parse_quantity(source["sizeLimit"]))
                    options += f",size={size}"
                result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs",
                                         str(path)], capture_output=True, text=True,
                                        check=False)
                if result.returncode != 0:
                    raise VolumeError(f"mount tmpfs: {result.stderr.strip()}")
        elif source.get("medium") not in (None, ""):
            raise VolumeError(f"unsupported emptyDir medium {source['medium']!r}")
        else:
            path.chmod(EMPTY_DIR_MODE)
        return path

    async def _get(self, resource: str, namespace: str, name: str) -> Obj | None:
        try:
            return await self.client.get(resource, name, namespace)
        except StatusError as err:
            if err.code == 404:
                return None
            raise VolumeError(str(err)) from None

    @staticmethod
    def _project(kind: str, name: str, data: dict[str, bytes], source: Obj,
                 default_mode: int) -> dict[str, FileProjection]:
        items = source.get("items")
        if not items:
            return {key: FileProjection(value, default_mode) for key, value in data.items()}
        files = {}
        for item in items:
            key = str(item.get("key"))
            if key not in data:
                if source.get("optional"):
                    continue
                raise VolumeError(f"{kind} references non-existent config key: {key}"
                                  if kind == "configmap" else
                                  f"references non-existent secret key: {key}")
            files[str(item.get("path") or key)] = FileProjection(
                data[key], item.get("mode", default_mode))
        return files

    async def _config_map_files(self, namespace: str, source: Obj, default_mode: int
                                ) -> dict[str, FileProjection] | None:
        name = str(source.get("name") or "")
        config_map = await self._get("configmaps", namespace, name)
        if config_map is None:
            if source.get("optional"):
                return {}
            raise VolumeError(f'configmap "{name}" not found')
        data = {k: str(v).encode() for k, v in (config_map.get("data") or {}).items()}
        data.update({k: base64.b64decode(v)
                     for k, v in (config_map.get("binaryData") or {}).items()})
        return self._project("configmap", name, data, source, default_mode)

    async def _secret_files(self, namespace: str, source: Obj, default_mode: int
                            ) -> dict[str, FileProjection] | None:
        name = str(source.get("secretName") or source.get("name") or "")
        secret = await self._get("secrets", namespace, name)
        if secret is None:
            if source.get("optional"):
                return {}
            raise VolumeError(f'secret "{name}" not found')
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        data.update({k: str(v).encode() for k, v in (secret.get("stringData") or {}).items()})
        return self._project("secret", name, data, source, default_mode)

    def _downward_files(self, pod: Obj, items: list[Obj], default_mode: int
                        ) -> dict[str, FileProjection]:
        files = {}
        for item in items:
            try:
                if item.get("fieldRef"):
                    value = field_ref_value(pod, str(item["fieldRef"].get("fieldPath")))
                elif item.get("resourceFieldRef"):
                    ref = item["resourceFieldRef"]
                    value = resource_field_value(pod, str(ref.get("containerName") or ""),
                                                 ref, self.allocatable())
                else:
                    raise ValueError("an item needs fieldRef or resourceFieldRef")
            except ValueError as err:
                raise VolumeError(str(err)) from None
            files[str(item.get("path"))] = FileProjection(value.encode(),
                                                          item.get("mode", default_mode))
        return files

    async def _projected_files(self, pod: Obj, volume_name: str, source: Obj
                               ) -> dict[str, FileProjection]:
        namespace = str(pod["metadata"].get("namespace") or "")
        default_mode = source.get("defaultMode", DEFAULT_MODE)
        files: dict[str, FileProjection] = {}
        for projection in source.get("sources") or []:
            if "configMap" in projection:
                files.update(await self._config_map_files(
                    namespace, projection["configMap"] or {}, default_mode) or {})
            elif "secret" in projection:
                files.update(await self._secret_files(
                    namespace, projection["secret"] or {}, default_mode) or {})
            elif "downwardAPI" in projection:
                files.update(self._downward_files(
                    pod, (projection["downwardAPI"] or {}).get("items") or [], default_mode))
            elif "serviceAccountToken" in projection:
                spec = projection["serviceAccountToken"] or {}
                token = await self._token(pod, volume_name, spec)
                files[str(spec.get("path") or "token")] = FileProjection(token.encode(),
                                                                         default_mode)
            elif "clusterTrustBundle" in projection:
                raise VolumeError("clusterTrustBundle projections are not supported")
        return files

    async def _token(self, pod: Obj, volume_name: str, spec: Obj) -> str:
        """A bound service account token, reused until 80% of its life has passed."""
        meta = pod["metadata"]
        uid = str(meta["uid"])
        key = (uid, volume_name, str(spec.get("path") or "token"))
        path = self.volume_dir(uid, "projected", volume_name) / "..data" / key[2]
        known = self._tokens.get(key)
        if known is not None and time.time() < known.refresh_at and path.exists():
            return path.read_text()
        expiration = int(spec.get("expirationSeconds") or DEFAULT_TOKEN_EXPIRATION)
        request: Obj = {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [spec["audience"]] if spec.get("audience") else [],
                     "expirationSeconds": expiration,
                     "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                        "name": meta.get("name"), "uid": uid}}}
        account = str((pod.get("spec") or {}).get("serviceAccountName") or "default")
        try:
            answer = await self.client.post("serviceaccounts", account, "token", request,
                                            str(meta.get("namespace") or ""))
        except StatusError as err:
            raise VolumeError(f'failed to fetch token: {err}') from None
        token = str((answer.get("status") or {}).get("token") or "")
        granted = int((answer.get("spec") or {}).get("expirationSeconds") or expiration)
        now = time.time()
        self._tokens[key] = _Token(now + granted, now + granted * TOKEN_REFRESH_FRACTION)
        return token

    async def _claim_path(self, namespace: str, claim_name: str) -> Path:
        claim = await self._get("persistentvolumeclaims", namespace, claim_name)
        if claim is None:
            raise VolumeError(f'persistentvolumeclaim "{claim_name}" not found')
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if not volume_name or (claim.get("status") or {}).get("phase") != "Bound":
            raise VolumeError(f'persistentvolumeclaim "{claim_name}" is not bound')
        volume = await self._get("persistentvolumes", "", str(volume_name))
        if volume is None:
            raise VolumeError(f'persistentvolume "{volume_name}" not found')
        spec = volume.get("spec") or {}
        if spec.get("hostPath"):
            return check_host_path(str(spec["hostPath"].get("path") or ""),
                                   str(spec["hostPath"].get("type") or ""))
        if spec.get("local"):
            return check_host_path(str(spec["local"].get("path") or ""), "Directory")
        raise VolumeError(f'persistentvolume "{volume_name}" has no source this node can '
                          "mount (hostPath or local)")

    def forget(self, uid: str) -> None:
        for key in [k for k in self._tokens if k[0] == uid]:
            del self._tokens[key]

    def teardown(self, uid: str) -> None:
        """Unmount what was mounted for the pod and remove its directory."""
        volumes = self.pod_dir(uid) / "volumes"
        if volumes.is_dir():
            for plugin in volumes.iterdir():
                for volume in plugin.iterdir() if plugin.is_dir() else []:
                    _unmount(volume)
        shutil.rmtree(self.pod_dir(uid), ignore_errors=True)
        self.forget(uid)


def check_host_path(path: str, kind: str) -> Path:
    """Upstream's hostPath type checks (and creation for the *OrCreate types)."""
    if not path.startswith("/"):
        raise VolumeError(f"hostPath {path!r} must be an absolute path")
    target = Path(path)

    def fail(what: str) -> VolumeError:
        return VolumeError(f"hostPath type check failed: {path} is not {what}")

    if kind == "":
        return target
    if kind == "DirectoryOrCreate":
        if not target.exists():
            target.mkdir(mode=0o755, parents=True)
        elif not target.is_dir():
            raise fail("a directory")
    elif kind == "Directory":
        if not target.is_dir():
            raise fail("a directory")
    elif kind == "FileOrCreate":
        if not target.exists():
            try:
                target.touch(mode=0o644)
            except OSError as err:
                raise VolumeError(f"create {path}: {err.strerror}") from None
        elif not target.is_file():
            raise fail("a file")
    elif kind == "File":
        if not target.is_file():
            raise fail("a file")
    elif kind in ("Socket", "CharDevice", "BlockDevice"):
        checks = {"Socket": (stat.S_ISSOCK, "a socket file"),
                  "CharDevice": (stat.S_ISCHR, "a character device"),
                  "BlockDevice": (stat.S_ISBLK, "a block device")}
        test, what = checks[kind]
        try:
            mode = target.stat().st_mode
        except OSError:
            raise fail(what) from None
        if not test(mode):
            raise fail(what)
    else:
        raise VolumeError(f"invalid hostPath type {kind!r}")
    return target


def container_mounts(container: Obj, volumes: PodVolumes) -> list[Mount]:
    """The runtime mounts of one container's volumeMounts (subPath resolved)."""
    mounts = []
    for volume_mount in container.get("volumeMounts") or []:
        name = str(volume_mount.get("name"))
        host = volumes.paths.get(name)
        if host is None:
            raise VolumeError(f'volume "{name}" of container {container.get("name")} '
                              "is not defined")
        sub_path = str(volume_mount.get("subPath") or "")
        if sub_path:
            if Path(sub_path).is_absolute() or ".." in Path(sub_path).parts:
                raise VolumeError(f"invalid subPath {sub_path!r}")
            candidate = host / sub_path
            if not candidate.exists() and not candidate.is_symlink():
                candidate.mkdir(parents=True, mode=0o755)
            resolved = candidate.resolve()
            if not str(resolved).startswith(str(host.resolve())):
                raise VolumeError(f"subPath {sub_path!r} leaves its volume")
            host = resolved
        mounts.append(Mount(host_path=str(host),
                            container_path=str(volume_mount.get("mountPath")),
                            readonly=bool(volume_mount.get("readOnly"))
                            or name in volumes.readonly))
    return mounts
