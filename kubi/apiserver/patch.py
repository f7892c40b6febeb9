"""The three PATCH types of the Kubernetes API, applied as upstream's API server does.

* `application/json-patch+json`: RFC 6902, with the quirks of the json-patch
  library upstream vendors (gopkg.in/evanphx/json-patch.v4).
* `application/merge-patch+json`: RFC 7386.
* `application/strategic-merge-patch+json`: upstream's strategic merge patch
  (k8s.io/apimachinery/pkg/util/strategicpatch), driven by the
  `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` extensions of
  the kind's OpenAPI schema, as the server-side merge uses the Go struct tags
  they mirror (`x-kubernetes-list-type` is not consulted, like upstream).

Status codes follow upstream's patch handler: undecodable bodies are 400, a
failed JSON-patch operation is a bare 422 ("the server rejected our request due
to an error in our request"), SMP format errors are 400 or 422 as upstream's
`interpretStrategicMergePatchError` decides and any other SMP error is the 500
with an empty reason that upstream answers for errors that are not a Status.
Inputs are never mutated.
"""

from __future__ import annotations

import copy
import json
import re
from decimal import Decimal
from typing import Any

from kubi.api import schemas
from kubi.api.errors import INVALID, Cause, StatusError, bad_request, invalid_object, too_large

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
# Upstream's order in the 415 message (endpoints/installer.go).
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)

MAX_JSON_PATCH_OPERATIONS = 10000

# NewGenericServerResponse(422, ...) drops the detail and says only this.
REJECTED = "the server rejected our request due to an error in our request"

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_DELETE_PREFIX = "$deleteFromPrimitiveList"
_ORDER_PREFIX = "$setElementOrder"
_STRATEGY = "x-kubernetes-patch-strategy"
_MERGE_KEY = "x-kubernetes-patch-merge-key"

Obj = dict[str, Any]


# --- dispatch ---------------------------------------------------------------


def apply_patch(content_type: str, doc: Obj, body: bytes, schema: dict[str, Any] | None, *,
                field_validation: str = "", allow_strategic: bool = True) -> Obj:
    """Apply a PATCH body of the given Content-Type to `doc`, returning the new object.

    `field_validation` is the request's fieldValidation ("" means upstream's
    default, Warn); it decides how strictly the body is decoded first, which
    changes the wording of decode errors exactly as upstream's handler does.
    `allow_strategic=False` rejects SMP with 415, as upstream does for custom
    resources. `application/apply-patch+yaml` is not handled here (415).
    """
    accepted = [t for t in PATCH_TYPES if allow_strategic or t != STRATEGIC_MERGE_PATCH]
    media = content_type
    if content_type.find(";") > 0:
        media = content_type[:content_type.index(";")]
    if media not in accepted or media == APPLY_PATCH:
        raise StatusError(415, "UnsupportedMediaType",
                          "the body of the request was in an unknown format - accepted media "
                          "types include: " + ", ".join(accepted))
    strict = (field_validation or "Warn") in ("Strict", "Warn")
    if media == JSON_PATCH:
        if strict:
            _check_strict_operations(_decode(body, "error decoding patch: "))
        return json_patch(doc, _decode(body, ""))
    if media == MERGE_PATCH:
        if strict:
            patch = _decode(body, "error decoding patch: ")
            if patch is not None and not isinstance(patch, dict):
                raise bad_request(f"error decoding patch: json: cannot unmarshal "
                                  f"{_json_kind(patch)} into Go value of type "
                                  f"map[string]interface {{}}")
        else:
            try:
                patch = _loads(body)
            except ValueError:
                raise bad_request("Invalid JSON Patch") from None
        return merge_patch(doc, patch)
    return strategic_merge_patch(doc, _decode(body, ""), schema)


class _GoJSONError(ValueError):
    """A body Go's encoding/json would refuse, worded as Go words it."""


def _loads(body: bytes) -> Any:
    text = body.decode("utf-8", errors="replace")
    if not text.strip(" \t\r\n"):
        raise _GoJSONError("unexpected end of JSON input")

    def reject_constant(name: str) -> Any:  # NaN / Infinity are not JSON for Go
        raise _GoJSONError(f"invalid character {_quote_char(name.lstrip('-')[0])} "
                           "looking for beginning of value")

    try:
        return json.loads(text, parse_constant=reject_constant)
    except json.JSONDecodeError as err:
        raise _GoJSONError(_go_syntax_error(text, err)) from None


