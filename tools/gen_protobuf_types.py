"""Build kubi/api/protobuf_types.py from the protobuf definitions inside a kubectl binary.

A Go kubectl links every `k8s.io/api/*/generated.pb.go`, and each of those embeds its
`generated.proto` as a gzipped FileDescriptorProto (field numbers, types, the gogoproto
`nullable` option that says whether the Go field is a pointer, and the Go field name).
Go's type metadata in the same binary keeps every struct tag, which gives the JSON name
and `omitempty`. Together they describe exactly how upstream turns protobuf into JSON,
so nothing here is typed in by hand except the list of packages we want.

Usage: python tools/gen_protobuf_types.py [/usr/bin/kubectl] > kubi/api/protobuf_types.py
"""

from __future__ import annotations

import re
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubi.api import schemas

# Stable API packages we serve, plus the apimachinery packages they use.
PACKAGES = [
    "k8s.io.apimachinery.pkg.apis.meta.v1",
    "k8s.io.apimachinery.pkg.runtime",
    "k8s.io.apimachinery.pkg.util.intstr",
    "k8s.io.apimachinery.pkg.api.resource",
    "k8s.io.api.core.v1",
    "k8s.io.api.apps.v1",
    "k8s.io.api.batch.v1",
    "k8s.io.api.networking.v1",
    "k8s.io.api.rbac.v1",
    "k8s.io.api.policy.v1",
    "k8s.io.api.scheduling.v1",
    "k8s.io.api.coordination.v1",
    "k8s.io.api.authentication.v1",
    "k8s.io.api.authorization.v1",
    "k8s.io.api.autoscaling.v1",
    "k8s.io.api.autoscaling.v2",
    "k8s.io.api.storage.v1",
    "k8s.io.api.discovery.v1",
    "k8s.io.api.events.v1",
    "k8s.io.api.certificates.v1",
    "k8s.io.api.admissionregistration.v1",
    "k8s.io.api.flowcontrol.v1",
    "k8s.io.api.node.v1",
]

# Messages whose Go types have hand-written protobuf/JSON conversions.
SPECIAL = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": "time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": "microtime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration": "duration",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1": "rawjson",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "rawjson",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "intorstring",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "quantity",
}

SCALARS = {
    1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 6: "fixed64",
    7: "fixed32", 8: "bool", 9: "string", 12: "bytes", 13: "uint32", 15: "sfixed32",
    16: "sfixed64", 17: "sint32", 18: "sint64",
}
TYPE_MESSAGE = 11
GOGO_NULLABLE = 65001
GOGO_CUSTOMNAME = 65004
GOPROTO_STRINGER = 64003


def short_name(full: str) -> str:
    """`k8s.io.api.core.v1.Pod` -> `core.v1.Pod`, `k8s.io.apimachinery.pkg.apis.meta.v1.X`
    -> `meta.v1.X`: shorter table keys, still unique across the packages we keep."""
    full = full.lstrip(".")
    for prefix, repl in (("k8s.io.api.", ""), ("k8s.io.apimachinery.pkg.apis.", ""),
                         ("k8s.io.apimachinery.pkg.util.", ""),
                         ("k8s.io.apimachinery.pkg.api.", ""),
                         ("k8s.io.apimachinery.pkg.", "")):
        if full.startswith(prefix):
            return repl + full[len(prefix):]
    return full


# --- a minimal protobuf reader, enough for descriptor.proto ---------------------------

def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def fields_of(buf: bytes) -> list[tuple[int, int | bytes]]:
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = read_varint(buf, pos)
            out.append((number, buf[pos:pos + length]))
            pos += length
        elif wire == 1:
            out.append((number, buf[pos:pos + 8]))
            pos += 8
        elif wire == 5:
            out.append((number, buf[pos:pos + 4]))
            pos += 4
        else:
            raise ValueError(f"wire type {wire}")
    return out


@dataclass
class ProtoField:
    name: str
    number: int
    repeated: bool
    type: int
    type_name: str
    nullable: bool
    go_name: str


@dataclass
class ProtoMessage:
    full_name: str
    fields: list[ProtoField] = field(default_factory=list)
    map_entry: bool = False
    no_stringer: bool = False


def parse_message(buf: bytes, scope: str, into: dict[str, ProtoMessage]) -> None:
    parts = fields_of(buf)
    name = next(v for n, v in parts if n == 1)
    assert isinstance(name, bytes)
    msg = ProtoMessage(f"{scope}.{name.decode()}")
    into[msg.full_name] = msg
    for number, value in parts:
        if number == 2 and isinstance(value, bytes):
            msg.fields.append(parse_field(value))
        elif number == 3 and isinstance(value, bytes):
            parse_message(value, msg.full_name, into)
        elif number == 7 and isinstance(value, bytes):
            options = dict(fields_of(value))
            msg.map_entry = options.get(7) == 1
            msg.no_stringer = options.get(GOPROTO_STRINGER) == 0


