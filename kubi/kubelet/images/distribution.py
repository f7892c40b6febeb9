"""A client of the OCI distribution API (what a registry serves under /v2/), over httpx.

Pull: resolve a reference against a registry's endpoints (mirrors first, the registry
last, as containerd does: a 404 or a failure on one endpoint moves on to the next),
answer Bearer token challenges (Docker Hub's realm/service/scope dance) and Basic ones,
pick the platform from an index, and download blobs verifying their sha256.
Push (used to seed test registries): monolithic blob upload and manifest PUT.

Errors read like containerd's so that the kubelet's status messages match upstream.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform as host_platform
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from kubi.kubelet.images.reference import Reference
from kubi.kubelet.images.registries import AuthConfig, Endpoint, RegistriesConfig

MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
INDEX_TYPES = (MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST)
MANIFEST_TYPES = (MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST)
ACCEPT_MANIFESTS = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES, "*/*"))
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_CHUNK = 1024 * 1024

Obj = dict[str, Any]


class DistributionError(Exception):
    """A registry operation failed; the text reads like containerd's."""

    grpc_code = "Unknown"


class NotFoundError(DistributionError):
    grpc_code = "NotFound"


class UnauthorizedError(DistributionError):
    pass


class UnreachableError(DistributionError):
    pass


class DigestMismatchError(DistributionError):
    pass


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


_MACHINE_TO_ARCH = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i686": ("386", ""),
    "i386": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


def host_platform_default() -> Platform:
    """linux/<the host's architecture as OCI spells it>."""
    arch, variant = _MACHINE_TO_ARCH.get(host_platform.machine().lower(), ("amd64", ""))
    return Platform("linux", arch, variant)


def select_platform(index: Obj, wanted: Platform) -> Obj:
    """The descriptor in an OCI index / Docker manifest list that best fits `wanted`."""
    best: Obj | None = None
    best_score = -1
    for desc in index.get("manifests") or []:
        plat = desc.get("platform") or {}
        if plat.get("os") != wanted.os or plat.get("architecture") != wanted.architecture:
            continue
        variant = plat.get("variant", "")
        # arm64 images often leave the variant out; v8 is the default there.
        if variant == wanted.variant or (not variant and wanted.variant in ("", "v8")):
            score = 2
        elif not wanted.variant:
            score = 1
        else:
            continue
        if score > best_score:
            best, best_score = desc, score
    if best is None:
        raise NotFoundError(f"no match for platform {wanted} in manifest: not found")
    return best


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _check_digest(digest: str) -> str:
    if not re.fullmatch(r"sha256:[a-f0-9]{64}", digest):
        raise DistributionError(f"unsupported digest {digest!r}: only sha256 is supported")
    return digest.split(":", 1)[1]


