"""Registry credentials from pods' image pull secrets, matched as the kubelet does.

Secrets of type kubernetes.io/dockerconfigjson (`.dockerconfigjson`: {"auths": {…}}) and
kubernetes.io/dockercfg (`.dockercfg`: {…}) map registry keys — `host`, `host:port`,
`https://host/v1/`, globs like `*.example.com` — to username/password or `auth`.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
from collections.abc import Sequence
from typing import Any

from kubi.kubelet.images.reference import DEFAULT_DOMAIN
from kubi.kubelet.images.registries import AuthConfig

_DOCKER_HUB_KEYS = ("index.docker.io", "registry-1.docker.io", "docker.io")


def _key_host(key: str) -> str:
    """`https://index.docker.io/v1/` -> `docker.io`; `host:5000/path` -> `host:5000`."""
    host = key.split("://", 1)[-1].split("/", 1)[0].lower()
    return DEFAULT_DOMAIN if host in _DOCKER_HUB_KEYS else host


def _matches(pattern_host: str, domain: str) -> bool:
    pattern_name, _, pattern_port = pattern_host.partition(":")
    name, _, port = domain.partition(":")
    if pattern_port != port:
        return False
    pattern_parts, parts = pattern_name.split("."), name.split(".")
    if len(pattern_parts) != len(parts):
        return False
    return all(fnmatch.fnmatchcase(p, pp) for pp, p in zip(pattern_parts, parts, strict=True))


def _auth_of(entry: Any) -> AuthConfig | None:
    if not isinstance(entry, dict):
        return None
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    encoded = entry.get("auth")
    if encoded:
        try:
            decoded = base64.b64decode(str(encoded)).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, _, password = decoded.partition(":")
    auth = AuthConfig(username, password, str(entry.get("identitytoken") or ""))
    return None if auth.empty else auth


def _docker_config(secret: dict[str, Any]) -> dict[str, Any]:
    data = secret.get("data") or {}
    for key, nested in ((".dockerconfigjson", True), (".dockercfg", False)):
        raw = data.get(key)
        if not raw:
            continue
        try:
            parsed = json.loads(base64.b64decode(raw))
        except (binascii.Error, ValueError):
            return {}
        if not isinstance(parsed, dict):
            return {}
        auths = parsed.get("auths") if nested else parsed
        return auths if isinstance(auths, dict) else {}
    return {}


def credentials_for(domain: str, pull_secrets: Sequence[dict[str, Any]]) -> list[AuthConfig]:
    """Every credential in `pull_secrets` (Secret objects) that applies to registry `domain`.

    Exact host matches come before glob matches, in secret order, without duplicates.
    """
    exact: list[AuthConfig] = []
    globbed: list[AuthConfig] = []
    for secret in pull_secrets:
        for key, entry in _docker_config(secret).items():
            host = _key_host(str(key))
            auth = _auth_of(entry)
            if auth is None:
                continue
            if host == domain:
                exact.append(auth)
            elif "*" in host and _matches(host, domain):
                globbed.append(auth)
    found: list[AuthConfig] = []
    for auth in exact + globbed:
        if auth not in found:
            found.append(auth)
    return found
