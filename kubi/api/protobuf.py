"""Kubernetes protobuf bodies (`application/vnd.kubernetes.protobuf`) <-> JSON dicts.

A body is the magic `k8s\\x00` followed by a runtime.Unknown envelope:
{1: TypeMeta{1: apiVersion, 2: kind}, 2: raw typed message, 3: contentEncoding,
4: contentType}. The typed message is decoded with the tables in `protobuf_types` into
exactly the JSON upstream would produce after decoding it into its Go struct:

* a field absent on the wire is absent; a present field follows Go's JSON rules, so a
  present zero value is dropped only for non-pointer `omitempty` fields (gogo writes
  every non-pointer field, so `replicas: 0` survives because DeploymentSpec.Replicas is
  a pointer, while an empty `generateName` disappears);
* empty repeated fields and maps are left out;
* Time/MicroTime/Duration/IntOrString/Quantity/RawExtension/FieldsV1 and Go slice
  types (ExtraValue, Verbs) are converted the way their hand-written Go code does.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import re
import struct
from typing import Any

import orjson

from kubi.api import protobuf_types
from kubi.api.durations import go_duration
from kubi.api.errors import StatusError, bad_request

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

# How a field's value is read: the wire type it needs and the conversion.
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
(K_INT64, K_INT32, K_UINT64, K_UINT32, K_BOOL, K_SINT64, K_SINT32, K_STRING, K_BYTES,
 K_DOUBLE, K_FLOAT, K_FIXED64, K_FIXED32, K_SFIXED64, K_SFIXED32, K_MESSAGE,
 K_MAP) = range(17)
_SCALARS: dict[str, tuple[int, int]] = {
    "int64": (K_INT64, _VARINT), "int32": (K_INT32, _VARINT), "uint64": (K_UINT64, _VARINT),
    "uint32": (K_UINT32, _VARINT), "bool": (K_BOOL, _VARINT), "sint64": (K_SINT64, _VARINT),
    "sint32": (K_SINT32, _VARINT), "string": (K_STRING, _LEN), "bytes": (K_BYTES, _LEN),
    "double": (K_DOUBLE, _FIXED64), "float": (K_FLOAT, _FIXED32),
    "fixed64": (K_FIXED64, _FIXED64), "fixed32": (K_FIXED32, _FIXED32),
    "sfixed64": (K_SFIXED64, _FIXED64), "sfixed32": (K_SFIXED32, _FIXED32),
}
_ZERO_BY_KIND: dict[int, Any] = {
    K_INT64: 0, K_INT32: 0, K_UINT64: 0, K_UINT32: 0, K_BOOL: False, K_SINT64: 0,
    K_SINT32: 0, K_STRING: "", K_BYTES: "", K_DOUBLE: 0.0, K_FLOAT: 0.0, K_FIXED64: 0,
    K_FIXED32: 0, K_SFIXED64: 0, K_SFIXED32: 0,
}
_QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


class _WireError(Exception):
    """A malformed typed message; the text reads like gogo-protobuf's errors."""


class _Message:
    """A message table compiled for the decoder: field number -> _Field."""

    __slots__ = ("fields", "name", "special")

    def __init__(self, name: str, special: str) -> None:
        self.name = name
        self.special = special
        self.fields: dict[int, _Field] = {}


class _Field:
    __slots__ = ("go_name", "inline", "json", "keep_zero", "kind", "map_value", "number",
                 "repeated", "sub", "wire")

    def __init__(self, number: int, json: str, kind: int, wire: int, repeated: bool,
                 keep_zero: bool, inline: bool, go_name: str) -> None:
        self.number = number
        self.json = json
        self.kind = kind
        self.wire = wire
        self.repeated = repeated
        self.keep_zero = keep_zero
        self.inline = inline
        self.go_name = go_name
        self.sub: _Message | None = None
        self.map_value: _Field | None = None  # maps: how the entry's value (field 2) reads


_compiled: dict[str, _Message] = {}


