"""Labeled examples to tf.Example TFRecord files, one partition per impression event hour.

Each partition `dt=YYYY-MM-DD/hour=HH/` holds `examples.tfrecord` and `_manifest.json` (counts per label,
event-time range, source offsets), both written under a temporary name and renamed, so a reader sees a whole
file or none. Re-running the same input replaces a partition's files rather than adding to them. The
manifest is written last: its presence says the partition is complete.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import struct
import uuid
from pathlib import Path

import apache_beam as beam
from crc32c import crc32c
from apache_beam.metrics import Metrics

from pipelines.labeling import Example

_FLOATS = struct.Struct("<f")
EXAMPLES_FILE = "examples.tfrecord"
MANIFEST_FILE = "_manifest.json"
_FLOAT_FIELDS = {"propensity", "purchase_value", "item_price", "item_age_hours", "item_rating", "headline_score",
                 "user_category_affinity"}


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 values are written as their two's complement
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _feature(value) -> bytes:
    """A tf.train.Feature holding one value: bytes_list (1), float_list (2) or int64_list (3)."""
    if isinstance(value, str):
        return _delimited(1, _delimited(1, value.encode()))
    if isinstance(value, float):
        return _delimited(2, _delimited(1, _FLOATS.pack(value)))
    return _delimited(3, _delimited(1, _varint(int(value))))


def example_fields(example: Example) -> dict:
    """The example as flat named values, served features inlined; nulls left out (they are absent features)."""
    fields = example._asdict()
    fields.update(fields.pop("features"))
    return {name: value for name, value in fields.items() if value is not None}


def serialize_example(example: Example) -> bytes:
    """A tf.train.Example in protobuf wire format, written without importing TensorFlow into the workers."""
    entries = []
    for name, value in sorted(example_fields(example).items()):
        if name in _FLOAT_FIELDS:
            value = float(value)
        entries.append(_delimited(1, _delimited(1, name.encode()) + _delimited(2, _feature(value))))
    return _delimited(1, b"".join(entries))


def partition_of(event_time_ms: int) -> str:
    hour = dt.datetime.fromtimestamp(event_time_ms // 1000, tz=dt.timezone.utc)
    return f"dt={hour:%Y-%m-%d}/hour={hour:%H}"


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


class _WritePartition(beam.DoFn):
    def __init__(self, output_dir: str, source: dict):
        self._output_dir = output_dir
        self._source = source

    def setup(self):
        self._files = Metrics.counter("examples", "partitions_written")

    def process(self, partition_examples, watermark_ms: int | None = None):
        partition, examples = partition_examples
        examples = sorted(examples, key=lambda e: (e.impression_id, e.label_time_ms, e.is_correction,
                                                   e.added_to_cart, e.purchased))
        directory = Path(self._output_dir) / partition
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob(".*.tmp"):  # from a run that was killed while writing here
            leftover.unlink(missing_ok=True)
        records = b"".join(_framed(serialize_example(e)) for e in examples)
        _write_atomically(directory / EXAMPLES_FILE, records)
        manifest = {
            "partition": partition,
            "file": EXAMPLES_FILE,
            "examples": len(examples),
            "labels": {
                "clicked": sum(e.clicked for e in examples),
                "added_to_cart": sum(e.added_to_cart for e in examples),
                "purchased": sum(e.purchased for e in examples),
                "corrections": sum(e.is_correction for e in examples),
            },
            "label_strategy": examples[0].label_strategy,
            "event_time_ms": [min(e.event_time_ms for e in examples), max(e.event_time_ms for e in examples)],
            "source": self._source,
            "watermark_ms": watermark_ms,
        }
        _write_atomically(directory / MANIFEST_FILE, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
        self._files.inc()
        yield manifest


def _masked_crc(data: bytes) -> bytes:
    crc = crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _framed(record: bytes) -> bytes:
    """One TFRecord: length, masked CRC32C of the length, data, masked CRC32C of the data."""
    length = struct.pack("<Q", len(record))
    return length + _masked_crc(length) + record + _masked_crc(record)


class WriteExamples(beam.PTransform):
    """Examples to TFRecord partitions by impression event hour; yields each partition's manifest."""

    def __init__(self, output_dir: str, source: dict, watermark=None):
        super().__init__()
        self._output_dir = str(output_dir)
        self._source = source
        self._watermark = watermark  # a singleton PCollection, recorded in each manifest

    def expand(self, examples):
        side = {} if self._watermark is None else {"watermark_ms": beam.pvalue.AsSingleton(self._watermark)}
        return (examples
                | "Key by event hour" >> beam.Map(lambda e: (partition_of(e.event_time_ms), e))
                | "Group by event hour" >> beam.GroupByKey()
                | "Write partition and manifest" >> beam.ParDo(_WritePartition(self._output_dir, self._source), **side))
