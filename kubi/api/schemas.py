"""Upstream's OpenAPI schemas for the built-in types, loaded from data.

The PyPI package `kubernetes-validate` ships upstream's definitions (with the
`x-kubernetes-patch-*` and list-map extensions) as JSON; we read the version
matching the API we claim to serve. The only hand-made schemas are the Ingress
versions removed in 1.22 (not in the package), derived from their v1 successors.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

SCHEMA_VERSION = "v1.32.0-local"

Schema = dict[str, Any]

_REF = "#/$defs/"


@functools.cache
def definitions() -> dict[str, Schema]:
    """All definitions by upstream name (`io.k8s.api.apps.v1.Deployment`)."""
    root = resources.files("kubernetes_validate") / "kubernetes-json-schema" / SCHEMA_VERSION
    data = json.loads((root / "_definitions.json").read_text())
    defs: dict[str, Schema] = data["$defs"]
    defs.update(legacy_ingress_definitions(defs))
    return defs


# ---------------------------------------------------------------------------
# Ingress before 1.22: extensions/v1beta1 and networking.k8s.io/v1beta1.

_V1 = "io.k8s.api.networking.v1."
# v1 definitions whose v1beta1 twins have the same fields (refs renamed).
_INGRESS_SAME_SHAPE = ("HTTPIngressPath", "HTTPIngressRuleValue", "Ingress", "IngressList",
                       "IngressRule", "IngressStatus", "IngressTLS")
_INGRESS_CLASS_SAME_SHAPE = ("IngressClass", "IngressClassList", "IngressClassParametersReference",
                             "IngressClassSpec")
_TOP_LEVEL = ("Ingress", "IngressList", "IngressClass", "IngressClassList")


def _renamed_refs(schema: Any, prefix: str, local: frozenset[str]) -> Any:
    """`schema` with references to the `local` v1 definitions pointing at `prefix`."""
    if isinstance(schema, list):
        return [_renamed_refs(item, prefix, local) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _renamed_refs(value, prefix, local) for key, value in schema.items()}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF + _V1):
        short = ref.removeprefix(_REF + _V1)
        if short in local:
            out["$ref"] = _REF + prefix + short
    return out


def _v1beta1_ingress_backend() -> Schema:
    return {
        "description": "IngressBackend describes all endpoints for a given service and port.",
        "properties": {
            "resource": {
                "$ref": _REF + "io.k8s.api.core.v1.TypedLocalObjectReference",
                "description": "Resource is an ObjectRef to another Kubernetes resource in the "
                               "namespace of the Ingress object. If resource is specified, "
                               "serviceName and servicePort must not be specified.",
            },
            "serviceName": {"description": "Specifies the name of the referenced service.",
                            "type": ["string", "null"]},
            "servicePort": {"$ref": _REF + "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
                            "description": "Specifies the port of the referenced service."},
        },
        "type": ["object", "null"],
    }


def legacy_ingress_definitions(v1: dict[str, Schema]) -> dict[str, Schema]:
    """Definitions for the v1beta1 Ingress kinds (and IngressClass), built from `v1`.

    Names and group-version-kinds are upstream's (`io.k8s.api.extensions.v1beta1.Ingress`);
    the differences from v1 are the flat service backend and `spec.backend`.
    """
    out: dict[str, Schema] = {}
    for group, package, kinds in (
            ("extensions", "io.k8s.api.extensions.v1beta1.", _INGRESS_SAME_SHAPE),
            ("networking.k8s.io", "io.k8s.api.networking.v1beta1.",
             _INGRESS_SAME_SHAPE + _INGRESS_CLASS_SAME_SHAPE)):
        local = frozenset((*kinds, "IngressBackend", "IngressSpec"))
        api_version = f"{group}/v1beta1"
        for kind in kinds:
            schema = _renamed_refs(copy.deepcopy(v1[_V1 + kind]), package, local)
            props = schema.get("properties", {})
            if "apiVersion" in props and "enum" in props["apiVersion"]:
                props["apiVersion"]["enum"] = [api_version]
            if kind in _TOP_LEVEL:
                schema["x-kubernetes-group-version-kind"] = [
                    {"group": group, "kind": kind, "version": "v1beta1"}]
            out[package + kind] = schema
        # v1beta1 defaulted pathType instead of requiring it.
        path = out[package + "HTTPIngressPath"]
        path["required"] = [name for name in path["required"] if name != "pathType"]
        out[package + "IngressBackend"] = _v1beta1_ingress_backend()
        spec = _renamed_refs(copy.deepcopy(v1[_V1 + "IngressSpec"]), package, local)
        default_backend = spec["properties"].pop("defaultBackend")
        default_backend["description"] = (
            "A default backend capable of servicing requests that don't match any rule. At "
            "least one of 'backend' or 'rules' must be specified.")
        spec["properties"]["backend"] = default_backend
        spec["properties"] = dict(sorted(spec["properties"].items()))
        out[package + "IngressSpec"] = spec
    return out


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
