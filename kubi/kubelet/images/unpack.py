"""Layer tarballs unpacked safely, and layer stacks merged into a container rootfs.

Snapshots hold one layer's changes each. Where the kernel allows (root: mknod and
trusted.* xattrs) whiteouts are stored the way overlayfs reads them — a 0/0 character
device for a deleted path, `trusted.overlay.opaque=y` on a directory whose lower contents
are hidden — so a snapshot chain can be an overlay mount's lowerdir as is. Otherwise the
OCI markers (`.wh.NAME`, `.wh..wh..opq`) are kept as files and only copying works.

Security: entry paths are resolved inside the root with symlinks interpreted relative to
it (never followed out of it), `..` may not climb above it, and hard links must name a
file inside it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import IO, Literal

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
MAX_SYMLINK_HOPS = 40
_CHUNK = 1024 * 1024

WhiteoutFormat = Literal["overlay", "oci"]


class UnpackError(Exception):
    """A layer could not be unpacked (bad or hostile tar, wrong diff id)."""


def probe_whiteout_format(scratch: Path) -> WhiteoutFormat:
    """"overlay" when this process may create overlay whiteouts and opaque xattrs."""
    scratch.mkdir(parents=True, exist_ok=True)
    probe = Path(tempfile.mkdtemp(prefix=".probe-", dir=scratch))
    try:
        os.mknod(probe / "wh", stat.S_IFCHR | 0o000, os.makedev(0, 0))
        os.setxattr(probe, OPAQUE_XATTR, b"y")
        return "overlay"
    except OSError:
        return "oci"
    finally:
        shutil.rmtree(probe, ignore_errors=True)


class _HashingReader(io.RawIOBase):
    """Reads through to `inner`, hashing what passes (the diff id of the tar stream)."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.hasher = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        self.hasher.update(data)
        n = len(data)
        buffer[:n] = data
        return n


def open_layer(path: Path) -> IO[bytes]:
    """The uncompressed tar stream of a layer blob (gzip or plain, told by magic bytes)."""
    raw = path.open("rb")
    magic = raw.read(4)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if magic == b"\x28\xb5\x2f\xfd":
        raw.close()
        raise UnpackError(f"{path.name}: zstd-compressed layers are not supported")
    return raw


def _clean_parts(name: str) -> list[str]:
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise UnpackError(f"{name!r}: path escapes the root")
            parts.pop()
            continue
        parts.append(part)
    return parts


