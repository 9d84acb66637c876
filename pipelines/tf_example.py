"""tf.Example bytes and TFRecord frames, written and read without TensorFlow in the workers.

A labeled example becomes a tf.train.Example in protobuf wire format: features named as in the LabeledExample
schema, the served features inlined, nulls absent. The writer for examples of that schema is C
(`_tf_example.c`), the general one Python; `parse_example_fields` reads either back. TFRecord frames carry a
masked CRC-32C of their length and of their data.
"""
from __future__ import annotations

import struct
from pathlib import Path

from crc32c import crc32c

from pipelines._tf_example import KIND_BYTES, KIND_FLOAT, KIND_INT, Serializer, frame
from pipelines.labeling import Example
from schemas import default_registry
from schemas.compiled import uvarint

_FLOATS = struct.Struct("<f")
_FLOAT_FIELDS = {"propensity", "purchase_value", "item_price", "item_age_hours", "item_rating", "headline_score",
                 "user_category_affinity"}


def _varint(n: int) -> bytes:
    """Protobuf's unsigned varint; an int64 below zero is written as its 64-bit two's complement."""
    return uvarint(n if n >= 0 else n + (1 << 64))


def _bytes_feature(value: bytes) -> bytes:  # Feature.bytes_list (1) holding BytesList.value (1)
    inner = b"\x0a" + _varint(len(value)) + value
    return b"\x0a" + _varint(len(inner)) + inner


def _float_feature(value: float) -> bytes:  # Feature.float_list (2), packed FloatList.value: always 8 bytes
    return b"\x12\x06\x0a\x04" + _FLOATS.pack(value)


def _int_feature(value: int) -> bytes:  # Feature.int64_list (3), packed Int64List.value
    packed = _varint(value)
    return b"\x1a" + _varint(len(packed) + 2) + b"\x0a" + _varint(len(packed)) + packed


_ENTRY_KEYS: dict[str, bytes] = {}


def _entry_key(name: str) -> bytes:
    """A map entry's key field (1), the same for every example."""
    encoded = name.encode()
    _ENTRY_KEYS[name] = b"\x0a" + _varint(len(encoded)) + encoded
    return _ENTRY_KEYS[name]


def example_fields(example: Example) -> dict:
    """The example as flat named values, served features inlined; nulls left out (they are absent features)."""
    fields = example._asdict()
    fields.update(fields.pop("features"))
    return {name: value for name, value in fields.items() if value is not None}


_BYTE = [bytes((n,)) for n in range(128)]  # one-byte varints: every length below 128


def _feature_bytes(name: str, value) -> bytes:
    if name in _FLOAT_FIELDS:
        return _float_feature(float(value))
    if isinstance(value, str):
        return _bytes_feature(value.encode())
    return _int_feature(int(value))


def _entry(key: bytes, feature: bytes) -> bytes:
    """One Features.feature map entry (field 1 of Features): the name's key field, then the Feature (2)."""
    size = len(key) + 2 + len(feature)
    if size < 128:  # the usual case, with one-byte lengths throughout
        return b"".join((b"\x0a", _BYTE[size], key, b"\x12", _BYTE[len(feature)], feature))
    body = key + b"\x12" + _varint(len(feature)) + feature
    return b"\x0a" + _varint(len(body)) + body


def _serialize_any(example: Example) -> bytes:
    """`serialize_example` for any example, whatever its served features: the general, slower way."""
    entries = []
    for name, value in sorted(example_fields(example).items()):
        entries.append(_entry(_ENTRY_KEYS.get(name) or _entry_key(name), _feature_bytes(name, value)))
    features = b"".join(entries)
    return b"\x0a" + _varint(len(features)) + features  # Example.features (1)


def _compile_serializer():
    """serialize(example), in C (`_tf_example.c`), for examples whose served features are exactly the
    LabeledExample schema's: the bytes of `_serialize_any`, about ten times faster. Any other example goes to
    `_serialize_any` itself."""
    served = next(f["type"] for f in default_registry().latest("LabeledExample").raw["fields"] if f["name"] == "features")
    source: dict[str, int | str] = {name: i for i, name in enumerate(Example._fields) if name != "features"}
    source.update({f["name"]: f["name"] for f in served["fields"]})
    program = tuple((KIND_FLOAT if name in _FLOAT_FIELDS else KIND_BYTES if name in _STRING_FIELDS else KIND_INT,
                     _ENTRY_KEYS.get(name) or _entry_key(name), source[name]) for name in sorted(source))
    return Serializer(program, Example._fields.index("features"), _serialize_any)


_STRING_FIELDS = {"impression_id", "request_id", "user_id", "item_id", "surface", "policy", "item_category", "device",
                  "label_strategy"}
_SERIALIZERS: list = []


def serialize_example(example: Example) -> bytes:
    """A tf.train.Example in protobuf wire format, written without importing TensorFlow into the workers."""
    if not _SERIALIZERS:
        _SERIALIZERS.append(_compile_serializer())
    return _SERIALIZERS[0](example)


def _masked_crc(data: bytes) -> bytes:
    crc = crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _framed(record: bytes) -> bytes:
    """One TFRecord: length, masked CRC32C of the length, data, masked CRC32C of the data."""
    return frame([record])


def read_records(path: Path) -> list[bytes]:
    """The records of a TFRecord file written by `_framed` (lengths and checksums checked)."""
    data = Path(path).read_bytes()
    records, at = [], 0
    while at < len(data):
        length_bytes = data[at:at + 8]
        if len(length_bytes) < 8:
            raise ValueError(f"{path}: truncated record at byte {at}")
        (length,) = struct.unpack("<Q", length_bytes)
        record = data[at + 12:at + 12 + length]
        if data[at + 8:at + 12] != _masked_crc(length_bytes) or data[at + 12 + length:at + 16 + length] != _masked_crc(record):
            # a cut-off last record fails its checksum too
            raise ValueError(f"{path}: corrupt record at byte {at}")
        records.append(record)
        at += 16 + length
    return records


def _fields(data: bytes):
    """(field number, wire type, value) of a protobuf message: ints for varints, bytes for length-delimited."""
    at = 0
    while at < len(data):
        tag, at = _read_varint(data, at)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, at = _read_varint(data, at)
        elif wire == 2:
            length, at = _read_varint(data, at)
            value, at = data[at:at + length], at + length
        elif wire == 5:
            value, at = data[at:at + 4], at + 4
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        yield number, wire, value


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7


def parse_example_fields(record: bytes) -> dict:
    """A tf.Example written by `serialize_example`, back to its flat named values (without TensorFlow)."""
    fields = {}
    for _, _, features in _fields(record):  # Example.features
        for _, _, entry in _fields(features):  # Features.feature map entries
            name, feature = None, b""
            for number, _, value in _fields(entry):
                if number == 1:
                    name = value.decode()
                else:
                    feature = value
            for kind, _, values in _fields(feature):
                (_, _, packed), = list(_fields(values))
                if kind == 1:
                    fields[name] = packed.decode()
                elif kind == 2:
                    (fields[name],) = _FLOATS.unpack(packed)
                else:
                    n, _ = _read_varint(packed, 0)
                    fields[name] = n - (1 << 64) if n >= 1 << 63 else n
    return fields