def _decode(body: bytes, prefix: str) -> Any:
    try:
        return _loads(body)
    except ValueError as err:
        raise bad_request(prefix + str(err)) from None


def _go_syntax_error(text: str, err: json.JSONDecodeError) -> str:
    """Go's SyntaxError text for the first error Python's decoder found."""
    pos = err.pos
    if err.msg.startswith("Unterminated string") or pos >= len(text):
        return "unexpected end of JSON input"
    char = text[pos]
    if err.msg.startswith("Extra data"):
        context = "after top-level value"
    elif err.msg.startswith("Expecting property name"):
        context = "looking for beginning of object key string"
    elif err.msg.startswith("Expecting ':'"):
        context = "after object key"
    elif err.msg.startswith("Expecting ','"):
        inside = _innermost_container(text, pos)
        context = "after object key:value pair" if inside == "{" else "after array element"
    elif err.msg.startswith("Invalid control character"):
        context = "in string literal"
    elif err.msg.startswith("Invalid \\escape"):
        char = text[pos + 1] if pos + 1 < len(text) else char
        context = "in string escape code"
    elif char in _LITERALS:
        return _literal_error(text, pos, _LITERALS[char])
    else:
        context = "looking for beginning of value"
    return f"invalid character {_quote_char(char)} {context}"


_LITERALS = {"t": "true", "f": "false", "n": "null"}


def _literal_error(text: str, start: int, literal: str) -> str:
    """Go's complaint about a misspelt true/false/null."""
    for offset, expected in enumerate(literal):
        at = start + offset
        if at >= len(text):
            return "unexpected end of JSON input"
        if text[at] != expected:
            return (f"invalid character {_quote_char(text[at])} in literal {literal} "
                    f"(expecting {_quote_char(expected)})")
    return f"invalid character {_quote_char(text[start + len(literal)])} after top-level value"


def _innermost_container(text: str, end: int) -> str:
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:end]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _quote_char(char: str) -> str:
    """Go's quoteChar: the offending byte in single quotes, escaped like strconv.Quote."""
    byte = char.encode("utf-8")[0]
    if byte == ord("'"):
        return "'\\''"
    if byte == ord('"'):
        return "'\"'"
    named = {7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r",
             92: "\\\\"}
    if byte in named:
        return f"'{named[byte]}'"
    if byte < 0x20 or byte == 0x7F:
        return f"'\\x{byte:02x}'"
    return f"'{chr(byte)}'"


def _check_strict_operations(ops: Any) -> None:
    """What upstream's strict decode into []jsonPatchOp rejects (Warn/Strict only)."""
    if ops is None:
        return
    if not isinstance(ops, list):
        raise bad_request(f"error decoding patch: json: cannot unmarshal {_json_kind(ops)} "
                          "into Go value of type []handlers.jsonPatchOp")
    for op in ops:
        if op is None:
            continue
        if not isinstance(op, dict):
            raise bad_request(f"error decoding patch: json: cannot unmarshal {_json_kind(op)} "
                              "into Go value of type handlers.jsonPatchOp")
        for name, value in op.items():
            if name in ("op", "path", "from") and value is not None \
                    and not isinstance(value, str):
                raise bad_request(f"error decoding patch: json: cannot unmarshal "
                                  f"{_json_kind(value)} into Go struct field jsonPatchOp.{name} "
                                  "of type string")


def _json_kind(value: Any) -> str:
    """The JSON kind Go names in an UnmarshalTypeError."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    return "number"


def _not_an_object(value: Any) -> StatusError:
    """Upstream's 422 when the patched document does not decode into the kind."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    detail = ("couldn't get version/kind; json parse error: json: cannot unmarshal "
              f"{_json_kind(value)} into Go value of type struct "
              '{ APIVersion string "json:\\"apiVersion,omitempty\\""; '
              'Kind string "json:\\"kind,omitempty\\"" }')
    cause = Cause(INVALID, f"Invalid value: {json.dumps(text, ensure_ascii=False)}: {detail}",
                  "patch")
    return invalid_object("", "", "", [cause])


# --- JSON patch (RFC 6902) --------------------------------------------------


class PatchFailure(Exception):
    """Why a patch failed, chained as the cause of the bare 422 upstream sends."""


class JSONPatchOperationError(PatchFailure):
    """A JSON-patch operation that does not apply."""


_INDEX = re.compile(r"[+-]?[0-9]+")


