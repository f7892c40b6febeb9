"""Decoding checks a Go server gets from its typed structs: unknown fields and wrong types.

Upstream's strict decoder reports unknown fields (an error under
`fieldValidation=Strict`, a warning under `Warn`), and its JSON decoder rejects
values of the wrong type with `cannot unmarshal ... into Go struct field ...`.
We walk the object against upstream's schema to say the same things.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubi.api import errors, schemas

Schema = dict[str, Any]

_GO_TYPES = {"int32": "int32", "int64": "int64", "double": "float64", "byte": "[]uint8"}


@dataclass
class Findings:
    unknown: list[str] = field(default_factory=list)
    type_error: str = ""
    # Where each unknown field sits, so it can be dropped as a Go decoder would.
    places: list[tuple[dict[str, Any], str]] = field(default_factory=list)

    def prune(self) -> None:
        for container, key in self.places:
            container.pop(key, None)


def _go_type(schema: Schema) -> str:
    types = schemas.types_of(schema)
    if "integer" in types and "string" in types:
        return "intstr.IntOrString"
    if "integer" in types:
        return _GO_TYPES.get(str(schema.get("format")), "int64")
    if "number" in types:
        return "float64"
    if "boolean" in types:
        return "bool"
    if "string" in types:
        return "string"
    if "array" in types:
        return "[]"
    return "map"


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _fits(value: Any, types: set[str]) -> bool:
    if value is None or not types:
        return True
    if isinstance(value, bool):
        return "boolean" in types
    if isinstance(value, int):
        return bool(types & {"integer", "number"})
    if isinstance(value, float):
        return "number" in types or ("integer" in types and value.is_integer())
    if isinstance(value, str):
        return "string" in types
    if isinstance(value, list):
        return "array" in types
    return "object" in types


def _walk(value: Any, schema: Schema | None, path: str, struct: str, found: Findings) -> None:
    if schema is None or value is None or found.type_error:
        return
    types = schemas.types_of(schema)
    if not _fits(value, types):
        found.type_error = (f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
                            f"{struct}.{path} of type {_go_type(schema)}")
        return
    if isinstance(value, dict):
        resolved = schemas.resolve(schema) or {}
        props: dict[str, Any] = resolved.get("properties") or {}
        extra = resolved.get("additionalProperties")
        name = struct
        if props:
            for key, child in value.items():
                child_path = f"{path}.{key}" if path else key
                if key in props:
                    ref = schemas.ref_name(props[key])
                    child_struct = ref.rsplit(".", 1)[-1] if ref else name
                    _walk(child, schemas.resolve(props[key]), child_path, child_struct, found)
                elif not isinstance(extra, dict):
                    found.unknown.append(child_path)
                    found.places.append((value, key))
        elif isinstance(extra, dict):
            for key, child in value.items():
                _walk(child, schemas.resolve(extra), f"{path}[{key}]", name, found)
    elif isinstance(value, list):
        items = schemas.items_schema(schema)
        for i, child in enumerate(value):
            _walk(child, items, f"{path}[{i}]", struct, found)


def check(obj: dict[str, Any], group: str, version: str, kind: str) -> Findings:
    found = Findings()
    schema = schemas.for_kind(group, version, kind)
    if schema is not None:
        _walk(obj, schema, "", kind, found)
    return found


def enforce(obj: dict[str, Any], group: str, version: str, kind: str,
            validation: str) -> list[str]:
    """Apply `fieldValidation`; returns the warnings to send, raises under Strict."""
    found = check(obj, group, version, kind)
    if found.type_error:
        raise errors.bad_request(
            f'{kind} in version "{version}" cannot be handled as a {kind}: {found.type_error}')
    found.prune()
    if not found.unknown or validation == "Ignore":
        return []
    messages = [f'unknown field "{p}"' for p in found.unknown]
    if validation == "Strict":
        raise errors.bad_request("strict decoding error: " + ", ".join(messages))
    return messages
