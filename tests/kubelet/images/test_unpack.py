import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from kubi.kubelet.images import unpack
from kubi.kubelet.images.unpack import UnpackError, merge_layer, unpack_layer
from tests.images import LayerBuilder


def _tar(entries: list[tuple[str, bytes, str | None]]) -> bytes:
    """(name, type, linkname) entries; regular files get the name as content."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind, link in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            if link is not None:
                info.linkname = link
            data = name.encode() if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


FORMATS = ["oci", pytest.param("overlay", marks=pytest.mark.skipif(
    os.geteuid() != 0, reason="overlay whiteouts need root (mknod, trusted.* xattrs)"))]


@pytest.mark.parametrize("whiteouts", FORMATS)
def test_whiteouts_applied_by_merge(tmp_path: Path, whiteouts: unpack.WhiteoutFormat) -> None:
    lower = LayerBuilder()
    for path in ("a/x", "a/y", "b", "d/1", "d/sub/2"):
        lower.file(path, path)
    lower.symlink("s", "a/y")
    upper = _tar([
        ("a/.wh.x", tarfile.REGTYPE, None),
        (".wh.b", tarfile.REGTYPE, None),
        (".wh.s", tarfile.REGTYPE, None),
        ("d", tarfile.DIRTYPE, None),
        ("d/.wh..wh..opq", tarfile.REGTYPE, None),
        ("d/3", tarfile.REGTYPE, None),
        ("new", tarfile.REGTYPE, None),
    ])
    snapshots = []
    for i, data in enumerate((lower.tar(), upper)):
        root = tmp_path / f"layer{i}"
        root.mkdir()
        diff_id = unpack_layer(io.BytesIO(data), root, whiteouts)
        assert diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
        snapshots.append(root)
    if whiteouts == "overlay":
        st = os.lstat(snapshots[1] / "b")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
        assert os.getxattr(snapshots[1] / "d", unpack.OPAQUE_XATTR) == b"y"
    else:
        assert (snapshots[1] / ".wh.b").exists()
    merged = tmp_path / "rootfs"
    merged.mkdir()
    for snapshot in snapshots:
        merge_layer(snapshot, merged)
    files = sorted(str(p.relative_to(merged)) for p in merged.rglob("*"))
    assert files == ["a", "a/y", "d", "d/3", "new"]
    assert (merged / "a/y").read_text() == "a/y"


def test_metadata_and_links(tmp_path: Path) -> None:
    data = _tar([
        ("bin", tarfile.DIRTYPE, None),
        ("bin/tool", tarfile.REGTYPE, None),
        ("bin/alias", tarfile.LNKTYPE, "bin/tool"),
        ("bin/sh", tarfile.SYMTYPE, "/bin/tool"),
        ("/abs/file", tarfile.REGTYPE, None),
        ("./dot/file", tarfile.REGTYPE, None),
    ])
    unpack_layer(io.BytesIO(data), tmp_path, "oci")
    assert os.stat(tmp_path / "bin/alias").st_ino == os.stat(tmp_path / "bin/tool").st_ino
    assert os.readlink(tmp_path / "bin/sh") == "/bin/tool"  # kept as the container sees it
    assert (tmp_path / "abs/file").read_text() == "/abs/file"
    assert (tmp_path / "dot/file").exists()


@pytest.mark.parametrize(("entries", "message"), [
    ([("../evil", tarfile.REGTYPE, None)], "escapes the root"),
    ([("a/../../evil", tarfile.REGTYPE, None)], "escapes the root"),
    ([("x", tarfile.LNKTYPE, "../../../etc/passwd")], "escapes the root"),
    ([("x", tarfile.LNKTYPE, "missing")], "target is not a file"),
    ([("f", tarfile.REGTYPE, None), ("f/g", tarfile.REGTYPE, None)], "is not a directory"),
])
def test_hostile_tars_rejected(tmp_path: Path, entries: list[tuple[str, bytes, str | None]],
                               message: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(UnpackError, match=message):
        unpack_layer(io.BytesIO(_tar(entries)), root, "oci")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_symlinks_never_lead_out(tmp_path: Path) -> None:
    """A symlink pointing outside, then a path through it: written inside the root."""
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    data = _tar([
        ("abs", tarfile.SYMTYPE, str(outside)),
        ("rel", tarfile.SYMTYPE, "../../../../" + str(outside)),
        ("abs/pwned", tarfile.REGTYPE, None),
        ("rel/pwned2", tarfile.REGTYPE, None),
        ("hl", tarfile.LNKTYPE, "abs/pwned"),
    ])
    unpack_layer(io.BytesIO(data), root, "oci")
    assert list(outside.iterdir()) == []
    inside = root / str(outside).lstrip("/")
    assert sorted(p.name for p in inside.iterdir()) == ["pwned", "pwned2"]
    assert os.stat(root / "hl").st_ino == os.stat(inside / "pwned").st_ino


def test_garbage_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UnpackError):
        unpack_layer(io.BytesIO(b"not a tar at all" * 100), tmp_path, "oci")
