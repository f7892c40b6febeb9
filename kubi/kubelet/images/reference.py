"""Image references parsed and normalised the way Docker and containerd do.

`nginx` -> `docker.io/library/nginx:latest`,
`gihyodocker/echo` -> `docker.io/gihyodocker/echo:latest`, `localhost:5000/app@sha256:…`
keeps its registry. The grammar is distribution's reference grammar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
# The name is matched case-insensitively first so that an upper-case repository gets
# the dedicated "must be lowercase" message, as distribution reports it.
_REFERENCE_RE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?[a-zA-Z0-9_.-]+(?:/[a-zA-Z0-9_.-]+)*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")
_SHA256_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


class InvalidReferenceError(ValueError):
    """The text is not an image reference (distribution's `invalid reference format`)."""


@dataclass(frozen=True)
class Reference:
    """A fully-qualified image reference: registry domain, repository path, tag and/or digest."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """`docker.io/library/nginx`: the repository with its registry."""
        return f"{self.domain}/{self.path}"

    @property
    def object(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest if any, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def familiar(self) -> str:
        """The short form Docker shows: `nginx:latest`, `gihyodocker/echo:latest`."""
        path = self.path
        if self.domain == DEFAULT_DOMAIN:
            if path.startswith(OFFICIAL_REPO_PREFIX) and path.count("/") == 1:
                path = path[len(OFFICIAL_REPO_PREFIX) :]
            text = path
        else:
            text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def with_digest(self, digest: str) -> Reference:
        """`docker.io/gihyodocker/echo@sha256:…`: the repo digest a kubelet reports as imageID."""
        return Reference(self.domain, self.path, None, digest)

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, None)


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    is_registry = bool(sep) and (
        "." in first or ":" in first or first == "localhost" or first.lower() != first
    )
    if not is_registry:
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise `text` like distribution's ParseNormalizedNamed (+ TagNameOnly).

    A reference with neither tag nor digest gets `:latest` unless `default_tag` is false.
    Raises InvalidReferenceError with distribution's messages.
    """
    if _HEX64_RE.match(text):
        raise InvalidReferenceError(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    match = _REFERENCE_RE.match(text)
    if match is None:
        if not text:
            raise InvalidReferenceError("repository name must have at least one component")
        raise InvalidReferenceError("invalid reference format")
    name = match.group("name")
    domain, path = _split_domain(name)
    if path.lower() != path:
        raise InvalidReferenceError(
            f"invalid reference format: repository name ({path}) must be lowercase"
        )
    if not _DOMAIN_RE.match(domain) or not _PATH_RE.match(path):
        raise InvalidReferenceError("invalid reference format")
    if len(f"{domain}/{path}") > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReferenceError(
            f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
        )
    tag = match.group("tag")
    digest = match.group("digest")
    if digest is not None and digest.startswith("sha256:") and not _SHA256_DIGEST_RE.match(digest):
        raise InvalidReferenceError("invalid checksum digest length")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def is_image_id(text: str) -> bool:
    """`sha256:<64 hex>`: an image id (config digest) rather than a name."""
    return bool(_SHA256_DIGEST_RE.match(text))