def _resolve_dir(root: Path, parts: list[str], *, create: bool, what: str) -> Path:
    """The real directory `parts` names under root, symlinks resolved as if root were /."""
    pending = list(parts)
    stack: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if stack:
                stack.pop()
            continue
        candidate = root.joinpath(*stack, part)
        if candidate.is_symlink():
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise UnpackError(f"{what}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                stack = []
            pending = target.split("/") + pending
            continue
        if not candidate.exists():
            if not create:
                raise UnpackError(f"{what}: {'/'.join([*stack, part])} does not exist")
            candidate.mkdir(mode=0o755)
        elif not candidate.is_dir():
            raise UnpackError(f"{what}: {'/'.join([*stack, part])} is not a directory")
        stack.append(part)
    return root.joinpath(*stack)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.exists():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def _apply_metadata(path: Path, member: tarfile.TarInfo) -> None:
    with contextlib.suppress(OSError):
        os.lchown(path, member.uid, member.gid)
    if not member.issym():
        os.chmod(path, member.mode & 0o7777)
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr.") and not key.startswith("SCHILY.xattr.trusted."):
            with contextlib.suppress(OSError):
                raw = value.encode("utf-8", "surrogateescape")
                os.setxattr(path, key[len("SCHILY.xattr.") :], raw, follow_symlinks=False)


def unpack_layer(stream: IO[bytes], root: Path, whiteouts: WhiteoutFormat) -> str:
    """Extract one layer tar stream into the empty dir `root`; returns its diff id."""
    reader = _HashingReader(stream)
    buffered = io.BufferedReader(reader, buffer_size=_CHUNK)
    dir_times: list[tuple[Path, float]] = []
    try:
        with tarfile.open(fileobj=buffered, mode="r|") as tar:
            for member in tar:
                _extract_member(tar, member, root, whiteouts, dir_times)
        # tarfile stops at the end-of-archive blocks; the diff id covers what follows too.
        while buffered.read(_CHUNK):
            pass
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UnpackError(f"failed to extract layer: {exc}") from exc
    for path, mtime in reversed(dir_times):
        with contextlib.suppress(OSError):
            os.utime(path, (mtime, mtime), follow_symlinks=False)
    return "sha256:" + reader.hasher.hexdigest()


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path,
                    whiteouts: WhiteoutFormat, dir_times: list[tuple[Path, float]]) -> None:
    parts = _clean_parts(member.name)
    if not parts:
        if member.isdir():  # "./": the root itself
            _apply_metadata(root, member)
        return
    parent = _resolve_dir(root, parts[:-1], create=True, what=member.name)
    base = parts[-1]
    if base.startswith(WHITEOUT_PREFIX) and whiteouts == "overlay":
        if base == OPAQUE_MARKER:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
            return
        victim = parent / base[len(WHITEOUT_PREFIX):]
        if victim.exists() or victim.is_symlink():
            _remove(victim)
        os.mknod(victim, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        return
    path = parent / base
    if member.isdir():
        if path.exists() and not (path.is_dir() and not path.is_symlink()):
            _remove(path)
        path.mkdir(exist_ok=True)
        _apply_metadata(path, member)
        dir_times.append((path, member.mtime))
        return
    if path.exists() or path.is_symlink():
        _remove(path)
    if member.isreg():
        source = tar.extractfile(member)
        assert source is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)
    elif member.issym():
        os.symlink(member.linkname, path)
    elif member.islnk():
        link_parts = _clean_parts(member.linkname)
        if not link_parts:
            raise UnpackError(f"{member.name}: hard link to the root")
        target_dir = _resolve_dir(root, link_parts[:-1], create=False,
                                  what=f"hard link {member.name} -> {member.linkname}")
        target = target_dir / link_parts[-1]
        if target.is_symlink() or not target.exists() or target.is_dir():
            raise UnpackError(
                f"hard link {member.name} -> {member.linkname}: target is not a file in the layer"
            )
        os.link(target, path, follow_symlinks=False)
        return  # a hard link shares its target's metadata
    elif member.ischr() or member.isblk() or member.isfifo():
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
        try:
            os.mknod(path, kind | (member.mode & 0o7777),
                     os.makedev(member.devmajor, member.devminor))
        except PermissionError:
            return  # unprivileged: devices are skipped, as rootless runtimes do
    else:
        return
    _apply_metadata(path, member)
    with contextlib.suppress(OSError):
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def unpack_layer_file(blob: Path, root: Path, whiteouts: WhiteoutFormat) -> str:
    stream = open_layer(blob)
    try:
        return unpack_layer(stream, root, whiteouts)
    finally:
        stream.close()


# -- merging snapshots into a plain directory (the copy fallback) ---------------


def _is_overlay_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(directory: Path) -> bool:
    if (directory / OPAQUE_MARKER).exists():
        return True
    try:
        return os.getxattr(directory, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


def merge_layer(layer: Path, target: Path) -> None:
    """Apply one snapshot (a layer's changes, either whiteout format) onto `target`."""
    links: dict[tuple[int, int], Path] = {}
    _merge_dir(layer, target, links)


def _merge_dir(src: Path, dst: Path, links: dict[tuple[int, int], Path]) -> None:
    if _is_opaque(src):
        for child in list(dst.iterdir()):
            _remove(child)
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        st = entry.stat(follow_symlinks=False)
        name = entry.name
        if name == OPAQUE_MARKER:
            continue
        if name.startswith(WHITEOUT_PREFIX):
            victim = dst / name[len(WHITEOUT_PREFIX):]
            if victim.exists() or victim.is_symlink():
                _remove(victim)
            continue
        out = dst / name
        if _is_overlay_whiteout(st):
            if out.exists() or out.is_symlink():
                _remove(out)
            continue
        if stat.S_ISDIR(st.st_mode):
            if out.is_symlink() or (out.exists() and not out.is_dir()):
                _remove(out)
            out.mkdir(exist_ok=True)
            _merge_dir(Path(entry.path), out, links)
            _copy_metadata(Path(entry.path), out, st)
            continue
        if out.exists() or out.is_symlink():
            _remove(out)
        key = (st.st_dev, st.st_ino)
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and key in links:
            os.link(links[key], out)
            continue
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(entry.path), out)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(entry.path, out, follow_symlinks=False)
            links[key] = out
        else:
            try:
                os.mknod(out, st.st_mode, st.st_rdev)
            except PermissionError:
                continue
        _copy_metadata(Path(entry.path), out, st)


def _copy_metadata(src: Path, dst: Path, st: os.stat_result) -> None:
    with contextlib.suppress(OSError):
        os.lchown(dst, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
        with contextlib.suppress(OSError):
            for key in os.listxattr(src, follow_symlinks=False):
                if not key.startswith("trusted.overlay."):
                    os.setxattr(dst, key, os.getxattr(src, key, follow_symlinks=False),
                                follow_symlinks=False)
    with contextlib.suppress(OSError):
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