def json_patch(doc: Obj, ops: Any) -> Obj:
    """Apply an RFC 6902 patch (already JSON-decoded) to `doc`."""
    if ops is None:  # `null` decodes to an empty patch upstream
        return copy.deepcopy(doc)
    if not isinstance(ops, list):
        raise bad_request(f"json: cannot unmarshal {_json_kind(ops)} into Go value of type "
                          "jsonpatch.Patch")
    for op in ops:
        if op is not None and not isinstance(op, dict):
            raise bad_request(f"json: cannot unmarshal {_json_kind(op)} into Go value of type "
                              "jsonpatch.Operation")
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise too_large(f"Request entity too large: The allowed maximum operations in a JSON "
                        f"patch is {MAX_JSON_PATCH_OPERATIONS}, got {len(ops)}")
    root: Any = copy.deepcopy(doc)
    for op in ops:
        try:
            root = _apply_operation(root, copy.deepcopy(op or {}))
        except JSONPatchOperationError as err:
            raise StatusError(422, "Invalid", REJECTED) from err
    if not isinstance(root, dict):
        raise _not_an_object(root)
    return root


def _op_string(op: Obj, name: str, kind: str) -> str:
    value = op.get(name)
    if value is None:
        raise JSONPatchOperationError(f"{kind} operation failed to decode {name}: "
                                      f"operation missing {name} field: missing value")
    if not isinstance(value, str):
        raise JSONPatchOperationError(f"{kind} operation failed to decode {name}: json: cannot "
                                      f"unmarshal {_json_kind(value)} into Go value of type "
                                      "string")
    return value


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _parse_index(key: str) -> int:
    if not _INDEX.fullmatch(key):
        raise JSONPatchOperationError(f'strconv.Atoi: parsing "{key}": invalid syntax')
    return int(key)


def _list_index(items: list[Any], key: str) -> int:
    """An existing position in `items` (negative counts from the end, as upstream allows)."""
    index = _parse_index(key)
    if index < 0:
        if index < -len(items):
            raise JSONPatchOperationError(f"Unable to access invalid index: {index}: "
                                          "invalid index referenced")
        index += len(items)
    if index >= len(items):
        raise JSONPatchOperationError(f"Unable to access invalid index: {index}: "
                                      "invalid index referenced")
    return index


def _container(root: Any, path: str) -> tuple[Any, str] | None:
    """The object or array holding the last token of `path`, and that token.

    Like upstream, the first token (before the first "/") is never looked at,
    and a missing, null or scalar intermediate value means "missing path".
    """
    tokens = path.split("/")
    if len(tokens) < 2:
        return None
    node = root
    for token in tokens[1:-1]:
        key = _unescape(token)
        if isinstance(node, dict):
            child = node.get(key)
        else:
            try:
                child = node[_list_index(node, key)]
            except JSONPatchOperationError:
                return None
        if not isinstance(child, dict | list):
            return None
        node = child
    return node, _unescape(tokens[-1])


def _get(node: Any, key: str) -> Any:
    if isinstance(node, dict):
        return node.get(key)
    return node[_list_index(node, key)]


def _add(node: Any, key: str, value: Any) -> None:
    if isinstance(node, dict):
        node[key] = value
        return
    if key == "-":
        node.append(value)
        return
    try:
        index = _parse_index(key)
    except JSONPatchOperationError as err:
        raise JSONPatchOperationError(f"value was not a proper array index: '{key}': {err}") \
            from None
    if index > len(node) or index < -(len(node) + 1):
        raise JSONPatchOperationError(f"Unable to access invalid index: {index}: "
                                      "invalid index referenced")
    if index < 0:
        index += len(node) + 1
    node.insert(index, value)


def _remove(node: Any, key: str) -> None:
    if isinstance(node, dict):
        if key not in node:
            raise JSONPatchOperationError(f"Unable to remove nonexistent key: {key}: "
                                          "missing value")
        del node[key]
        return
    del node[_list_index(node, key)]