def _compile() -> dict[str, _Message]:
    """Turn the data tables into linked _Message objects (once, on first use)."""
    if _compiled:
        return _compiled
    messages = {name: _Message(name, protobuf_types.SPECIAL.get(name, ""))
                for name in protobuf_types.MESSAGES}

    def value_field(number: int, json: str, kind_name: str, type_name: str, flags: str,
                    go_name: str) -> _Field:
        if kind_name == "message":
            f = _Field(number, json, K_MESSAGE, _LEN, "r" in flags, True, "i" in flags,
                       go_name)
            f.sub = messages[type_name]
            return f
        kind, wire = _SCALARS[kind_name]
        keep_zero = "p" in flags or "o" not in flags
        return _Field(number, json, kind, wire, "r" in flags, keep_zero, False, go_name)

    for name, table in protobuf_types.MESSAGES.items():
        msg = messages[name]
        for number, (json, kind_name, type_name, flags, go_name) in table.items():
            if kind_name == "map":
                f = _Field(number, json, K_MAP, _LEN, False, True, False, go_name)
                if type_name in messages:
                    f.map_value = value_field(2, "", "message", type_name, "", go_name)
                else:
                    f.map_value = value_field(2, "", type_name, "", "", go_name)
            else:
                f = value_field(number, json, kind_name, type_name, flags, go_name)
            msg.fields[number] = f
    _compiled.update(messages)
    return _compiled


# --- reading the wire ----------------------------------------------------------------

def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if shift >= 64:
            raise _WireError("proto: integer overflow")
        if pos >= end:
            raise _WireError("unexpected EOF")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7