def parse_field(buf: bytes) -> ProtoField:
    parts = dict(fields_of(buf))
    raw_options = parts.get(8, b"")
    options = dict(fields_of(raw_options)) if isinstance(raw_options, bytes) else {}

    def text(value: int | bytes) -> str:
        assert isinstance(value, bytes)
        return value.decode()

    return ProtoField(name=text(parts[1]), number=int(parts[3]), repeated=parts.get(4) == 3,
                      type=int(parts[5]), type_name=text(parts.get(6, b"")).lstrip("."),
                      nullable=options.get(GOGO_NULLABLE, 1) != 0,
                      go_name=text(options.get(GOGO_CUSTOMNAME, parts[1])))


def load_descriptors(binary: bytes) -> dict[str, ProtoMessage]:
    messages: dict[str, ProtoMessage] = {}
    for match in re.finditer(rb"\x1f\x8b\x08", binary):
        try:
            data = zlib.decompressobj(16 + 15).decompress(binary[match.start():match.start()
                                                                  + 4_000_000])
        except zlib.error:
            continue
        if b"generated.proto" not in data[:200]:
            continue
        parts = fields_of(data)
        package = next(v for n, v in parts if n == 2)
        assert isinstance(package, bytes)
        for number, value in parts:
            if number == 4 and isinstance(value, bytes):
                parse_message(value, package.decode(), messages)
    return messages


# --- Go struct tags, from the runtime type names -------------------------------------

@dataclass(frozen=True)
class GoTag:
    json_name: str
    omitempty: bool
    inline: bool


TagKey = tuple[str, int, str]  # (Go field name, proto number, proto name)


@dataclass
class StructTags:
    """The Go struct tags in a binary, and which struct field arrays use each one."""

    # key -> tag -> addresses of the runtime names (one per distinct full tag text)
    tags: dict[TagKey, dict[GoTag, list[int]]]
    refs: dict[int, int]  # .rodata offset of each word pointing at one of those names
    positions: dict[int, list[int]]  # name address -> where it is referenced
    rodata: memoryview  # .rodata as 8-byte words
    rodata_address: int

    def candidates(self, key: TagKey) -> dict[GoTag, list[int]]:
        return self.tags.get(key) or self.tags.get((key[0], key[1], ""), {})

    def struct_names(self, pos: int) -> set[int]:
        """The field names of the Go struct whose field array holds the word at `pos`.

        A field is {name pointer, type pointer, offset}: walk to both ends of the array,
        where the entries stop looking like fields or the offsets stop increasing.
        """
        words, low, high = self.rodata, self.rodata_address, \
            self.rodata_address + len(self.rodata) * 8

        def entry(at: int) -> tuple[int, int, int] | None:
            i = at // 8
            if i < 0 or i + 2 >= len(words):
                return None
            name, type_, offset = words[i], words[i + 1], words[i + 2]
            if low <= name < high and low <= type_ < high and offset < 1 << 24:
                return name, type_, offset
            return None

        here = entry(pos)
        if here is None:
            return set()
        names = {here[0]}
        at, offset = pos, here[2]
        while offset > 0 and (e := entry(at - 24)) is not None and e[2] < offset:
            names.add(e[0])
            at, offset = at - 24, e[2]
        at, offset = pos, here[2]
        while (e := entry(at + 24)) is not None and e[2] > offset:
            names.add(e[0])
            at, offset = at + 24, e[2]
        return names

    def pick(self, key: TagKey, siblings: list[TagKey]) -> set[GoTag]:
        """The tags of `key` used in a struct that also has the sibling fields."""
        sibling_names = [{a for addrs in self.candidates(k).values() for a in addrs}
                         for k in siblings]
        scores: dict[GoTag, int] = {}
        for tag, addresses in self.candidates(key).items():
            best = 0
            for address in addresses:
                for pos in self.positions.get(address, ()):
                    names = self.struct_names(pos)
                    best = max(best, sum(1 for sibling in sibling_names if sibling & names))
            scores[tag] = best
        top = max(scores.values(), default=0)
        return {tag for tag, score in scores.items() if score == top}