def _apply_operation(root: Any, op: Obj) -> Any:
    kind = op.get("op")
    kind = kind if isinstance(kind, str) else "unknown"
    if kind == "add":
        path = _op_string(op, "path", kind)
        found = _container(root, path)
        if found is None:
            raise JSONPatchOperationError(f'add operation does not apply: doc is missing path: '
                                          f'"{path}": missing value')
        try:
            _add(*found, op.get("value"))
        except JSONPatchOperationError as err:
            raise JSONPatchOperationError(f"error in add for path: '{path}': {err}") from None
    elif kind == "remove":
        path = _op_string(op, "path", kind)
        found = _container(root, path)
        if found is None:
            raise JSONPatchOperationError(f'remove operation does not apply: doc is missing '
                                          f'path: "{path}": missing value')
        try:
            _remove(*found)
        except JSONPatchOperationError as err:
            raise JSONPatchOperationError(f"error in remove for path: '{path}': {err}") from None
    elif kind == "replace":
        path = _op_string(op, "path", kind)
        value = op.get("value")
        if path == "":
            if not isinstance(value, dict | list):
                raise JSONPatchOperationError("replace operation value must be object or array")
            return value
        found = _container(root, path)
        if found is None:
            raise JSONPatchOperationError(f"replace operation does not apply: doc is missing "
                                          f"path: {path}: missing value")
        node, key = found
        if isinstance(node, dict):  # upstream adds a missing key instead of failing
            node[key] = value
        else:
            try:
                node[_list_index(node, key)] = value
            except JSONPatchOperationError:
                raise JSONPatchOperationError(f"replace operation does not apply: doc is "
                                              f"missing key: {path}: missing value") from None
    elif kind == "move":
        source = _op_string(op, "from", kind)
        found = _container(root, source)
        if found is None:
            raise JSONPatchOperationError(f"move operation does not apply: doc is missing from "
                                          f"path: {source}: missing value")
        node, key = found
        try:
            value = _get(node, key)
            _remove(node, key)
        except JSONPatchOperationError as err:
            raise JSONPatchOperationError(f"error in move for path: '{key}': {err}") from None
        path = _op_string(op, "path", kind)
        found = _container(root, path)
        if found is None:
            raise JSONPatchOperationError(f"move operation does not apply: doc is missing "
                                          f"destination path: {path}: missing value")
        try:
            _add(*found, value)
        except JSONPatchOperationError as err:
            raise JSONPatchOperationError(f"error in move for path: '{path}': {err}") from None
    elif kind == "copy":
        source = _op_string(op, "from", kind)
        found = _container(root, source)
        if found is None:
            raise JSONPatchOperationError(f"copy operation does not apply: doc is missing from "
                                          f"path: {source}: missing value")
        try:
            value = copy.deepcopy(_get(*found))  # a missing object key copies as null upstream
        except JSONPatchOperationError as err:
            raise JSONPatchOperationError(f"error in copy for from: '{source}': {err}") from None
        path = _op_string(op, "path", kind)
        found = _container(root, path)
        if found is None:
            raise JSONPatchOperationError(f"copy operation does not apply: doc is missing "
                                          f"destination path: {path}: missing value")
        try:
            _add(*found, value)
        except JSONPatchOperationError as err:
            raise JSONPatchOperationError(f"error while adding value during copy: {err}") \
                from None
    elif kind == "test":
        path = _op_string(op, "path", kind)
        if path == "":
            actual = root
        else:
            found = _container(root, path)
            if found is None:
                raise JSONPatchOperationError(f"test operation does not apply: is missing path: "
                                              f"{path}: missing value")
            try:
                actual = _get(*found)
            except JSONPatchOperationError as err:
                raise JSONPatchOperationError(f"error in test for path: '{path}': {err}") \
                    from None
        if _key(actual) != _key(op.get("value")):
            raise JSONPatchOperationError(f"testing value {path} failed: test failed")
    else:
        raise JSONPatchOperationError(f"Unexpected kind: {kind}")
    return root


# --- JSON merge patch (RFC 7386) --------------------------------------------


def merge_patch(doc: Obj, patch: Any) -> Obj:
    """Apply an RFC 7386 merge patch (already JSON-decoded) to `doc`."""
    if isinstance(patch, list):
        # The patch replaces the document, which then is no object of the kind.
        raise _not_an_object(_without_nulls(patch))
    if not isinstance(patch, dict):
        raise bad_request("Invalid JSON Patch")
    return _merge_objects(copy.deepcopy(doc), patch)


def _merge_objects(target: Obj, patch: Obj) -> Obj:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = _merge_objects(target[key], value)
        else:
            target[key] = _without_nulls(value)
    return target


