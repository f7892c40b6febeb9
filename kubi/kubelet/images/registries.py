"""Registry configuration in k3s's `registries.yaml` format.

    mirrors:
      docker.io:
        endpoint: ["http://127.0.0.1:5000"]
        rewrite: {"^library/(.*)": "mirror/$1"}
      "*":
        endpoint: ["https://mirror.example"]
    configs:
      "127.0.0.1:5000":
        auth: {username: u, password: p}          # or auth: base64(u:p), or identitytoken
        tls: {ca_file: …, cert_file: …, key_file: …, insecure_skip_verify: false}

As in k3s/containerd, a registry's mirrors are tried in order and the registry itself last;
`"*"` applies to registries without their own entry. An endpoint's scheme decides plain HTTP.
k3s's `--disable-default-registry-endpoint` (the registry itself is not tried after its
mirrors) is the `disable_default_endpoint` argument, or the top-level key
`disable-default-endpoint: true` (a kubi extension, so a test's file can keep pulls off
the Internet).
"""

from __future__ import annotations

import base64
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubi.kubelet.images.reference import DEFAULT_DOMAIN

WILDCARD = "*"
# Docker Hub's API lives on another host than its image names say.
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


class RegistryConfigError(ValueError):
    """registries.yaml is malformed."""


@dataclass(frozen=True)
class AuthConfig:
    username: str = ""
    password: str = ""
    identity_token: str = ""

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token)


@dataclass(frozen=True)
class TLSConfig:
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class HostConfig:
    auth: AuthConfig | None = None
    tls: TLSConfig | None = None


@dataclass(frozen=True)
class Mirror:
    endpoints: tuple[str, ...] = ()
    rewrites: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """One place to pull a registry's content from."""

    url: str  # scheme://host[:port][/prefix], without a trailing /v2
    host: str  # host[:port], the key for `configs`
    is_mirror: bool
    rewrites: tuple[tuple[str, str], ...] = ()
    config: HostConfig = field(default_factory=HostConfig)

    @property
    def plain_http(self) -> bool:
        return self.url.startswith("http://")

    def repository(self, path: str) -> str:
        """The repository path on this endpoint, after the mirror's rewrite rules."""
        for pattern, replacement in self.rewrites:
            if re.search(pattern, path):
                # k3s/containerd write Go's `$1`; Python's re wants `\1`.
                return re.sub(pattern, re.sub(r"\$(\d+)", r"\\\1", replacement), path, count=1)
        return path

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What httpx's `verify` takes for this endpoint."""
        tls = self.config.tls
        if tls is None:
            return True
        context = ssl.create_default_context(cafile=tls.ca_file or None)
        if tls.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file or None)
        return context


@dataclass(frozen=True)
class RegistriesConfig:
    mirrors: dict[str, Mirror] = field(default_factory=dict)
    configs: dict[str, HostConfig] = field(default_factory=dict)
    disable_default_endpoint: bool = False

    def host_config(self, host: str) -> HostConfig:
        return self.configs.get(host) or self.configs.get(WILDCARD) or HostConfig()

    def endpoints(self, domain: str) -> list[Endpoint]:
        """Where to pull `domain`'s images from: its mirrors in order, then the registry."""
        mirror = self.mirrors.get(domain)
        if mirror is None:
            mirror = self.mirrors.get(WILDCARD)
        found: list[Endpoint] = []
        for url in mirror.endpoints if mirror else ():
            base = _normalise_endpoint(url)
            host = _host_of(base)
            found.append(Endpoint(base, host, True, mirror.rewrites if mirror else (),
                                  self.host_config(host)))
        upstream = default_endpoint(domain)
        if found and self.disable_default_endpoint:
            return found
        if upstream not in [e.url for e in found]:
            host = _host_of(upstream)
            config = self.configs.get(host) or self.configs.get(domain) or self.host_config(host)
            found.append(Endpoint(upstream, host, False, (), config))
        return found


