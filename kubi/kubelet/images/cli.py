"""What `kubi images import|ls|rm` do, as functions the CLI wires up."""

from __future__ import annotations

from pathlib import Path

from kubi.kubelet.images.store import Image, ImageStore


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    return f"{value:.3g}GB"


def import_archive(data_dir: str | Path, path: str | Path) -> list[str]:
    """Import a `docker save` or OCI layout tarball; returns the image names it held."""
    store = ImageStore(data_dir)
    try:
        return store.import_archive(path)
    finally:
        store.close()


def list_images(data_dir: str | Path) -> list[Image]:
    store = ImageStore(data_dir)
    try:
        return store.list_images()
    finally:
        store.close()


def format_images(images: list[Image]) -> str:
    """A table like `crictl images`: IMAGE, TAG, IMAGE ID, SIZE."""
    rows = [("IMAGE", "TAG", "IMAGE ID", "SIZE")]
    for image in images:
        short_id = image.id.removeprefix("sha256:")[:13]
        names = image.repo_tags or [d.split("@")[0] + ":<none>" for d in image.repo_digests]
        for name in names:
            repo, _, tag = name.rpartition(":")
            rows.append((repo, tag, short_id, _human_size(image.size)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )


def remove_image(data_dir: str | Path, ref: str) -> list[str]:
    """Remove an image by name, repo digest or id; ImageNotFoundError if there is none."""
    store = ImageStore(data_dir)
    try:
        return store.remove(ref)
    finally:
        store.close()
