"""Upstream's OpenAPI schemas for the built-in types, loaded from data.

The PyPI package `kubernetes-validate` ships upstream's definitions (with the
`x-kubernetes-patch-*` and list-map extensions) as JSON; we read the version
matching the API we claim to serve. Nothing here is hand-written schema.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

SCHEMA_VERSION = "v1.32.0-local"

Schema = dict[str, Any]


@functools.cache
def definitions() -> dict[str, Schema]:
    """All definitions by upstream name (`io.k8s.api.apps.v1.Deployment`)."""
    root = resources.files("kubernetes_validate") / "kubernetes-json-schema" / SCHEMA_VERSION
    data = json.loads((root / "_definitions.json").read_text())
    defs: dict[str, Schema] = data["$defs"]
    return defs


@functools.cache
def _gvk_index() -> dict[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", ()):
            index.setdefault((gvk["group"], gvk["version"], gvk["kind"]), name)
    return index


def definition_name(group: str, version: str, kind: str) -> str | None:
    """The definition name for a GVK, or None for kinds upstream has no schema for."""
    return _gvk_index().get((group, version, kind))


def for_kind(group: str, version: str, kind: str) -> Schema | None:
    name = definition_name(group, version, kind)
    return definitions()[name] if name else None


def resolve(schema: Schema | None) -> Schema | None:
    """Follow `$ref` (and a single-element allOf) to the schema it names."""
    while schema is not None:
        ref = schema.get("$ref")
        if ref is None:
            all_of = schema.get("allOf")
            if all_of and len(all_of) == 1:
                schema = all_of[0]
                continue
            return schema
        schema = definitions().get(ref.rsplit("/", 1)[-1])
    return None


def ref_name(schema: Schema | None) -> str | None:
    """The definition name a property points at, if it is a reference."""
    if schema is None:
        return None
    ref = schema.get("$ref")
    if ref is None and schema.get("allOf") and len(schema["allOf"]) == 1:
        ref = schema["allOf"][0].get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else None


def property_schema(schema: Schema | None, name: str) -> Schema | None:
    """The schema of field `name` of an object schema (resolved)."""
    obj = resolve(schema)
    if obj is None:
        return None
    props = obj.get("properties")
    if props and name in props:
        return resolve(props[name])
    extra = obj.get("additionalProperties")
    if isinstance(extra, dict):
        return resolve(extra)
    return None


def items_schema(schema: Schema | None) -> Schema | None:
    """The schema of the elements of an array schema (resolved)."""
    arr = resolve(schema)
    if arr is None:
        return None
    items = arr.get("items")
    return resolve(items) if isinstance(items, dict) else None


def types_of(schema: Schema | None) -> set[str]:
    """JSON types a schema admits, ignoring the `null` every field allows here."""
    s = resolve(schema)
    if s is None:
        return set()
    if "oneOf" in s:
        return {t for alt in s["oneOf"] for t in types_of(alt)}
    t = s.get("type")
    if t is None:
        return set()
    found = {t} if isinstance(t, str) else set(t)
    found.discard("null")
    return found