def default_endpoint(domain: str) -> str:
    """The registry's own API address: Docker Hub's API host; plain HTTP for loopback."""
    if domain == DEFAULT_DOMAIN:
        return f"https://{DOCKER_HUB_API_HOST}"
    hostname = domain.rsplit(":", 1)[0] if not domain.endswith("]") else domain
    if hostname in _LOOPBACK_HOSTS or hostname.startswith("127."):
        return f"http://{domain}"
    return f"https://{domain}"


def _normalise_endpoint(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "https://" + url
    scheme = url.split("://", 1)[0]
    if scheme not in ("http", "https"):
        raise RegistryConfigError(f"mirror endpoint {url!r}: scheme must be http or https")
    if url.endswith("/v2"):
        url = url[: -len("/v2")]
    return url


def _host_of(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0]


def _as_mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RegistryConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _parse_auth(raw: dict[str, Any], where: str) -> AuthConfig:
    username = str(raw.get("username") or "")
    password = str(raw.get("password") or "")
    encoded = raw.get("auth")
    if encoded:
        try:
            decoded = base64.b64decode(str(encoded), validate=True).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise RegistryConfigError(f"{where}.auth: not base64 of user:password") from exc
        username, sep, password = decoded.partition(":")
        if not sep:
            raise RegistryConfigError(f"{where}.auth: not base64 of user:password")
    return AuthConfig(username, password, str(raw.get("identitytoken") or ""))


def parse_registries(data: Any, *, disable_default_endpoint: bool = False) -> RegistriesConfig:
    """Build a RegistriesConfig from registries.yaml's parsed content."""
    top = _as_mapping(data, "registries.yaml")
    disable = bool(top.get("disable-default-endpoint", False)) or disable_default_endpoint
    mirrors: dict[str, Mirror] = {}
    for name, raw in _as_mapping(top.get("mirrors"), "mirrors").items():
        where = f"mirrors[{name}]"
        entry = _as_mapping(raw, where)
        endpoints = entry.get("endpoint") or []
        if isinstance(endpoints, str) or not isinstance(endpoints, list):
            raise RegistryConfigError(f"{where}.endpoint: expected a list of URLs")
        rewrites: list[tuple[str, str]] = []
        for pattern, replacement in _as_mapping(entry.get("rewrite"), f"{where}.rewrite").items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise RegistryConfigError(
                    f"{where}.rewrite: bad pattern {pattern!r}: {exc}"
                ) from exc
            rewrites.append((str(pattern), str(replacement)))
        mirrors[str(name)] = Mirror(
            tuple(_normalise_endpoint(str(u)) for u in endpoints), tuple(rewrites)
        )
    configs: dict[str, HostConfig] = {}
    for host, raw in _as_mapping(top.get("configs"), "configs").items():
        where = f"configs[{host}]"
        entry = _as_mapping(raw, where)
        auth_raw = entry.get("auth")
        tls_raw = entry.get("tls")
        auth = _parse_auth(_as_mapping(auth_raw, f"{where}.auth"), where) if auth_raw else None
        tls = None
        if tls_raw:
            t = _as_mapping(tls_raw, f"{where}.tls")
            tls = TLSConfig(
                str(t.get("ca_file") or ""),
                str(t.get("cert_file") or ""),
                str(t.get("key_file") or ""),
                bool(t.get("insecure_skip_verify", False)),
            )
        configs[str(host)] = HostConfig(auth, tls)
    return RegistriesConfig(mirrors, configs, disable)


def load_registries(path: str | Path | None, *,
                    disable_default_endpoint: bool = False) -> RegistriesConfig:
    """Read registries.yaml; a missing file means no mirrors and no credentials."""
    if path is None or not Path(path).exists():
        return RegistriesConfig(disable_default_endpoint=disable_default_endpoint)
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise RegistryConfigError(f"{p}: {exc}") from exc
    return parse_registries(data, disable_default_endpoint=disable_default_endpoint)