def load_struct_tags(binary: bytes) -> StructTags:
    """Every struct field name with a protobuf tag, parsed from Go's runtime names.

    A Go runtime name is: flags byte, varint length, name, varint length, tag. The
    proto name in a key is "" where the tag has none (embedded structs).
    """
    tags: dict[TagKey, dict[GoTag, list[int]]] = {}
    tag_re = re.compile(rb'protobuf:"[a-z0-9]+,(\d+)(?:,(?:opt|rep|req))?(?:,name=(\w+))?')
    json_re = re.compile(r'json:"([^"]*)"')
    rodata_offset, rodata_address, rodata_size = elf_section(binary, b".rodata")

    def varints_ending_at(end: int) -> list[tuple[int, int]]:
        found = []
        if binary[end - 1] < 0x80:
            found.append((binary[end - 1], end - 1))
        if binary[end - 2] >= 0x80 and binary[end - 1] < 0x80:
            found.append(((binary[end - 2] & 0x7F) | (binary[end - 1] << 7), end - 2))
        return found

    def name_before(tag_start: int, tag_min_end: int) -> tuple[str, int, int] | None:
        """(Go name, where its runtime name starts, tag length) for a tag at tag_start."""
        for length, len_start in varints_ending_at(tag_start):
            if tag_start + length < tag_min_end:
                continue
            tag = binary[tag_start:tag_start + length]
            if not tag.endswith(b'"') or not all(32 <= c < 127 for c in tag):
                continue
            name_end = name_start = len_start
            while name_start > 0 and (chr(binary[name_start - 1]).isalnum()
                                      or binary[name_start - 1] == 0x5F):
                name_start -= 1
            for candidate in range(name_start, name_end):
                for n, s in varints_ending_at(candidate):
                    if n == name_end - candidate and binary[s - 1] < 16:
                        return binary[candidate:name_end].decode(), s - 1, length
        return None

    for match in tag_re.finditer(binary):
        for tag_start in range(match.start(), max(match.start() - 300, 2), -1):
            found = name_before(tag_start, match.end())
            if found is None:
                continue
            go_name, blob, length = found
            json_match = json_re.search(binary[tag_start:tag_start + length].decode())
            if json_match is not None:
                json_name, _, opts = json_match.group(1).partition(",")
                key = (go_name, int(match.group(1)), (match.group(2) or b"").decode())
                tag = GoTag(json_name, "omitempty" in opts.split(","), json_name == "")
                tags.setdefault(key, {}).setdefault(tag, []).append(
                    blob - rodata_offset + rodata_address)
            break

    addresses = {a for by_tag in tags.values() for addrs in by_tag.values() for a in addrs}
    refs: dict[int, int] = {}
    positions: dict[int, list[int]] = {}
    words = memoryview(binary)[rodata_offset:rodata_offset + rodata_size // 8 * 8].cast("Q")
    for index, word in enumerate(words):
        if word in addresses:
            refs[index * 8] = word
            positions.setdefault(word, []).append(index * 8)
    return StructTags(tags, refs, positions, words, rodata_address)


def elf_section(binary: bytes, wanted: bytes) -> tuple[int, int, int]:
    """(file offset, address, size) of an ELF64 section."""
    table, = struct.unpack_from("<Q", binary, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", binary, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", binary, table + i * entry_size)
                for i in range(count)]
    names_offset = sections[names_index][4]
    for name, _type, _flags, address, offset, size in sections:
        start = names_offset + name
        if binary[start:binary.index(b"\0", start)] == wanted:
            return offset, address, size
    raise SystemExit(f"no {wanted!r} section")


# --- assembling the table ---------------------------------------------------------------

def openapi_name(proto_name: str) -> str:
    return "io." + proto_name.replace("k8s.io.", "k8s.", 1)


