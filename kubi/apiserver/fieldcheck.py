"""Decoding checks a Go server gets from its typed structs: unknown fields and wrong types.

Upstream's strict decoder reports unknown fields (an error under
`fieldValidation=Strict`, a warning under `Warn`), and its JSON decoder rejects
values of the wrong type with `cannot unmarshal ... into Go struct field ...`.
We walk the object against upstream's schema to say the same things.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
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


def _fits(value: Any, types: AbstractSet[str]) -> bool:
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


def _scalars_that_fit(types: frozenset[str]) -> frozenset[type]:
    """Python scalar types that always pass `_fits` for these JSON types (a float only
    sometimes fits an integer, so it is left to `_fits`)."""
    if not types:
        return frozenset({str, bool, int, float})
    fitting: set[type] = set()
    if "string" in types:
        fitting.add(str)
    if "boolean" in types:
        fitting.add(bool)
    if "integer" in types or "number" in types:
        fitting.add(int)
    if "number" in types:
        fitting.add(float)
    return frozenset(fitting)


class _Shape:
    """What the walk needs from one schema, computed once: `$ref`s resolved, types
    collected, properties looked up by name (schemas are static, so ids are stable)."""

    __slots__ = (
        "extra",
        "extra_scalars",
        "item_scalars",
        "items",
        "open",
        "props",
        "schema",
        "types",
    )

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.types = frozenset(schemas.types_of(schema))
        resolved = schemas.resolve(schema) or {}
        # name -> (resolved child schema, its struct name or None to keep the parent's,
        #          scalar types that need no further look)
        self.props: dict[str, tuple[Schema | None, str | None, frozenset[type]]] = {}
        for key, child in (resolved.get("properties") or {}).items():
            ref = schemas.ref_name(child)
            child_schema = schemas.resolve(child)
            self.props[key] = (child_schema, ref.rsplit(".", 1)[-1] if ref else None,
                               _scalars_of(child_schema))
        extra = resolved.get("additionalProperties")
        self.open = isinstance(extra, dict)  # unlisted keys are allowed (a map)
        self.extra: Schema | None = schemas.resolve(extra) if self.open else None
        self.extra_scalars = _scalars_of(self.extra)
        self.items = schemas.items_schema(schema) if "array" in self.types or not self.types \
            else None
        self.item_scalars = _scalars_of(self.items)


def _scalars_of(schema: Schema | None) -> frozenset[type]:
    # A missing schema checks nothing at all.
    if schema is None:
        return frozenset({str, bool, int, float, dict, list})
    return _scalars_that_fit(frozenset(schemas.types_of(schema)))


_SHAPES: dict[int, _Shape] = {}


def _shape(schema: Schema) -> _Shape:
    shape = _SHAPES.get(id(schema))
    if shape is None or shape.schema is not schema:
        shape = _SHAPES[id(schema)] = _Shape(schema)
    return shape


def _walk(value: Any, schema: Schema | None, path: str, struct: str, found: Findings) -> None:
    if schema is None or value is None or found.type_error:
        return
    shape = _shape(schema)
    if not _fits(value, shape.types):
        found.type_error = (f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
                            f"{struct}.{path} of type {_go_type(schema)}")
        return
    if isinstance(value, dict):
        props = shape.props
        if props:
            for key, child in value.items():
                entry = props.get(key)
                if entry is None:
                    if not shape.open:
                        found.unknown.append(f"{path}.{key}" if path else key)
                        found.places.append((value, key))
                    continue
                # Most fields are scalars that fit: no call for them.
                if child is None or type(child) in entry[2]:
                    continue
                _walk(child, entry[0], f"{path}.{key}" if path else key,
                      entry[1] or struct, found)
        elif shape.open:
            extra, fitting = shape.extra, shape.extra_scalars
            for key, child in value.items():
                if child is None or type(child) in fitting:
                    continue  # labels, annotations and the like: plain strings
                _walk(child, extra, f"{path}[{key}]", struct, found)
    elif isinstance(value, list):
        items, fitting = shape.items, shape.item_scalars
        if items is not None:
            for i, child in enumerate(value):
                if child is None or type(child) in fitting:
                    continue
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