def _without_nulls(value: Any) -> Any:
    """A patch value taken whole: members set to null are dropped at every depth."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


# --- strategic merge patch --------------------------------------------------


def strategic_merge_patch(doc: Obj, patch: Any, schema: dict[str, Any] | None) -> Obj:
    """Apply a strategic merge patch (already JSON-decoded) to `doc`.

    `schema` is the kind's top-level schema; None (no schema known) merges maps
    and replaces lists, directives still apply.
    """
    if patch is None:  # decodes to a nil map upstream: nothing to do
        return copy.deepcopy(doc)
    if not isinstance(patch, dict):
        raise bad_request(f"json: cannot unmarshal {_json_kind(patch)} into Go value of type "
                          "map[string]interface {}")
    return _merge_map(copy.deepcopy(doc), copy.deepcopy(patch), schema)


def _internal(message: str) -> StatusError:
    """How upstream answers an error that is not a Status: 500 with an empty reason."""
    return StatusError(500, "", message)


_NO_LIST_OF_LISTS = "lists of lists are not supported"


def _unprocessable(reason: str) -> StatusError:
    """Upstream's bare 422; the reason it drops is kept as the exception's cause."""
    error = StatusError(422, "Invalid", REJECTED)
    error.__cause__ = PatchFailure(reason)
    return error


def _field(schema: dict[str, Any] | None, key: str) -> tuple[dict[str, Any] | None, str, str]:
    """The schema of field `key` with its patch strategy and merge key.

    The extensions sit on the property (next to a `$ref`), so they are read
    before the property is resolved.
    """
    obj = schemas.resolve(schema)
    if obj is None:
        return None, "", ""
    prop = (obj.get("properties") or {}).get(key)
    if prop is None:
        extra = obj.get("additionalProperties")
        return (extra if isinstance(extra, dict) else None), "", ""
    resolved = schemas.resolve(prop) or {}
    strategy = prop.get(_STRATEGY, resolved.get(_STRATEGY, ""))
    merge_key = prop.get(_MERGE_KEY, resolved.get(_MERGE_KEY, ""))
    return prop, strategy, merge_key


def _strategy(strategies: str) -> str:
    """The list/map strategy once `retainKeys` is set aside (it acts via `$retainKeys`)."""
    parts = strategies.split(",") if strategies else []
    if len(parts) == 1:
        return "" if parts[0] == "retainKeys" else parts[0]
    if len(parts) == 2 and "retainKeys" in parts:
        return parts[1] if parts[0] == "retainKeys" else parts[0]
    if parts:
        raise _internal(f"unexpected patch strategy: [{' '.join(parts)}]")
    return ""


def _extract_key(key: str, prefix: str) -> str:
    head, sep, rest = key.partition("/")
    if not sep or head != prefix:
        if prefix == _DELETE_PREFIX:
            raise bad_request("invalid patch format of primitive list")
        raise bad_request("invalid patch format of setElementOrder list")
    return rest


def _merge_map(original: Obj, patch: Obj, schema: dict[str, Any] | None) -> Obj:
    if _DIRECTIVE in patch:
        directive = patch[_DIRECTIVE]
        if directive == "replace":
            del patch[_DIRECTIVE]
            return dict(_literal(patch)[0])
        if directive == "delete":
            return {}
        raise _internal(f"unknown patch type: {_go_s(directive)} in map: {_go_v(patch)}")
    _apply_retain_keys(original, patch)
    _merge_ordered_lists(original, patch, schema)
    for key, value in list(patch.items()):
        target, deleting = key, False
        if key.startswith(_DELETE_PREFIX):
            deleting = True
            target = _extract_key(key, _DELETE_PREFIX) or key
        if value is None:
            original.pop(target, None)
            continue
        if target not in original or _go_type(original[target]) != _go_type(value):
            if not deleting:
                _set_literal(original, target, value)
            continue
        current = original[target]
        if isinstance(current, dict):
            field_schema, strategies, _ = _field(schema, target)
            if _strategy(strategies) == "replace":
                _set_literal(original, target, value)
            else:
                original[target] = _merge_map(current, value, field_schema)
        elif isinstance(current, list):
            field_schema, strategies, merge_key = _field(schema, target)
            original[target] = _merge_list_field(current, value, field_schema,
                                                 _strategy(strategies), merge_key, deleting)
        else:
            original[target] = value
    return original


def _literal(value: Any) -> tuple[Any, bool]:
    """A patch value taken as it is, cleaned as upstream's decoding would leave it.

    Null members are dropped, maps carrying `$patch` vanish (upstream's
    removeDirectives) and so do the parallel directive keys a typed decode
    ignores. The flag says whether anything is left to store.
    """
    if isinstance(value, dict):
        if _DIRECTIVE in value:
            return None, False
        cleaned: Obj = {}
        for key, member in value.items():
            if member is None or key == _RETAIN_KEYS or key.startswith(
                    (_DELETE_PREFIX + "/", _ORDER_PREFIX + "/")):
                continue
            member, keep = _literal(member)
            if keep:
                cleaned[key] = member
        return cleaned, True
    if isinstance(value, list):
        items = [_literal(item) for item in value]
        return [item for item, keep in items if keep], True
    return value, True


def _set_literal(original: Obj, key: str, value: Any) -> None:
    cleaned, keep = _literal(value)
    if keep:
        original[key] = cleaned
    else:
        original.pop(key, None)


def _apply_retain_keys(original: Obj, patch: Obj) -> None:
    """`$retainKeys`: drop every key of `original` the list does not name."""
    if _RETAIN_KEYS not in patch:
        return
    retain = patch.pop(_RETAIN_KEYS)
    if not isinstance(retain, list):
        raise bad_request("invalid patch format of retainKeys")
    kept = {_key(name) for name in retain}
    for key, value in patch.items():
        if value is None or key.startswith((_DELETE_PREFIX, _ORDER_PREFIX)):
            continue
        if _key(key) not in kept:
            raise bad_request("invalid patch format of retainKeys")
    for key in list(original):
        if _key(key) not in kept:
            del original[key]


def _merge_ordered_lists(original: Obj, patch: Obj, schema: dict[str, Any] | None) -> None:
    """Merge each list named by a `$setElementOrder/<field>` and order it as told.

    Precedence of order: the directive's list, then the patch list, then the
    live list.
    """
    for directive in [k for k in patch if k.startswith(_ORDER_PREFIX)]:
        order = patch.pop(directive)
        if not isinstance(order, list):
            raise _internal(_bad_arg_type("[]interface {}", order))
        field = _extract_key(directive, _ORDER_PREFIX)
        in_original, in_patch = field in original, field in patch
        live, wanted = original.get(field), patch.get(field)
        if in_original and not isinstance(live, list):
            raise _internal(_bad_arg_type("[]interface {}", live))
        if in_patch and not isinstance(wanted, list):
            raise _internal(_bad_arg_type("[]interface {}", wanted))
        live_items: list[Any] = live if isinstance(live, list) else []
        patch_items: list[Any] = wanted if isinstance(wanted, list) else []
        field_schema, strategies, merge_key = _field(schema, field)
        strategy = _strategy(strategies)
        _check_order(patch_items, order, merge_key)
        if in_original and in_patch:
            merged = _merge_list_field(live_items, patch_items, field_schema, strategy,
                                       merge_key, False)
        elif in_original:
            merged = live_items
        elif in_patch:
            merged = _literal(patch_items)[0]
        else:
            continue
        if merge_key:
            ordered, server_only = _partition_maps(merged, order, merge_key)
        else:
            ordered, server_only = _partition_scalars(merged, order)
        is_map = _element_kind(live_items, patch_items) == "map"
        original[field] = _normalize_order(ordered, server_only, order, live_items, merge_key,
                                           is_map)
        patch.pop(field, None)


def _check_order(patch_items: list[Any], order: list[Any], merge_key: str) -> None:
    """Every patch item must appear in `$setElementOrder`, in the same relative order."""
    if not order or not patch_items:
        return
    items = _without_deletions(patch_items) if merge_key else patch_items
    at_item = at_order = 0
    while at_item < len(items) and at_order < len(order):
        item = items[at_item]
        if isinstance(item, dict) and _DIRECTIVE in item:
            at_item += 1
            continue
        if _merge_keys_equal(item, order[at_order], merge_key):
            at_item += 1
        at_order += 1
    if at_item < len(items) and at_order >= len(order):
        raise _internal(f"the order in patch list:\n{_go_v(patch_items)}\n doesn't match "
                        f"{_ORDER_PREFIX} list:\n{_go_v(order)}")


def _without_deletions(items: list[Any]) -> list[Any]:
    kept = []
    for item in items:
        if not isinstance(item, dict):
            raise _internal(_bad_arg_type("map[string]interface {}", item))
        if item.get(_DIRECTIVE) != "delete":
            kept.append(item)
    return kept


def _merge_keys_equal(left: Any, right: Any, merge_key: str) -> bool:
    if not merge_key:
        return _key(left) == _key(right)
    for side in (left, right):
        if not isinstance(side, dict):
            raise _internal(_bad_arg_type("map[string]interface {}", side))
        if merge_key not in side:
            raise _internal(_no_merge_key(side, merge_key))
    return _key(left[merge_key]) == _key(right[merge_key])


def _merge_list_field(live: list[Any], patch: list[Any], schema: dict[str, Any] | None,
                      strategy: str, merge_key: str, deleting: bool) -> list[Any]:
    # A `$deleteFromPrimitiveList` list deletes whatever the field's strategy.
    if strategy == "merge" or deleting:
        return _merge_list(live, patch, schemas.items_schema(schema), merge_key, deleting)
    return list(_literal(patch)[0])


def _merge_list(live: list[Any], patch: list[Any], item_schema: dict[str, Any] | None,
                merge_key: str, deleting: bool) -> list[Any]:
    if not live and not patch:
        return live
    is_map = _element_kind(live, patch) == "map"
    if not is_map:
        if deleting:
            doomed = {_key(item) for item in patch}
            return [item for item in live if _key(item) not in doomed]
        merged = _deduplicate(live + patch)
    else:
        if not merge_key:
            raise _internal("cannot merge lists without merge key for struct")
        live, patch = _apply_list_directives(live, patch, merge_key)
        merged = _merge_items(live, patch, merge_key, item_schema)
    if merge_key:
        ordered, server_only = _partition_maps(merged, patch, merge_key)
    else:
        ordered, server_only = _partition_scalars(merged, patch)
    return _normalize_order(ordered, server_only, patch, live, merge_key, is_map)


def _apply_list_directives(live: list[Any], patch: list[Any],
                           merge_key: str) -> tuple[list[Any], list[Any]]:
    """Handle `$patch: delete` / `$patch: replace` items; return (live, remaining patch)."""
    plain: list[Any] = []
    replace = False
    for item in patch:
        if _DIRECTIVE not in item:
            plain.append(item)
            continue
        directive = item[_DIRECTIVE]
        if directive == "delete":
            if merge_key not in item:
                raise _internal(_no_merge_key(item, merge_key))
            doomed = _key(item[merge_key])
            live = [x for x in live if not (merge_key in x and _key(x[merge_key]) == doomed)]
        elif directive == "replace":
            replace = True  # keep going: the other `$patch` items are pruned too
        elif directive == "merge":
            raise _internal("merging lists cannot yet be specified in the patch")
        else:
            raise _internal(f"unknown patch type: {_go_s(directive)} in map: {_go_v(item)}")
    if replace:
        return list(_literal(plain)[0]), []
    return live, plain


def _find_by_key(items: list[Any], merge_key: str, value: Any) -> int | None:
    wanted = _key(value)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _internal(f"value for key {index} is not a map")
        if merge_key in item and _key(item[merge_key]) == wanted:
            return index
    return None


def _merge_items(live: list[Any], patch: list[Any], merge_key: str,
                 item_schema: dict[str, Any] | None) -> list[Any]:
    merged = list(live)
    for item in patch:
        if merge_key not in item:
            raise _internal(_no_merge_key(item, merge_key))
        index = _find_by_key(merged, merge_key, item[merge_key])
        if index is None:
            merged.append(_literal(item)[0])
        else:
            merged[index] = _merge_map(merged[index], item, item_schema)
    return merged


def _partition_maps(items: list[Any], by: list[Any],
                    merge_key: str) -> tuple[list[Any], list[Any]]:
    """Split `items` into those whose merge key appears in `by` and the rest."""
    inside: list[Any] = []
    outside: list[Any] = []
    for item in items:
        if not isinstance(item, dict):
            raise _internal(_bad_arg_type("map[string]interface {}", item))
        if merge_key not in item:
            raise _internal(_no_merge_key(item, merge_key))
        found = _find_by_key(by, merge_key, item[merge_key]) is not None
        (inside if found else outside).append(item)
    return inside, outside


def _partition_scalars(items: list[Any], by: list[Any]) -> tuple[list[Any], list[Any]]:
    present = {_key(item) for item in by}
    inside = [item for item in items if _key(item) in present]
    outside = [item for item in items if _key(item) not in present]
    return inside, outside


def _normalize_order(ordered: list[Any], server_only: list[Any], order: list[Any],
                     server_order: list[Any], merge_key: str, is_map: bool) -> list[Any]:
    """Sort patch items by `order`, server-only items by the live order, then interleave.

    The interleave takes a server-only item first only when both it and the next
    patch item are in the live list and it came earlier there; so items new to
    the list come before the server-only items that follow them.
    """
    ordered = _sort_by(ordered, order, merge_key, is_map)
    server_only = _sort_by(server_only, server_order, merge_key, is_map)
    result: list[Any] = []
    left = right = 0
    while left < len(server_only) and right < len(ordered):
        at_left = _index_of(server_order, server_only[left], merge_key, is_map)
        at_right = _index_of(server_order, ordered[right], merge_key, is_map)
        if at_left >= 0 and at_right >= 0 and at_left < at_right:
            result.append(server_only[left])
            left += 1
        else:
            result.append(ordered[right])
            right += 1
    return result + server_only[left:] + ordered[right:]


def _sort_by(items: list[Any], order: list[Any], merge_key: str, is_map: bool) -> list[Any]:
    deletions: list[Any] = []
    if is_map:
        for item in [*items, *order]:
            if not isinstance(item, dict):
                raise _internal(_bad_arg_type("map[string]interface {}", item))
            if merge_key not in item:
                raise _internal(_no_merge_key(item, merge_key))
        deletions = [i for i in items if i.get(_DIRECTIVE) == "delete"]
        items = [i for i in items if i.get(_DIRECTIVE) != "delete"]

    def position(item: Any) -> int:
        found = _index_of(order, item, merge_key, is_map)
        return found if found >= 0 else len(order)

    return sorted(items, key=position) + deletions


def _index_of(items: list[Any], item: Any, merge_key: str, is_map: bool) -> int:
    def identity(value: Any) -> Any:
        if is_map:
            return value.get(merge_key) if isinstance(value, dict) else None
        return value

    wanted = _key(identity(item))
    for index, candidate in enumerate(items):
        if _key(identity(candidate)) == wanted:
            return index
    return -1


def _deduplicate(items: list[Any]) -> list[Any]:
    """Upstream's in-place dedup: a duplicate is overwritten by the last element."""
    items = list(items)
    last = len(items) - 1
    i = 0
    while i < last:
        j = i + 1
        while j <= last:
            if _key(items[i]) == _key(items[j]):
                items[j] = items[last]
                items = items[:last]
                last -= 1
                j -= 1
            j += 1
        i += 1
    return items


