"""Record schemas compiled for the event path: plain Python encoders, about three times faster than fastavro's
generic writer, and readers run in C (`schemas/_native.c`).

A compiled encoder writes the same bytes as fastavro for every valid datum, and a compiled reader reads the
same datum (the tests compare both on simulated traffic); anything an encoder cannot write raises, and the
caller lets fastavro say what is wrong.
Supported: records, the primitives, and unions of null with one other type: what the event contract uses.
`encode` raises (KeyError, TypeError, IndexError, OverflowError, ...) on whatever it cannot write.
"""
from __future__ import annotations

import struct
from typing import Callable

from schemas import _native

_DOUBLE = struct.Struct("<d").pack
_FLOAT = struct.Struct("<f").pack


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Varints 14 bits at a time: the final group from _LAST, every group before it from _MORE (continuation bits set).
_LAST = [_varint(n) for n in range(1 << 14)]
_MORE = [bytes(((n & 0x7F) | 0x80, (n >> 7) | 0x80)) for n in range(1 << 14)]


def uvarint(z: int) -> bytes:
    """The unsigned varint of 0 <= z < 2**64, as Avro (after zigzag) and protobuf write it."""
    if z < 16384:
        return _LAST[z]
    return _MORE[z & 0x3FFF] + uvarint(z >> 14)


def write_long(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)  # zigzag: 0 <= z < 2**64 exactly when n fits 64 bits
    if 0 <= z < 16384:
        return _LAST[z]
    if not 0 <= z < (1 << 64):
        raise OverflowError(f"{n} does not fit an Avro long")
    if z < (1 << 28):
        return _MORE[z & 0x3FFF] + _LAST[z >> 14]
    if z < (1 << 42):  # millisecond timestamps land here
        return _MORE[z & 0x3FFF] + _MORE[(z >> 14) & 0x3FFF] + _LAST[z >> 28]
    return _MORE[z & 0x3FFF] + _MORE[(z >> 14) & 0x3FFF] + _MORE[(z >> 28) & 0x3FFF] + uvarint(z >> 42)


def write_int(n: int) -> bytes:
    if not -(1 << 31) <= n < (1 << 31) or isinstance(n, float):
        raise OverflowError(f"{n} does not fit an Avro int")
    return write_long(n)


def write_string(s: str) -> bytes:
    b = s.encode()
    return write_long(len(b)) + b


def write_bytes(b: bytes) -> bytes:
    return write_long(len(b)) + b


def write_boolean(v: bool) -> bytes:
    if v is True:
        return b"\x01"
    if v is False:
        return b"\x00"
    raise TypeError(f"{v!r} is not a boolean")


_PRIMITIVE_WRITERS = {
    "int": "write_int", "long": "write_long", "string": "write_string", "bytes": "write_bytes",
    "boolean": "write_boolean", "double": "_DOUBLE", "float": "_FLOAT",
}


class UnsupportedSchema(ValueError):
    """The schema uses a type the compiler does not handle; use fastavro for it."""


def _optional(writer: Callable[[object], bytes], null_first: bool) -> Callable[[object], bytes]:
    null, some = (b"\x00", b"\x02") if null_first else (b"\x02", b"\x00")

    def write(v):
        return null if v is None else some + writer(v)

    return write


def compile_record(schema: dict) -> Callable[[dict], bytes]:
    """Returns encode(datum) -> the Avro binary body of a record of `schema` (a parsed or raw record schema)."""
    namespace: dict = {
        "b_join": b"".join, "_LAST": _LAST, "_DOUBLE": _DOUBLE, "_FLOAT": _FLOAT, "write_int": write_int, "write_long": write_long,
        "write_string": write_string, "write_bytes": write_bytes, "write_boolean": write_boolean,
    }
    lines: list[str] = []
    parts = _record_parts(schema, "d", namespace, lines, [0])
    source = "def encode(d):\n" + "".join(f"    {line}\n" for line in lines)
    source += f"    return b_join(({', '.join(parts)},))\n"
    exec(compile(source, f"<avro encoder {schema.get('name')}>", "exec"), namespace)
    return namespace["encode"]


def _record_parts(schema: dict, var: str, namespace: dict, lines: list[str], counter: list[int]) -> list[str]:
    parts = []
    for field in schema["fields"]:
        value = f"{var}[{field['name']!r}]"
        parts.append(_field_part(field["type"], value, namespace, lines, counter))
    return parts


def _field_part(type_, value: str, namespace: dict, lines: list[str], counter: list[int]) -> str:
    if type_ == "string" or type_ == {"type": "string"}:
        # Inlined: most strings are short, and their length prefix is one table lookup. A string of 8 KiB or
        # more overruns the table; the IndexError sends the datum to the general writer.
        counter[0] += 1
        local = f"s{counter[0]}"
        lines.append(f"{local} = {value}.encode()")
        return f"_LAST[len({local}) << 1], {local}"
    if isinstance(type_, dict) and type_.get("type") == "record":
        counter[0] += 1
        local = f"r{counter[0]}"
        lines.append(f"{local} = {value}")
        return ", ".join(_record_parts(type_, local, namespace, lines, counter))
    if isinstance(type_, dict) and type_.get("type") in _PRIMITIVE_WRITERS and "logicalType" not in type_:
        type_ = type_["type"]
    if type_ in ("int", "long"):
        # Inlined: small non-negative numbers (positions, counts, days) are one table lookup; the rest, and
        # anything that is not a plain int, go through the checked writer.
        counter[0] += 1
        local = f"n{counter[0]}"
        lines.append(f"{local} = {value}")
        return f"_LAST[{local} << 1] if {local}.__class__ is int and 0 <= {local} < 8192 else write_{type_}({local})"
    if isinstance(type_, str) and type_ in _PRIMITIVE_WRITERS:
        return f"{_PRIMITIVE_WRITERS[type_]}({value})"
    if isinstance(type_, list) and len(type_) == 2 and "null" in type_:
        other = type_[1] if type_[0] == "null" else type_[0]
        if isinstance(other, str) and other in _PRIMITIVE_WRITERS:
            counter[0] += 1
            name = f"opt{counter[0]}"
            namespace[name] = _optional(namespace[_PRIMITIVE_WRITERS[other]], null_first=type_[0] == "null")
            return f"{name}({value})"
    raise UnsupportedSchema(f"cannot compile the Avro type {type_!r}")