def main() -> None:
    binary = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/bin/kubectl").read_bytes()
    messages = load_descriptors(binary)
    tags = load_struct_tags(binary)
    definitions = schemas.definitions()
    wanted = {name: msg for name, msg in messages.items()
              if name.rsplit(".", 1)[0] in PACKAGES and not msg.map_entry}
    # Messages of packages we skip that a wanted one reaches would be a gap: check.
    for msg in list(wanted.values()):
        for f in msg.fields:
            if f.type == TYPE_MESSAGE:
                target = messages[f.type_name]
                if target.map_entry:
                    target = messages[target.fields[1].type_name] if \
                        target.fields[1].type == TYPE_MESSAGE else target
                if not target.map_entry and target.full_name not in wanted:
                    raise SystemExit(f"{msg.full_name}.{f.name} reaches {target.full_name}")

    lists = sorted(name for name, msg in wanted.items()
                   if msg.no_stringer and len(msg.fields) == 1 and msg.fields[0].name == "items"
                   and msg.fields[0].number == 1 and msg.fields[0].repeated)
    problems: list[str] = []
    lines = [
        "# ruff: noqa: E501  (generated data: one field a line reads best)",
        '"""Kubernetes v1.32 protobuf messages: field number -> how it maps to JSON.',
        "",
        "Generated by tools/gen_protobuf_types.py from the descriptors and Go struct tags",
        "compiled into kubectl v1.32; do not edit by hand.",
        "",
        "A field is (json name, kind, type, flags, Go field name):",
        "  kind: a protobuf scalar type, `message` (type = message name) or `map` (string keys;",
        "        type = the value's scalar type or message name);",
        "  flags: `r` repeated, `p` Go pointer (a present zero value stays), `o` omitempty",
        "         (a present zero value of a non-pointer field is dropped), `i` inlined",
        "         (the message's fields are merged into the parent's JSON object).",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "Field = tuple[str, str, str, str, str]",
        "",
        "# Messages whose Go types convert to JSON by hand-written code.",
        "SPECIAL: dict[str, str] = {",
    ]
    for name, how in SPECIAL.items():
        lines.append(f"    {short_name(name)!r}: {how!r},")
    for name in lists:
        lines.append(f"    {short_name(name)!r}: 'list',  # a Go slice type: JSON is `items`")
    lines += ["}", "", "MESSAGES: dict[str, dict[int, Field]] = {"]
    for name in sorted(wanted, key=short_name):
        msg = wanted[name]
        lines.append(f"    {short_name(name)!r}: {{")
        schema = definitions.get(openapi_name(name), {})
        properties = schema.get("properties", {})
        required = set(schema.get("required", ()))
        for f in sorted(msg.fields, key=lambda f: f.number):
            key = (f.go_name, f.number, f.name)
            found = set(tags.candidates(key))
            if len(found) > 1:
                # Two structs have a field of this Go name, number and proto name with
                # different tags: take the one whose struct has this message's other fields.
                found = tags.pick(key, [(o.go_name, o.number, o.name) for o in msg.fields
                                        if o is not f])
            if len(found) > 1:
                narrowed = {t for t in found if t.json_name in properties} or found
                if len({t.omitempty for t in narrowed}) > 1:
                    narrowed = {t for t in narrowed if t.omitempty != (t.json_name in required)}
                problems.append(f"{name}.{f.name}: ambiguous {found}, took {narrowed}")
                found = narrowed
            if len(found) == 1:
                tag = next(iter(found))
            elif name in SPECIAL or name in lists:
                tag = GoTag(f.name, True, False)
            else:
                problems.append(f"{name}.{f.name}: tags {found or 'none'}")
                tag = GoTag(f.name, f.name not in required, False)
            if properties and not tag.inline and tag.json_name not in properties:
                problems.append(f"{name}.{f.name}: json {tag.json_name!r} not in OpenAPI")
            flags = ""
            if f.type == TYPE_MESSAGE and messages[f.type_name].map_entry:
                entry = messages[f.type_name]
                key_field, value = sorted(entry.fields, key=lambda e: e.number)
                if key_field.type != 9:
                    raise SystemExit(f"{name}.{f.name}: non-string map key")
                kind = "map"
                type_ = short_name(value.type_name) if value.type == TYPE_MESSAGE \
                    else SCALARS[value.type]
            elif f.type == TYPE_MESSAGE:
                kind, type_ = "message", short_name(f.type_name)
                flags += "r" if f.repeated else ""
            else:
                kind, type_ = SCALARS[f.type], ""
                flags += "r" if f.repeated else ""
            if f.nullable and not f.repeated and kind != "map":
                flags += "p"
            if tag.omitempty:
                flags += "o"
            if tag.inline:
                flags += "i"
            lines.append(f"        {f.number}: ({tag.json_name!r}, {kind!r}, {type_!r}, "
                         f"{flags!r}, {f.go_name!r}),")
        lines.append("    },")
    lines += ["}", ""]

    # Top-level kinds: every group/version/kind OpenAPI names for a message we have.
    kinds: dict[tuple[str, str], str] = {}
    for name in wanted:
        for gvk in definitions.get(openapi_name(name), {}).get(
                "x-kubernetes-group-version-kind", ()):
            group, version = gvk["group"], gvk["version"]
            api_version = f"{group}/{version}" if group else version
            kinds.setdefault((api_version, gvk["kind"]), short_name(name))
    lines.append("# (apiVersion, kind) -> message, for every kind upstream's OpenAPI names.")
    lines.append("KINDS: dict[tuple[str, str], str] = {")
    for (api_version, kind), name in sorted(kinds.items()):
        lines.append(f"    ({api_version!r}, {kind!r}): {name!r},")
    lines += ["}", ""]
    sys.stdout.write("\n".join(lines))
    for problem in problems:
        print("WARNING", problem, file=sys.stderr)


if __name__ == "__main__":
    main()