def _element_kind(*lists: list[Any]) -> str:
    """'map' or the scalar type all elements share; mixed element types are an error."""
    first: str | None = None
    for items in lists:
        for item in items:
            kind = _go_type(item)
            if first is None:
                if isinstance(item, list):
                    raise _unprocessable(_NO_LIST_OF_LISTS)
                first = kind
            elif kind != first:
                raise _internal("list element types are not identical: "
                                f"{_go_v([list(x) for x in lists])}")
    if first is None:
        raise _internal("no elements in any of the given slices")
    return "map" if first == "map[string]interface {}" else first


# --- Go-compatible comparisons and formatting -------------------------------


def _key(value: Any) -> Any:
    """A hashable identity with Go's strictness: 1, 1.0 and true are all different."""
    if value is None:
        return ("nil",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", value)
    if isinstance(value, str):
        return ("str", value)
    return ("json", json.dumps(value, sort_keys=True))


def _go_type(value: Any) -> str:
    """The Go type a decoded JSON value has in upstream (ints are preserved as int64)."""
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    return "%!s(<nil>)"


def _go_float(value: float) -> str:
    """Go's %v of a float64: shortest digits, exponent form outside [1e-4, 1e6)."""
    if value != value or value in (float("inf"), float("-inf")):
        return "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    exp10 = len(text) - 1 + exponent
    prefix = "-" if sign else ""
    if -4 <= exp10 < 6:
        return prefix + format(Decimal(repr(abs(value))).normalize(), "f")
    mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
    return f"{prefix}{mantissa}e{'+' if exp10 >= 0 else '-'}{abs(exp10):02d}"


def _go_v(value: Any) -> str:
    """Go's %v of a decoded JSON value (maps print with sorted keys)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_v(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_v(item) for item in value) + "]"
    return str(value)


def _go_s(value: Any) -> str:
    """Go's %s of a decoded JSON value."""
    if isinstance(value, str | dict | list):
        return _go_v(value)
    if value is None:
        return "%!s(<nil>)"
    return f"%!s({_go_type(value)}={_go_v(value)})"


def _bad_arg_type(expected: str, actual: Any) -> str:
    return f"expected a {expected}, but received a {_go_type(actual)}"


def _no_merge_key(item: Obj, merge_key: str) -> str:
    return f"map: {_go_v(item)} does not contain declared merge key: {merge_key}"
