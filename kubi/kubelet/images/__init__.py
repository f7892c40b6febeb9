"""Images for the node agent: references, registries, pulling, the store, rootfs, GC."""

from kubi.kubelet.images.distribution import (
    DigestMismatchError,
    DistributionClient,
    DistributionError,
    NotFoundError,
    Platform,
    UnauthorizedError,
    UnreachableError,
)
from kubi.kubelet.images.reference import InvalidReferenceError, Reference, parse_reference
from kubi.kubelet.images.registries import RegistriesConfig, load_registries, parse_registries
from kubi.kubelet.images.store import (
    ERR_IMAGE_NEVER_PULL,
    ERR_IMAGE_PULL,
    ERR_INVALID_IMAGE_NAME,
    IMAGE_PULL_BACKOFF,
    ArchiveError,
    EnsureResult,
    GCResult,
    Image,
    ImageError,
    ImageNotFoundError,
    ImageStore,
    Rootfs,
)

__all__ = [
    "ERR_IMAGE_NEVER_PULL",
    "ERR_IMAGE_PULL",
    "ERR_INVALID_IMAGE_NAME",
    "IMAGE_PULL_BACKOFF",
    "ArchiveError",
    "DigestMismatchError",
    "DistributionClient",
    "DistributionError",
    "EnsureResult",
    "GCResult",
    "Image",
    "ImageError",
    "ImageNotFoundError",
    "ImageStore",
    "InvalidReferenceError",
    "NotFoundError",
    "Platform",
    "Reference",
    "RegistriesConfig",
    "Rootfs",
    "UnauthorizedError",
    "UnreachableError",
    "load_registries",
    "parse_reference",
    "parse_registries",
]
