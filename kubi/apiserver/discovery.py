"""API discovery documents, legacy and aggregated (apidiscovery.k8s.io/v2).

All are derived from the resource catalogue once and served from memory.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import orjson

from kubi.api.resources import CATALOGUE, ResourceInfo

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"


def wants_aggregated(accept: str) -> str | None:
    """The aggregated content type to answer with, or None for legacy discovery."""
    for part in accept.split(","):
        params = {p.strip() for p in part.split(";")[1:]}
        if "as=APIGroupDiscoveryList" in params and "g=apidiscovery.k8s.io" in params:
            if "v=v2" in params:
                return AGGREGATED_V2
            if "v=v2beta1" in params:
                return AGGREGATED_V2BETA1
    return None


def _storage_version_hash(r: ResourceInfo) -> str:
    digest = hashlib.sha256(f"{r.group}/{r.version}/{r.kind}".encode()).digest()
    import base64

    return base64.b64encode(digest[:8]).decode()


def _versions_of(group: str) -> tuple[str, ...]:
    return CATALOGUE.group_versions()[group]


def _group_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


@functools.cache
def api_versions() -> bytes:
    return orjson.dumps({"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": [
                             {"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})


def _api_group(group: str) -> dict[str, Any]:
    versions = [{"groupVersion": _group_version(group, v), "version": v}
                for v in _versions_of(group)]
    return {"name": group, "versions": versions, "preferredVersion": versions[0]}


@functools.cache
def api_group_list() -> bytes:
    groups = [_api_group(g) for g in CATALOGUE.group_versions() if g]
    return orjson.dumps({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})


def api_group(group: str) -> bytes | None:
    if not group or group not in CATALOGUE.group_versions():
        return None
    return orjson.dumps({"kind": "APIGroup", "apiVersion": "v1", **_api_group(group)})


@functools.cache
def api_resource_list(group: str, version: str) -> bytes | None:
    resources = CATALOGUE.in_group_version(group, version)
    if not resources:
        return None
    entries: list[dict[str, Any]] = []
    for r in sorted(resources, key=lambda r: r.plural):
        entry: dict[str, Any] = {"name": r.plural, "singularName": r.singular,
                                 "namespaced": r.namespaced, "kind": r.kind,
                                 "verbs": list(r.verbs)}
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        if r.persisted:
            entry["storageVersionHash"] = _storage_version_hash(r)
        entries.append(entry)
        for sub in r.subresources:
            sub_entry: dict[str, Any] = {"name": f"{r.plural}/{sub.name}", "singularName": "",
                                         "namespaced": r.namespaced,
                                         "kind": sub.kind or r.kind, "verbs": list(sub.verbs)}
            if sub.group:
                sub_entry["group"] = sub.group
                sub_entry["version"] = sub.version
            entries.append(sub_entry)
    return orjson.dumps({"kind": "APIResourceList", "apiVersion": "v1",
                         "groupVersion": _group_version(group, version), "resources": entries})


def _aggregated_resource(r: ResourceInfo) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": "Namespaced" if r.namespaced else "Cluster",
        "singularResource": r.singular,
        "verbs": list(r.verbs),
    }
    if r.short_names:
        entry["shortNames"] = list(r.short_names)
    if r.categories:
        entry["categories"] = list(r.categories)
    subs = []
    for sub in r.subresources:
        subs.append({"subresource": sub.name,
                     "responseKind": {"group": sub.group if sub.kind else r.group,
                                      "version": sub.version if sub.kind else r.version,
                                      "kind": sub.kind or r.kind},
                     "verbs": list(sub.verbs)})
    if subs:
        entry["subresources"] = subs
    return entry


def _aggregated_group(group: str) -> dict[str, Any]:
    versions = []
    for version in _versions_of(group):
        resources = sorted(CATALOGUE.in_group_version(group, version), key=lambda r: r.plural)
        versions.append({"version": version,
                         "resources": [_aggregated_resource(r) for r in resources],
                         "freshness": "Current"})
    meta: dict[str, Any] = {"name": group} if group else {}
    return {"metadata": meta, "versions": versions}


@functools.cache
def aggregated(core: bool, content_type: str) -> bytes:
    groups = [""] if core else [g for g in CATALOGUE.group_versions() if g]
    api_version = content_type.split("v=")[1].split(";")[0]
    return orjson.dumps({"kind": "APIGroupDiscoveryList",
                         "apiVersion": f"apidiscovery.k8s.io/{api_version}",
                         "metadata": {}, "items": [_aggregated_group(g) for g in groups]})


def etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
