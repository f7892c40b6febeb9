"""The image store against a real docker-registry (tests/conftest_registry.py)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubi.kubelet.images import ImageError, ImageNotFoundError, ImageStore, load_registries
from kubi.kubelet.images.cli import format_images, import_archive, list_images, remove_image
from kubi.kubelet.images.distribution import DistributionClient, push_image
from kubi.kubelet.images.registries import RegistriesConfig
from kubi.kubelet.images.store import ArchiveError
from tests.conftest_registry import LocalRegistry, free_port
from tests.images import (
    BuiltImage,
    LayerBuilder,
    build_images,
    make_image,
    registry_storage_blob,
    write_docker_save,
    write_oci_archive,
)

ECHO = "gihyodocker/echo:latest"


@pytest.fixture
def store(tmp_path: Path, registry: LocalRegistry) -> Iterator[ImageStore]:
    s = ImageStore(tmp_path / "data", load_registries(registry.registries_yaml), timeout=10)
    yield s
    s.close()


@pytest.fixture
def offline_store(tmp_path: Path) -> Iterator[ImageStore]:
    s = ImageStore(tmp_path / "data")
    yield s
    s.close()


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


@pytest.fixture
def containers(tmp_path: Path, store: ImageStore) -> Iterator[Path]:
    """A dir for container rootfs; every rootfs left in it is released, mounts checked."""
    base = tmp_path / "containers"
    base.mkdir()
    try:
        yield base
    finally:
        for d in base.iterdir():
            store.release_rootfs(d)
        leftover = _mounts_under(tmp_path)
        for point in leftover:
            subprocess.run(["umount", "-l", point], check=False)
        assert leftover == []


def _push(registry: LocalRegistry, repository: str, tag: str, image: BuiltImage) -> None:
    with DistributionClient() as client:
        push_image(client, registry.url, repository, tag, image.blobs(),
                   image.manifest, "application/vnd.oci.image.manifest.v1+json")


def _unique_image(name: str) -> BuiltImage:
    layer = LayerBuilder()
    layer.file("/marker", uuid.uuid4().hex)
    return make_image(name, [layer.tar()], {"Cmd": ["/marker"]})


def test_pull_through_mirror(store: ImageStore, registry: LocalRegistry) -> None:
    built = registry.images[ECHO]
    result = store.ensure_image(ECHO, "IfNotPresent")
    assert result.pulled
    assert result.image == "docker.io/gihyodocker/echo:latest"
    assert result.image_id == built.config_digest
    assert result.repo_digest == f"docker.io/gihyodocker/echo@{built.manifest_digest}"
    config = store.image_config(ECHO)
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}}
    [image] = store.list_images()
    assert image.repo_tags == ["docker.io/gihyodocker/echo:latest"]
    # The kubelet's words, durations as Go prints them truncated to milliseconds.
    assert re.fullmatch(rf'Successfully pulled image "{ECHO}" in (\d+(\.\d+)?m?s) \(\1 '
                        rf'including waiting\)\. Image size: {image.size} bytes\.',
                        result.message), result.message
    assert image.repo_digests == [result.repo_digest]
    assert store.get(result.image_id) == store.get(result.repo_digest) == image
    # IfNotPresent: no second pull, even with the registry gone.
    offline = ImageStore(store.root.parent, RegistriesConfig())
    again = offline.ensure_image(ECHO, "IfNotPresent")
    assert not again.pulled and again.image_id == result.image_id
    assert again.message == f'Container image "{ECHO}" already present on machine'
    assert offline.ensure_image(ECHO, "Never").image_id == result.image_id
    offline.close()


def test_shared_base_layer_and_busybox_short_name(store: ImageStore,
                                                  registry: LocalRegistry) -> None:
    echo = store.ensure_image(ECHO, "IfNotPresent")
    busybox = store.ensure_image("busybox", "")
    assert busybox.image == "docker.io/library/busybox:latest"
    assert busybox.image_id == registry.images["busybox:latest"].config_digest
    assert store.get(busybox.image_id).chain_ids[0] == store.get(echo.image_id).chain_ids[0]
    assert len(list(store.snapshots.iterdir())) == 2


def test_always_repulls_when_tag_moves(store: ImageStore, registry: LocalRegistry) -> None:
    repo = f"kubi-test/moving-{uuid.uuid4().hex[:8]}"
    first, second = _unique_image("a:1"), _unique_image("b:1")
    _push(registry, repo, "v1", first)
    ref = f"{registry.address}/{repo}:v1"
    one = store.ensure_image(ref, "Always")
    assert one.image_id == first.config_digest
    _push(registry, repo, "v1", second)
    assert store.ensure_image(ref, "IfNotPresent").image_id == one.image_id
    two = store.ensure_image(ref, "Always")
    assert two.pulled and two.image_id == second.config_digest
    assert two.repo_digest == f"{registry.address}/{repo}@{second.manifest_digest}"
    # The old image's content went with its last name.
    assert not store.blob_path(first.config_digest).exists()
    assert [i.id for i in store.list_images()] == [two.image_id]


def test_never_and_invalid_names(store: ImageStore) -> None:
    with pytest.raises(ImageError) as err:
        store.ensure_image(ECHO, "Never")
    assert err.value.reason == "ErrImageNeverPull"
    assert err.value.message == (
        f'Container image "{ECHO}" is not present with pull policy of Never')
    with pytest.raises(ImageError) as err:
        store.ensure_image("Gihyodocker/Echo", "IfNotPresent")
    assert err.value.reason == "InvalidImageName"
    assert "must be lowercase" in err.value.message
    with pytest.raises(ValueError, match="unknown image pull policy"):
        store.ensure_image(ECHO, "Sometimes")
    assert store.list_images() == []


def test_missing_image_not_found(store: ImageStore) -> None:
    with pytest.raises(ImageError) as err:
        store.ensure_image("gihyodocker/nope:1.0", "IfNotPresent")
    assert err.value.reason == "ErrImagePull"
    assert err.value.message == (
        'rpc error: code = NotFound desc = failed to pull and unpack image '
        '"docker.io/gihyodocker/nope:1.0": failed to resolve reference '
        '"docker.io/gihyodocker/nope:1.0": docker.io/gihyodocker/nope:1.0: not found')
    assert store.list_images() == []


def test_unreachable_registry(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    store = ImageStore(tmp_path / "d", timeout=2)
    with pytest.raises(ImageError) as err:
        store.ensure_image(f"{dead}/app:1", "IfNotPresent")
    store.close()
    assert err.value.reason == "ErrImagePull"
    assert f'failed to do request: Get "http://{dead}/v2/app/manifests/1"' in err.value.message


def test_corrupt_blob_is_an_error(store: ImageStore, registry: LocalRegistry) -> None:
    repo = f"kubi-test/corrupt-{uuid.uuid4().hex[:8]}"
    image = _unique_image("c:1")
    _push(registry, repo, "v1", image)
    layer_digest = json.loads(image.manifest)["layers"][0]["digest"]
    data_file = registry_storage_blob(registry.storage, layer_digest)
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, other bytes
    data_file.write_bytes(bytes(raw))
    with pytest.raises(ImageError) as err:
        store.ensure_image(f"{registry.address}/{repo}:v1", "IfNotPresent")
    assert err.value.reason == "ErrImagePull"
    assert f"failed to copy: {layer_digest}: unexpected commit digest" in err.value.message
    assert store.list_images() == []
    assert not store.blob_path(layer_digest).exists()


def test_import_docker_save_and_oci(offline_store: ImageStore, tmp_path: Path) -> None:
    images = build_images()
    echo = images[ECHO]
    archive = tmp_path / "echo.tar"
    write_docker_save(echo, archive, ["gihyodocker/echo:latest", "mine/echo:v1"])
    names = offline_store.import_archive(archive)
    assert names == ["docker.io/gihyodocker/echo:latest", "docker.io/mine/echo:v1"]
    [image] = offline_store.list_images()
    assert image.id == echo.config_digest
    assert offline_store.ensure_image(ECHO, "Never").image_id == echo.config_digest
    oci = tmp_path / "busybox-oci.tar"
    write_oci_archive(images["busybox:latest"], oci, "docker.io/library/busybox:latest")
    assert import_archive(offline_store.root.parent, oci) == ["docker.io/library/busybox:latest"]
    listed = list_images(offline_store.root.parent)
    assert sorted(t for i in listed for t in i.repo_tags) == [
        "docker.io/gihyodocker/echo:latest", "docker.io/library/busybox:latest",
        "docker.io/mine/echo:v1"]
    table = format_images(listed)
    assert table.splitlines()[0].split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    assert "docker.io/library/busybox" in table
    assert remove_image(offline_store.root.parent, "busybox") == [
        "docker.io/library/busybox:latest"]
    with pytest.raises(ImageNotFoundError):
        remove_image(offline_store.root.parent, "busybox")


def test_import_bad_archives(offline_store: ImageStore, tmp_path: Path) -> None:
    not_tar = tmp_path / "x.tar"
    not_tar.write_bytes(b"hello" * 100)
    with pytest.raises(ArchiveError, match="not a tar archive"):
        offline_store.import_archive(not_tar)
    echo = build_images()[ECHO]
    lying = tmp_path / "lying.tar"
    write_docker_save(echo, lying)
    # A config whose diff ids do not match the layers must not be imported.
    bad = make_image(ECHO, [LayerBuilder().tar(), LayerBuilder().tar()], {})
    bad_config = json.loads(bad.config)
    bad_config["rootfs"]["diff_ids"][0] = "sha256:" + "0" * 64
    bad.config = json.dumps(bad_config).encode()
    write_docker_save(bad, lying)
    with pytest.raises(ArchiveError, match="config says"):
        offline_store.import_archive(lying)
    assert offline_store.list_images() == []
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    with pytest.raises(ArchiveError, match=r"neither manifest\.json"):
        offline_store.import_archive(empty)


def _rootfs_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _whiteout_image() -> BuiltImage:
    lower = LayerBuilder()
    for path in ("etc/keep", "etc/drop", "opaque/old"):
        lower.file(path, path)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind in (("etc/.wh.drop", tarfile.REGTYPE), ("opaque", tarfile.DIRTYPE),
                           ("opaque/.wh..wh..opq", tarfile.REGTYPE),
                           ("opaque/new", tarfile.REGTYPE)):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755
            tar.addfile(info)
    return make_image("whiteouts:1", [lower.tar(), buffer.getvalue()], {})


@pytest.mark.parametrize("method", ["overlay", "copy"])
def test_rootfs_with_whiteouts(offline_store: ImageStore, tmp_path: Path, method: str) -> None:
    image = _whiteout_image()
    archive = tmp_path / "w.tar"
    write_docker_save(image, archive, ["whiteouts:1"])
    offline_store.import_archive(archive)
    container = tmp_path / "c"
    try:
        try:
            rootfs = offline_store.prepare_rootfs("whiteouts:1", container, method=method)
        except OSError as exc:
            if method == "overlay":
                pytest.skip(f"overlay mounts fail here: {exc}")
            raise
        assert rootfs.method == method
        assert _rootfs_files(rootfs.path) == {"etc", "etc/keep", "opaque", "opaque/new"}
        # Writes land in the container, never in the image's snapshots.
        (rootfs.path / "etc/keep").write_text("changed")
        (rootfs.path / "etc/new").write_text("new")
        if method == "overlay":
            assert (container / "upper/etc/keep").read_text() == "changed"
            assert str(rootfs.path) in _mounts_under(tmp_path)
        with pytest.raises(FileExistsError):
            offline_store.prepare_rootfs("whiteouts:1", container)
        second = offline_store.prepare_rootfs("whiteouts:1", tmp_path / "c2", method=method)
        assert (second.path / "etc/keep").read_text() == "etc/keep"
        # A rootfs keeps its image's layers even when the image is removed.
        offline_store.remove("whiteouts:1")
        assert (rootfs.path / "etc/keep").read_text() == "changed"
        assert len(list(offline_store.snapshots.iterdir())) == 2
    finally:
        offline_store.release_rootfs(container)
        offline_store.release_rootfs(tmp_path / "c2")
    assert _mounts_under(tmp_path) == []
    assert not (container / "rootfs").exists()
    assert list(offline_store.snapshots.iterdir()) == []
    with pytest.raises(ValueError, match="unknown rootfs method"):
        offline_store.prepare_rootfs("whiteouts:1", container, method="magic")


def test_echo_rootfs_has_a_runnable_nginx(store: ImageStore, containers: Path) -> None:
    store.ensure_image(ECHO, "IfNotPresent")
    rootfs = store.prepare_rootfs(ECHO, containers / "echo")
    proc = subprocess.run(["chroot", str(rootfs.path), "nginx", "-t", "-c",
                           "/etc/nginx/nginx.conf"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "syntax is ok" in proc.stderr


def test_gc(offline_store: ImageStore, tmp_path: Path) -> None:
    images = build_images()
    for name in ("busybox:latest", ECHO, "gihyodocker/fundamental:0.1.0"):
        archive = tmp_path / f"{uuid.uuid4().hex}.tar"
        write_docker_save(images[name], archive)
        offline_store.import_archive(archive)
        os.unlink(archive)
    offline_store.ensure_image(ECHO, "Never")  # most recently used
    ids = {i.repo_tags[0]: i.id for i in offline_store.list_images()}
    # Below the high threshold: nothing happens.
    capacity = 100 * 1024 * 1024
    assert offline_store.gc(90, 80, capacity=capacity, available=capacity // 2).removed == []
    # 95% used, low 89%: free 6 MiB; fundamental (unused, LRU, ~10 MB) is enough; busybox in use.
    result = offline_store.gc(90, 89, in_use=["busybox"], capacity=capacity,
                              available=capacity * 5 // 100)
    assert result.usage_percent == 95
    assert result.removed == [ids["docker.io/gihyodocker/fundamental:0.1.0"]]
    # Real disk numbers with a 0% high threshold: every unused image goes.
    result = offline_store.gc(0, 0, in_use=[ids["docker.io/library/busybox:latest"]])
    assert result.removed == [ids[ECHO.replace("gihyodocker", "docker.io/gihyodocker")]]
    assert [i.repo_tags for i in offline_store.list_images()] == [
        ["docker.io/library/busybox:latest"]]
    with pytest.raises(ValueError):
        offline_store.gc(50, 60)


def test_remove(offline_store: ImageStore, tmp_path: Path) -> None:
    echo = build_images()[ECHO]
    archive = tmp_path / "e.tar"
    write_docker_save(echo, archive, ["gihyodocker/echo:latest", "gihyodocker/echo:other"])
    offline_store.import_archive(archive)
    assert offline_store.remove("gihyodocker/echo:other") == ["docker.io/gihyodocker/echo:other"]
    assert offline_store.get(echo.config_digest).repo_tags == [
        "docker.io/gihyodocker/echo:latest"]
    with pytest.raises(ImageNotFoundError):
        offline_store.remove("gihyodocker/echo:other")
    assert offline_store.remove(echo.config_digest[7:19]) == ["docker.io/gihyodocker/echo:latest"]
    assert offline_store.list_images() == []
    assert [p for p in offline_store.blobs.iterdir()] == []
    assert list(offline_store.snapshots.iterdir()) == []


def test_layers_are_gzip(registry: LocalRegistry) -> None:
    """The pushed layers are gzip blobs whose content is the diff id (sanity of the builder)."""
    built = registry.images[ECHO]
    blob = registry_storage_blob(registry.storage, json.loads(built.manifest)["layers"][1]
                                 ["digest"]).read_bytes()
    assert "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest() == built.diff_ids[1]
    assert yaml.safe_load(registry.registries_yaml.read_text())["mirrors"]["docker.io"] == {
        "endpoint": [registry.url]}
    assert shutil.which("docker-registry")