def _read_length(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos < end and buf[pos] < 0x80:  # the common one-byte length
        length = buf[pos]
        pos += 1
    else:
        length, pos = _read_varint(buf, pos, end)
    if length >= 1 << 63:
        raise _WireError("proto: negative length found during unmarshaling")
    if pos + length > end:
        raise _WireError("unexpected EOF")
    return pos + length, pos


def _skip(buf: bytes, pos: int, end: int, wire: int, msg_name: str) -> int:
    if wire == _VARINT:
        return _read_varint(buf, pos, end)[1]
    if wire == _LEN:
        return _read_length(buf, pos, end)[0]
    if wire in (_FIXED64, _FIXED32):
        pos += 8 if wire == _FIXED64 else 4
        if pos > end:
            raise _WireError("unexpected EOF")
        return pos
    if wire == 4:
        raise _WireError(f"proto: {msg_name}: wiretype end group for non-group")
    raise _WireError(f"proto: illegal wireType {wire}")


def _scalar(kind: int, buf: bytes, pos: int, end: int) -> tuple[Any, int]:
    """Read one scalar of `kind` (its wire type already checked)."""
    if kind <= K_SINT32:
        if pos < end and buf[pos] < 0x80:
            v = buf[pos]
            pos += 1
        else:
            v, pos = _read_varint(buf, pos, end)
        if kind == K_INT64:
            return (v - (1 << 64) if v >= 1 << 63 else v), pos
        if kind == K_INT32:
            v &= 0xFFFFFFFF
            return (v - (1 << 32) if v >= 1 << 31 else v), pos
        if kind == K_BOOL:
            return v != 0, pos
        if kind == K_UINT32:
            return v & 0xFFFFFFFF, pos
        if kind == K_UINT64:
            return v, pos
        if kind == K_SINT32:
            v &= 0xFFFFFFFF
        return (v >> 1) ^ -(v & 1), pos
    if kind in (K_STRING, K_BYTES):
        stop, pos = _read_length(buf, pos, end)
        if kind == K_STRING:
            return buf[pos:stop].decode("utf-8", "replace"), stop
        return base64.b64encode(buf[pos:stop]).decode("ascii"), stop
    size = 8 if kind in (K_DOUBLE, K_FIXED64, K_SFIXED64) else 4
    if pos + size > end:
        raise _WireError("unexpected EOF")
    fmt = {K_DOUBLE: "<d", K_FLOAT: "<f", K_FIXED64: "<Q", K_FIXED32: "<I",
           K_SFIXED64: "<q", K_SFIXED32: "<i"}[kind]
    return struct.unpack_from(fmt, buf, pos)[0], pos + size


def _decode_message(buf: bytes, pos: int, end: int, msg: _Message,
                    out: dict[str, Any]) -> dict[str, Any]:
    fields = msg.fields
    while pos < end:
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _read_varint(buf, pos, end)
        number = key >> 3
        wire = key & 7
        if number == 0:
            raise _WireError(f"proto: {msg.name.rsplit('.', 1)[-1]}: illegal tag 0 "
                             f"(wire type {wire})")
        f = fields.get(number)
        if f is None:
            pos = _skip(buf, pos, end, wire, msg.name.rsplit(".", 1)[-1])
            continue
        if wire != f.wire:
            if f.repeated and wire == _LEN and f.wire != _LEN:
                pos = _decode_packed(buf, pos, end, f, out)
                continue
            raise _WireError(f"proto: wrong wireType = {wire} for field {f.go_name}")
        kind = f.kind
        if kind == K_MESSAGE:
            stop, pos = _read_length(buf, pos, end)
            sub = f.sub
            assert sub is not None
            if f.inline:
                _decode_message(buf, pos, stop, sub, out)
            elif f.repeated:
                value = _decode_value(buf, pos, stop, sub)
                items = out.get(f.json)
                if items is None:
                    out[f.json] = [value]
                else:
                    items.append(value)
            elif sub.special:
                out[f.json] = _special(buf, pos, stop, sub)
            else:
                existing = out.get(f.json)
                # A message repeated on the wire merges into the first, as in Go.
                out[f.json] = _decode_message(buf, pos, stop, sub, existing
                                              if isinstance(existing, dict) else {})
            pos = stop
        elif kind == K_MAP:
            stop, pos = _read_length(buf, pos, end)
            entries = out.get(f.json)
            if entries is None:
                entries = out[f.json] = {}
            assert f.map_value is not None
            k, v = _decode_map_entry(buf, pos, stop, f.map_value)
            entries[k] = v
            pos = stop
        else:
            value, pos = _scalar(kind, buf, pos, end)
            if f.repeated:
                items = out.get(f.json)
                if items is None:
                    out[f.json] = [value]
                else:
                    items.append(value)
            elif f.keep_zero or value:
                out[f.json] = value
            else:
                out.pop(f.json, None)  # last one wins, and it is an omitted zero
    return out


def _decode_packed(buf: bytes, pos: int, end: int, f: _Field, out: dict[str, Any]) -> int:
    stop, pos = _read_length(buf, pos, end)
    items = out.setdefault(f.json, [])
    while pos < stop:
        value, pos = _scalar(f.kind, buf, pos, stop)
        items.append(value)
    if pos != stop:
        raise _WireError("unexpected EOF")
    if not items:
        del out[f.json]
    return stop


def _decode_value(buf: bytes, pos: int, end: int, msg: _Message) -> Any:
    if msg.special:
        return _special(buf, pos, end, msg)
    return _decode_message(buf, pos, end, msg, {})


def _decode_map_entry(buf: bytes, pos: int, end: int, value_field: _Field) -> tuple[str, Any]:
    key = ""
    value: Any = None
    while pos < end:
        tag, pos = _read_varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 1 and wire == _LEN:
            key, pos = _scalar(K_STRING, buf, pos, end)
        elif number == 2:
            if wire != value_field.wire:
                raise _WireError(
                    f"proto: wrong wireType = {wire} for field {value_field.go_name}")
            if value_field.kind == K_MESSAGE:
                stop, pos = _read_length(buf, pos, end)
                assert value_field.sub is not None
                value = _decode_value(buf, pos, stop, value_field.sub)
                pos = stop
            else:
                value, pos = _scalar(value_field.kind, buf, pos, end)
        elif number in (1, 2):
            raise _WireError(f"proto: wrong wireType = {wire} for field key")
        else:
            pos = _skip(buf, pos, end, wire, "entry")
    if value is None:
        value = _zero_value(value_field)
    return key, value


def _zero_value(f: _Field) -> Any:
    if f.kind != K_MESSAGE:
        return _ZERO_BY_KIND[f.kind]
    assert f.sub is not None
    return _special(b"", 0, 0, f.sub) if f.sub.special else {}


# --- types with hand-written conversions ----------------------------------------------

def _fields_by_number(buf: bytes, pos: int, end: int, wanted: dict[int, int],
                      name: str) -> dict[int, Any]:
    """Scalars of a small special message: number -> kind; other fields skipped."""
    values: dict[int, Any] = {}
    while pos < end:
        tag, pos = _read_varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        kind = wanted.get(number)
        if kind is None:
            pos = _skip(buf, pos, end, wire, name)
            continue
        expected = _LEN if kind in (K_STRING, K_BYTES) else _VARINT
        if wire != expected:
            raise _WireError(f"proto: wrong wireType = {wire} for field {name}")
        if kind == K_BYTES:
            stop, pos = _read_length(buf, pos, end)
            values[number] = buf[pos:stop]
            pos = stop
        else:
            values[number], pos = _scalar(kind, buf, pos, end)
    return values


def _special(buf: bytes, pos: int, end: int, msg: _Message) -> Any:
    how = msg.special
    if how == "time":
        if pos == end:
            return None  # Go's zero Time, which JSON writes as null
        seconds = _fields_by_number(buf, pos, end, {1: K_INT64, 2: K_INT32}, "Time").get(1, 0)
        return _format_time(seconds, 0, micro=False)
    if how == "microtime":
        if pos == end:
            return None
        v = _fields_by_number(buf, pos, end, {1: K_INT64, 2: K_INT32}, "MicroTime")
        return _format_time(v.get(1, 0), v.get(2, 0), micro=True)
    if how == "duration":
        return go_duration(_fields_by_number(buf, pos, end, {1: K_INT64}, "Duration")
                           .get(1, 0))
    if how == "intorstring":
        v = _fields_by_number(buf, pos, end, {1: K_INT64, 2: K_INT32, 3: K_STRING},
                              "IntOrString")
        kind = v.get(1, 0)
        if kind == 0:
            return v.get(2, 0)
        if kind == 1:
            return v.get(3, "")
        raise _WireError(f"impossible IntOrString.Type {kind}")
    if how == "quantity":
        text = _fields_by_number(buf, pos, end, {1: K_STRING}, "Quantity").get(1, "")
        if not text:
            return "0"
        if not _QUANTITY_RE.match(text):
            raise _WireError("quantities must match the regular expression "
                             "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
        return text
    if how == "rawjson":
        raw = _fields_by_number(buf, pos, end, {1: K_BYTES}, msg.name).get(1)
        return _embedded(raw)
    if how == "list":
        f = msg.fields[1]
        out: dict[str, Any] = {}
        _decode_message(buf, pos, end, msg, out)
        items: list[Any] = out.get(f.json, [])
        return items
    raise AssertionError(how)


def _embedded(raw: bytes | None) -> Any:
    """RawExtension/FieldsV1 bytes: JSON text, or a nested protobuf object."""
    if raw is None or raw == b"":
        return None
    if raw.startswith(MAGIC):
        return decode_body(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _WireError(f"embedded object is neither JSON nor protobuf: {exc}") from None


def _format_time(seconds: int, nanos: int, *, micro: bool) -> str:
    try:
        total_us = (seconds * 1_000_000_000 + nanos) // 1000 if micro else seconds * 1_000_000
        t = _EPOCH + _dt.timedelta(microseconds=total_us)
    except OverflowError:
        raise _WireError("Time.MarshalJSON: year outside of range [0,9999]") from None
    if micro:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the envelope ----------------------------------------------------------------------

def _split_api_version(api_version: str) -> str:
    return api_version.rsplit("/", 1)[-1]


def decode_body(data: bytes) -> dict[str, Any]:
    """A protobuf request body -> the JSON dict upstream would see, with apiVersion/kind.

    Raises StatusError 400 (BadRequest) for a missing magic, a malformed envelope or
    message, and for a kind we have no definition for.
    """
    if not data.startswith(MAGIC):
        raise bad_request("the object provided is unrecognized: provided data does not "
                          "appear to be a protobuf message, expected prefix [107 56 115 0]")
    try:
        envelope = _fields_by_number(data, len(MAGIC), len(data),
                                     {1: K_BYTES, 2: K_BYTES, 3: K_STRING, 4: K_STRING},
                                     "Unknown")
        type_meta = _fields_by_number(envelope.get(1, b""), 0, len(envelope.get(1, b"")),
                                      {1: K_STRING, 2: K_STRING}, "TypeMeta")
    except _WireError as exc:
        raise bad_request(f"the object provided is unrecognized: {exc}") from None
    api_version: str = type_meta.get(1, "")
    kind: str = type_meta.get(2, "")
    if not kind:
        raise bad_request(f"Object 'Kind' is missing in 'runtime.TypeMeta{{APIVersion:"
                          f"\"{api_version}\", Kind:\"\"}}'")
    if not api_version:
        raise bad_request(f"Object 'apiVersion' is missing in 'runtime.TypeMeta{{"
                          f"APIVersion:\"\", Kind:\"{kind}\"}}'")
    messages = _compile()
    name = protobuf_types.KINDS.get((api_version, kind))
    if name is None:
        raise StatusError(400, "BadRequest",
                          f'no kind "{kind}" is registered for version "{api_version}" in '
                          f'scheme "pkg/api/legacyscheme/scheme.go:30"')
    raw: bytes = envelope.get(2, b"")
    out: dict[str, Any] = {"kind": kind, "apiVersion": api_version}
    try:
        _decode_message(raw, 0, len(raw), messages[name], out)
    except _WireError as exc:
        version = _split_api_version(api_version)
        raise bad_request(f'{kind} in version "{version}" cannot be handled as a {kind}: '
                          f"{exc}") from None
    except RecursionError:
        raise bad_request(f"{kind}: message nested too deeply") from None
    return out


# --- encoding --------------------------------------------------------------------------

def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def _encode_scalar(f: _Field, number: int, value: Any) -> bytes:
    kind = f.kind
    key = _varint(number << 3 | f.wire)
    if kind == K_STRING:
        return _len_field(number, str(value).encode())
    if kind == K_BYTES:
        try:
            return _len_field(number, base64.b64decode(value, validate=True))
        except (binascii.Error, TypeError):
            raise ValueError(f"{f.json}: not base64: {value!r}") from None
    if kind == K_BOOL:
        return key + _varint(1 if value else 0)
    if kind in (K_SINT64, K_SINT32):
        return key + _varint((value << 1) ^ (value >> 63))
    if f.wire == _VARINT:
        return key + _varint(int(value))
    fmt = {K_DOUBLE: "<d", K_FLOAT: "<f", K_FIXED64: "<Q", K_FIXED32: "<I",
           K_SFIXED64: "<q", K_SFIXED32: "<i"}[kind]
    return key + struct.pack(fmt, value)


def _encode_message(obj: dict[str, Any], msg: _Message) -> bytes:
    parts: list[bytes] = []
    for f in sorted(msg.fields.values(), key=lambda f: f.number):
        if f.inline:
            assert f.sub is not None
            parts.append(_len_field(f.number, _encode_message(obj, f.sub)))
            continue
        if f.json not in obj:
            continue
        value = obj[f.json]
        if value is None and not (f.sub is not None and f.sub.special):
            continue
        if f.kind == K_MAP:
            assert f.map_value is not None
            for k in sorted(value):
                entry = _len_field(1, k.encode()) + _encode_one(f.map_value, 2, value[k])
                parts.append(_len_field(f.number, entry))
        elif f.repeated:
            for item in value:
                parts.append(_encode_one(f, f.number, item))
        else:
            parts.append(_encode_one(f, f.number, value))
    return b"".join(parts)


def _encode_one(f: _Field, number: int, value: Any) -> bytes:
    if f.kind != K_MESSAGE:
        return _encode_scalar(f, number, value)
    assert f.sub is not None
    if f.sub.special:
        return _len_field(number, _encode_special(value, f.sub))
    return _len_field(number, _encode_message(value, f.sub))


_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1, "us": 1000, "µs": 1000, "μs": 1000, "ms": 1_000_000,
                   "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


def _parse_duration(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if body == "0":
        return 0
    total = 0
    pos = 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != pos or not match.group(1):
            break
        whole, _, fraction = match.group(1).partition(".")
        unit = _DURATION_UNITS[match.group(2)]
        total += int(whole or 0) * unit + int(fraction or 0) * unit // 10 ** len(fraction)
        pos = match.end()
    if pos != len(body) or not body:
        raise ValueError(f"time: invalid duration {text!r}")
    return sign * total


def _parse_time(text: str) -> tuple[int, int]:
    t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    delta = t - _EPOCH
    return delta.days * 86400 + delta.seconds, delta.microseconds * 1000


def _encode_special(value: Any, msg: _Message) -> bytes:
    how = msg.special
    if how in ("time", "microtime"):
        if value is None:
            return b""
        seconds, nanos = _parse_time(value)
        return (b"\x08" + _varint(seconds)) + (b"\x10" + _varint(nanos) if nanos and
                                                how == "microtime" else b"")
    if how == "duration":
        return b"\x08" + _varint(_parse_duration(value))
    if how == "intorstring":
        if isinstance(value, str):
            return b"\x08\x01" + _len_field(3, value.encode())
        return b"\x08\x00\x10" + _varint(int(value))
    if how == "quantity":
        return _len_field(1, str(value).encode())
    if how == "rawjson":
        return b"" if value is None else _len_field(1, orjson.dumps(value))
    if how == "list":
        return b"".join(_encode_scalar(msg.fields[1], 1, item) for item in value)
    raise AssertionError(how)


def encode_object(obj: dict[str, Any]) -> bytes:
    """A JSON object with apiVersion/kind -> a protobuf body (magic + runtime.Unknown).

    Every field present in `obj` is written (so presence survives a round trip); fields
    the message does not define are ignored. Raises ValueError for an unknown kind or a
    value of the wrong shape.
    """
    api_version = obj.get("apiVersion", "")
    kind = obj.get("kind", "")
    name = protobuf_types.KINDS.get((api_version, kind))
    if name is None:
        raise ValueError(f'no kind "{kind}" is registered for version "{api_version}"')
    try:
        raw = _encode_message(obj, _compile()[name])
    except (TypeError, AttributeError, KeyError) as exc:
        raise ValueError(f"{kind}: cannot encode: {exc}") from None
    type_meta = _len_field(1, api_version.encode()) + _len_field(2, kind.encode())
    return MAGIC + _len_field(1, type_meta) + _len_field(2, raw) + b"\x1a\x00\x22\x00"