# -- reading --------------------------------------------------------------------------------------------------

_CODES = {"boolean": _native.TYPE_BOOLEAN, "int": _native.TYPE_INT, "long": _native.TYPE_LONG,
          "float": _native.TYPE_FLOAT, "double": _native.TYPE_DOUBLE, "bytes": _native.TYPE_BYTES,
          "string": _native.TYPE_STRING}


_PROMOTIONS = {("int", "long"), ("float", "double")}  # read the same way: Python has one int and one float


def _promotes(writer, reader) -> bool:
    return isinstance(writer, str) and isinstance(reader, str) and (writer, reader) in _PROMOTIONS


def _both_records(writer, reader) -> bool:
    return all(isinstance(t, dict) and t.get("type") == "record" for t in (writer, reader))


def compile_reader(writer: dict, reader: dict) -> Callable[[bytes, int], tuple[dict, int]]:
    """Returns read(b, i) -> (datum, end): a record written under `writer` (raw schema) at byte i of `b`,
    resolved to `reader` as Avro's rules say (fields matched by name, reader-only fields take their defaults,
    writer-only fields are read and dropped). Raises UnsupportedSchema for what `compile_record` would not write
    either.

    On bad bytes the reader raises `_native.MalformedBody` (or UnicodeDecodeError); it never reads past the end
    of `b`, but a caller must still check that `end` is where the record should end.
    """
    return _native.Reader(_record_program(writer, reader))


def compile_field_reader(writer: dict, field: str) -> Callable[[bytes, int], object]:
    """Returns read(b, i) -> the value of the top-level `field` of a record written under `writer` at byte i,
    reading only the fields before it (for routing a message before it is decoded in full); on bad bytes it
    raises as `compile_reader`'s readers do."""
    names = [f["name"] for f in writer["fields"]]
    if field not in names:
        raise UnsupportedSchema(f"{writer.get('name')} has no field {field!r}")
    steps = []
    for f in writer["fields"][:names.index(field) + 1]:
        code, sub = _step(_type_name(f["type"]), None)
        steps.append((code, 0 if f["name"] == field else -1, sub))
    return _native.Reader(((field,), (None,), tuple(steps)), single=0)


def _type_name(type_) -> object:
    if isinstance(type_, dict) and type_.get("type") in _PRIMITIVE_WRITERS and "logicalType" not in type_:
        return type_["type"]
    return type_


def _record_program(writer: dict, reader: dict) -> tuple:
    """A record program for `_native.Reader`: (reader keys, their defaults, one step per writer field)."""
    reader_fields = reader["fields"]
    slot = {f["name"]: k for k, f in enumerate(reader_fields)}
    written = {f["name"] for f in writer["fields"]}
    defaults = []
    for field in reader_fields:
        if field["name"] in written:
            defaults.append(None)  # never used: the writer supplies it
        elif "default" in field and isinstance(field["default"], (str, int, float, bool, type(None))):
            defaults.append(field["default"])
        else:
            raise UnsupportedSchema(f"reader field {field['name']!r} has no default the writer could leave it to")
    steps = []
    for field in writer["fields"]:
        target = reader_fields[slot[field["name"]]] if field["name"] in slot else None
        code, sub = _step(_type_name(field["type"]), _type_name(target["type"]) if target else None)
        steps.append((code, slot[field["name"]] if target else -1, sub))
    return tuple(f["name"] for f in reader_fields), tuple(defaults), tuple(steps)


def _step(writer, reader) -> tuple[int, tuple | None]:
    """The code (and a nested record's program) that reads a value of type `writer` as `reader` (None: dropped)."""
    if reader is not None and writer != reader and not _promotes(writer, reader) and not _both_records(writer, reader):
        raise UnsupportedSchema(f"cannot resolve {writer!r} to {reader!r}")
    if isinstance(writer, dict) and writer.get("type") == "record":
        return _native.TYPE_RECORD, _record_program(writer, reader or writer)
    if isinstance(writer, str) and writer in _CODES:
        return _CODES[writer], None
    if isinstance(writer, list) and len(writer) == 2 and "null" in writer and reader in (None, writer):
        other = _type_name(writer[1] if writer[0] == "null" else writer[0])
        if isinstance(other, str) and other in _CODES:
            null_first = writer[0] == "null"
            return _CODES[other] | (_native.OPTIONAL_NULL_FIRST if null_first else _native.OPTIONAL_NULL_SECOND), None
    raise UnsupportedSchema(f"cannot compile the Avro type {writer!r}")