def _registry_errors(resp: httpx.Response) -> str:
    """`code: message` pairs of the registry's JSON error body, if it has one."""
    try:
        body = resp.json()
    except (ValueError, httpx.ResponseNotRead):
        return ""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = []
    for err in errors:
        if isinstance(err, dict):
            code = str(err.get("code", "")).lower()
            parts.append(f"{code}: {err.get('message', '')}".strip(": "))
    return "; ".join(parts)


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` -> ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    params.update({k.lower(): v for k, v in re.findall(r'(\w+)=([^",\s]+)', rest)
                   if k.lower() not in params})
    return scheme.lower(), params


@dataclass
class Session:
    """Talks to one endpoint for one repository, remembering the auth that worked."""

    endpoint: Endpoint
    repository: str  # the path on this endpoint (mirror rewrites applied)
    client: httpx.Client
    auth: AuthConfig | None = None
    _authorization: dict[str, str] = field(default_factory=dict)  # scope -> header value

    def url(self, tail: str) -> str:
        return f"{self.endpoint.url}/v2/{self.repository}/{tail}"

    def _scope(self, actions: str) -> str:
        return f"repository:{self.repository}:{actions}"

    def _send(self, method: str, url: str, headers: dict[str, str], content: bytes | None,
              stream: bool) -> httpx.Response:
        request = self.client.build_request(method, url, headers=headers, content=content)
        try:
            return self.client.send(request, stream=stream, follow_redirects=True)
        except httpx.TransportError as exc:
            raise UnreachableError(
                f'failed to do request: {method.capitalize()} "{url}": {exc or type(exc).__name__}'
            ) from exc

    def request(self, method: str, tail_or_url: str, *, headers: dict[str, str] | None = None,
                content: bytes | None = None, stream: bool = False,
                actions: str = "pull") -> httpx.Response:
        """Send a request, answering one auth challenge if the registry makes one."""
        url = tail_or_url if "://" in tail_or_url else self.url(tail_or_url)
        scope = self._scope(actions)
        sent = dict(headers or {})
        if scope in self._authorization:
            sent["Authorization"] = self._authorization[scope]
        resp = self._send(method, url, sent, content, stream)
        if resp.status_code != 401:
            return resp
        challenge = resp.headers.get("WWW-Authenticate", "")
        authorization = self._answer_challenge(challenge, scope)
        if authorization is None:
            return resp
        resp.close()
        self._authorization[scope] = authorization
        sent["Authorization"] = authorization
        return self._send(method, url, sent, content, stream)

    def _basic(self) -> str | None:
        if self.auth is None or not (self.auth.username or self.auth.password):
            return None
        raw = f"{self.auth.username}:{self.auth.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _answer_challenge(self, header: str, scope: str) -> str | None:
        scheme, params = _parse_challenge(header)
        if scheme == "basic":
            return self._basic()
        if scheme != "bearer" or "realm" not in params:
            return None
        query = {"service": params.get("service", "")} if params.get("service") else {}
        scopes = [scope]
        if params.get("scope") and params["scope"] != scope:
            scopes.insert(0, params["scope"])
        token_headers: dict[str, str] = {}
        if self.auth is not None and self.auth.identity_token:
            # OAuth2 refresh-token grant, as Docker does with an identity token.
            form = {"grant_type": "refresh_token", "refresh_token": self.auth.identity_token,
                    "client_id": "kubi", "scope": " ".join(scopes), **query}
            request = self.client.build_request("POST", params["realm"], data=form)
        else:
            basic = self._basic()
            if basic:
                token_headers["Authorization"] = basic
            params_list: list[tuple[str, str | int | float | bool | None]] = [
                *query.items(), *[("scope", s) for s in scopes]
            ]
            request = self.client.build_request(
                "GET", params["realm"], params=params_list, headers=token_headers
            )
        try:
            resp = self.client.send(request, follow_redirects=True)
        except httpx.TransportError as exc:
            raise UnreachableError(
                f'failed to fetch token: {request.method.capitalize()} "{request.url}": {exc}'
            ) from exc
        if resp.status_code in (401, 403):
            detail = _registry_errors(resp) or f"{resp.status_code} {resp.reason_phrase}"
            kind = "oauth" if request.method == "POST" else (
                "anonymous" if "Authorization" not in token_headers else "basic")
            raise UnauthorizedError(
                f"failed to authorize: failed to fetch {kind} token: unexpected status from "
                f"{request.method} request to {request.url}: {detail}"
            )
        if resp.status_code >= 300:
            raise DistributionError(
                f"failed to authorize: unexpected status {resp.status_code} from token server "
                f"{params['realm']}"
            )
        try:
            body = resp.json()
        except ValueError as exc:
            raise DistributionError("failed to authorize: token server sent no JSON") from exc
        token = body.get("token") or body.get("access_token")
        if not token:
            raise DistributionError("failed to authorize: token server sent no token")
        return f"Bearer {token}"

    # -- pull ------------------------------------------------------------------

    def get_manifest(self, ref: str, *, head: bool = False) -> httpx.Response:
        return self.request("HEAD" if head else "GET", f"manifests/{ref}",
                            headers={"Accept": ACCEPT_MANIFESTS})

    def fetch_manifest(self, digest: str) -> tuple[bytes, str]:
        """The manifest with `digest`, its content verified."""
        resp = self.get_manifest(digest)
        _raise_for_status(resp, f"{self.endpoint.host}/{self.repository}@{digest}")
        body = resp.content
        if len(body) > MAX_MANIFEST_BYTES:
            raise DistributionError(f"manifest {digest} is larger than {MAX_MANIFEST_BYTES} bytes")
        actual = sha256_digest(body)
        if actual != digest:
            raise DigestMismatchError(
                f"unexpected commit digest {actual}, expected {digest}: failed precondition"
            )
        return body, _media_type(resp, body)

    def fetch_blob(self, digest: str, size: int | None, dest: Path) -> None:
        """Download blob `digest` to `dest` (atomically), checking size and sha256."""
        hex_digest = _check_digest(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".ingest-{hex_digest[:12]}-", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            hasher = hashlib.sha256()
            written = 0
            with os.fdopen(fd, "wb") as out:
                resp = self.request("GET", f"blobs/{digest}", stream=True)
                try:
                    _raise_for_status(resp, f"{self.endpoint.host}/{self.repository}@{digest}")
                    for chunk in resp.iter_bytes(_CHUNK):
                        hasher.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
                except httpx.TransportError as exc:
                    raise UnreachableError(f"failed to copy: {digest}: {exc}") from exc
                finally:
                    resp.close()
            actual = "sha256:" + hasher.hexdigest()
            if actual != digest:
                raise DigestMismatchError(
                    f"failed to copy: {digest}: unexpected commit digest {actual}, "
                    f"expected {digest}: failed precondition"
                )
            if size is not None and written != size:
                raise DigestMismatchError(
                    f"failed to copy: {digest}: unexpected commit size {written}, "
                    f"expected {size}: failed precondition"
                )
            tmp.chmod(0o444)
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)

    # -- push ------------------------------------------------------------------

    def blob_exists(self, digest: str) -> bool:
        resp = self.request("HEAD", f"blobs/{digest}", actions="pull,push")
        return resp.status_code == 200

    def push_blob(self, digest: str, data: bytes) -> None:
        """Upload a blob: POST for an upload session, then PUT the whole body with ?digest=."""
        if self.blob_exists(digest):
            return
        resp = self.request("POST", "blobs/uploads/", actions="pull,push")
        if resp.status_code != 202 or "Location" not in resp.headers:
            raise _status_error(resp, f"start upload of {digest}")
        location = str(resp.url.join(resp.headers["Location"]))
        separator = "&" if "?" in location else "?"
        resp = self.request(
            "PUT", f"{location}{separator}digest={digest}", content=data, actions="pull,push",
            headers={"Content-Type": "application/octet-stream"},
        )
        if resp.status_code != 201:
            raise _status_error(resp, f"upload of {digest}")

    def push_manifest(self, reference: str, body: bytes, media_type: str) -> str:
        resp = self.request("PUT", f"manifests/{reference}", content=body,
                            headers={"Content-Type": media_type}, actions="pull,push")
        if resp.status_code != 201:
            raise _status_error(resp, f"put manifest {reference}")
        return sha256_digest(body)


def _media_type(resp: httpx.Response, body: bytes) -> str:
    try:
        declared = json.loads(body).get("mediaType")
    except (ValueError, AttributeError):
        declared = None
    header = resp.headers.get("Content-Type", "").split(";")[0].strip()
    if declared:
        return str(declared)
    if header in (*INDEX_TYPES, *MANIFEST_TYPES):
        return header
    try:
        # OCI allows mediaType to be absent; an index has "manifests", a manifest "layers".
        return MEDIA_OCI_INDEX if "manifests" in json.loads(body) else MEDIA_OCI_MANIFEST
    except ValueError as exc:
        raise DistributionError("manifest is not JSON") from exc


def _status_error(resp: httpx.Response, what: str) -> DistributionError:
    detail = _registry_errors(resp)
    text = f"{what}: unexpected status {resp.status_code} {resp.reason_phrase}"
    return DistributionError(f"{text}: {detail}" if detail else text)


def _raise_for_status(resp: httpx.Response, what: str) -> None:
    if resp.status_code < 300:
        return
    try:
        resp.read()
    except httpx.StreamError:
        pass
    detail = _registry_errors(resp)
    if resp.status_code == 404:
        raise NotFoundError(f"{what}: not found" + (f": {detail}" if detail else ""))
    if resp.status_code in (401, 403):
        raise UnauthorizedError(
            "pull access denied, repository does not exist or may require authorization: "
            + (f"server message: {detail}" if detail else "authorization failed")
        )
    raise _status_error(resp, what)


@dataclass
class Resolved:
    """A reference resolved on one endpoint: its top-level manifest and where it came from."""

    reference: Reference
    digest: str  # the top-level manifest's (or index's) digest: the repo digest
    media_type: str
    body: bytes
    session: Session
    fallbacks: list[Session]  # the other endpoints, for blobs the first one lacks

    def sessions(self) -> Iterator[Session]:
        yield self.session
        yield from (s for s in self.fallbacks if s is not self.session)


class DistributionClient:
    """Pulls (and pushes) through the endpoints registries.yaml gives each registry."""

    def __init__(self, registries: RegistriesConfig | None = None, *,
                 platform: Platform | None = None, timeout: float = 30.0) -> None:
        self.registries = registries or RegistriesConfig()
        self.platform = platform or host_platform_default()
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._clients: dict[str, httpx.Client] = {}

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> DistributionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _client(self, endpoint: Endpoint) -> httpx.Client:
        key = endpoint.host + ("|http" if endpoint.plain_http else "|https")
        if key not in self._clients:
            self._clients[key] = httpx.Client(
                verify=endpoint.ssl_context(), timeout=self.timeout, trust_env=False
            )
        return self._clients[key]

    def sessions(self, ref: Reference, credentials: AuthConfig | None = None) -> list[Session]:
        """One session per endpoint of ref's registry, in the order to try them.

        registries.yaml credentials for an endpoint's host win; `credentials` (from pod
        pull secrets) are used for the registry itself, as containerd's CRI does.
        """
        found = []
        for endpoint in self.registries.endpoints(ref.domain):
            auth = endpoint.config.auth
            if auth is None and not endpoint.is_mirror:
                auth = credentials
            found.append(Session(endpoint, endpoint.repository(ref.path), self._client(endpoint),
                                 auth))
        return found

    def session_for(self, url: str, repository: str, auth: AuthConfig | None = None) -> Session:
        """A session on an explicit endpoint URL (for pushing to a known registry)."""
        base = url.rstrip("/")
        host = base.split("://", 1)[-1].split("/", 1)[0]
        endpoint = Endpoint(base, host, False, (), self.registries.host_config(host))
        return Session(endpoint, repository, self._client(endpoint), auth)

    def resolve(self, ref: Reference, credentials: AuthConfig | None = None) -> Resolved:
        """Find ref's top-level manifest on the first endpoint that has it."""
        sessions = self.sessions(ref, credentials)
        first_error: DistributionError | None = None
        for session in sessions:
            try:
                resp = session.get_manifest(ref.object)
            except DistributionError as exc:
                first_error = first_error or exc
                continue
            if resp.status_code == 404:
                continue
            if resp.status_code in (401, 403):
                detail = _registry_errors(resp)
                first_error = first_error or UnauthorizedError(
                    "pull access denied, repository does not exist or may require "
                    "authorization: " + (f"server message: {detail}" if detail
                                         else "authorization failed")
                )
                continue
            if resp.status_code >= 300:
                first_error = first_error or _status_error(resp, f"{ref}")
                continue
            body = resp.content
            if len(body) > MAX_MANIFEST_BYTES:
                raise DistributionError(f"{ref}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
            digest = sha256_digest(body)
            if ref.digest is not None and digest != ref.digest:
                first_error = first_error or DigestMismatchError(
                    f"{ref}: unexpected manifest digest {digest}: failed precondition"
                )
                continue
            return Resolved(ref, digest, _media_type(resp, body), body, session, sessions)
        if first_error is None:
            first_error = NotFoundError(f"{ref}: not found")
        raise first_error

    def fetch_manifest(self, resolved: Resolved, digest: str) -> tuple[bytes, str]:
        return _first_success(resolved, lambda s: s.fetch_manifest(digest))

    def fetch_blob(self, resolved: Resolved, digest: str, size: int | None, dest: Path) -> None:
        _first_success(resolved, lambda s: s.fetch_blob(digest, size, dest))


def _first_success(resolved: Resolved, attempt: Any) -> Any:
    first_error: DistributionError | None = None
    for session in resolved.sessions():
        try:
            return attempt(session)
        except DigestMismatchError:
            raise  # corrupt content is an error, not a reason to shop around
        except DistributionError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error


def push_image(client: DistributionClient, registry_url: str, repository: str, tag: str,
               blobs: Sequence[bytes], manifest: bytes, media_type: str,
               auth: AuthConfig | None = None) -> str:
    """Push blobs then the manifest under `tag`; returns the manifest digest."""
    session = client.session_for(registry_url, repository, auth)
    for blob in blobs:
        session.push_blob(sha256_digest(blob), blob)
    return session.push_manifest(tag, manifest, media_type)
