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
from typing import Tuple

import apache_beam as beam
from crc32c import crc32c
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.coders import VarIntCoder
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from pipelines.labeling import Example
from schemas.compiled import uvarint

_FLOATS = struct.Struct("<f")
EXAMPLES_FILE = "examples.tfrecord"
MANIFEST_FILE = "_manifest.json"
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


def serialize_example(example: Example) -> bytes:
    """A tf.train.Example in protobuf wire format, written without importing TensorFlow into the workers."""
    entries = []
    for name, value in sorted(example_fields(example).items()):
        key = _ENTRY_KEYS.get(name) or _entry_key(name)
        feature = _feature_bytes(name, value)
        size = len(key) + 2 + len(feature)
        if size < 128:  # the usual case, with one-byte lengths throughout
            entries.append(b"".join((b"\x0a", _BYTE[size], key, b"\x12", _BYTE[len(feature)], feature)))
        else:
            body = key + b"\x12" + _varint(len(feature)) + feature
            entries.append(b"\x0a" + _varint(len(body)) + body)  # Features.feature (1), a map entry
    features = b"".join(entries)
    return b"\x0a" + _varint(len(features)) + features  # Example.features (1)


def partition_of(event_time_ms: int) -> str:
    hour = dt.datetime.fromtimestamp(event_time_ms // 1000, tz=dt.timezone.utc)
    return f"dt={hour:%Y-%m-%d}/hour={hour:%H}"


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def write_partition(output_dir: str | Path, partition: str, examples: list[Example], source: dict,
                    watermark_ms: int | None = None, revision: int = 1) -> tuple[dict, int]:
    """Writes one partition's TFRecord file, then its manifest; returns the manifest and the duplicates dropped.

    An example is identified by its impression and which label it settles; a runner that retries work may
    deliver one twice, and the file must hold it once.
    """
    unique = {(e.impression_id, e.label_time_ms, e.is_correction, e.added_to_cart, e.purchased): e for e in examples}
    duplicates = len(examples) - len(unique)
    examples = [unique[k] for k in sorted(unique)]
    directory = Path(output_dir) / partition
    directory.mkdir(parents=True, exist_ok=True)
    _remove_orphans(directory)
    _write_atomically(directory / EXAMPLES_FILE, b"".join(_framed(serialize_example(e)) for e in examples))
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
        "source": source,
        "watermark_ms": watermark_ms,
        "revision": revision,
    }
    _write_atomically(directory / MANIFEST_FILE, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return manifest, duplicates


class _WritePartition(beam.DoFn):
    def __init__(self, output_dir: str, source: dict):
        self._output_dir = output_dir
        self._source = source

    def setup(self):
        self._files = Metrics.counter("examples", "partitions_written")
        self._duplicates = Metrics.counter("examples", "duplicates_dropped")

    def process(self, partition_examples, watermark_ms: int | None = None, revision: int = 1):
        partition, examples = partition_examples
        manifest, duplicates = write_partition(self._output_dir, partition, list(examples), self._source,
                                               watermark_ms, revision)
        if duplicates:
            self._duplicates.inc(duplicates)
        self._files.inc()
        yield manifest


def _masked_crc(data: bytes) -> bytes:
    crc = crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _remove_orphans(directory: Path) -> None:
    """Deletes temporary files that a process, now dead, left half-written (a killed run)."""
    for leftover in directory.glob(".*.tmp"):
        try:
            pid = int(leftover.name.split(".")[-3])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            leftover.unlink(missing_ok=True)
        except PermissionError:
            pass  # another user's live process


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
                | "Key by event hour" >> beam.Map(lambda e: (partition_of(e.event_time_ms), e)).with_output_types(
                    Tuple[str, Example])
                | "Group by event hour" >> beam.GroupByKey()
                | "Write partition and manifest" >> beam.ParDo(_WritePartition(self._output_dir, self._source), **side))


class _WriteSettledHour(beam.DoFn):
    """Holds an hour's examples until the watermark passes the hour's end plus the label horizon, then writes.

    An example of the hour that still comes after that makes the partition be written again at once, whole, with
    a higher revision in its manifest. That happens when the watermark jumps (a backlog read, then a pause) and
    the runner fires this timer before the upstream timers whose output it is waiting for: Prism does. Waiting
    for the settled timer to fire again is not enough, since a runner need not fire a timer set behind the
    watermark until the watermark moves. The hour's state is dropped once the allowed lateness has passed too.
    """

    EXAMPLES = BagStateSpec("examples", beam.coders.registry.get_coder(Example))
    REVISION = ReadModifyWriteStateSpec("revision", VarIntCoder())
    SETTLED = TimerSpec("settled", TimeDomain.WATERMARK)
    EXPIRED = TimerSpec("expired", TimeDomain.WATERMARK)

    def __init__(self, output_dir: str, source: dict, horizon_ms: int, allowed_lateness_ms: int):
        self._writer = _WritePartition(output_dir, source)
        self._horizon_ms = horizon_ms
        self._allowed_lateness_ms = allowed_lateness_ms

    def setup(self):
        self._writer.setup()
        self._rewrites = Metrics.counter("examples", "partition_rewrites")

    def process(self, hour_example, examples=beam.DoFn.StateParam(EXAMPLES), revision=beam.DoFn.StateParam(REVISION),
                settled=beam.DoFn.TimerParam(SETTLED), expired=beam.DoFn.TimerParam(EXPIRED)):
        partition, example = hour_example
        examples.add(example)
        settle_ms = (example.event_time_ms // 3_600_000 + 1) * 3_600_000 + self._horizon_ms
        if revision.read():  # written already: this example came after, so the partition is rewritten now
            yield from self._write(partition, settle_ms, examples, revision)
            return
        settled.set(Timestamp(micros=settle_ms * 1000))
        expired.set(Timestamp(micros=(settle_ms + self._allowed_lateness_ms) * 1000))

    @on_timer(SETTLED)
    def write(self, key=beam.DoFn.KeyParam, fire=beam.DoFn.TimestampParam, examples=beam.DoFn.StateParam(EXAMPLES),
              revision=beam.DoFn.StateParam(REVISION)):
        yield from self._write(key, fire.micros // 1000, examples, revision)

    def _write(self, partition: str, watermark_ms: int, examples, revision):
        written = revision.read() or 0
        if written:
            self._rewrites.inc()
        revision.write(written + 1)
        yield from self._writer.process((partition, list(examples.read())), watermark_ms=watermark_ms,
                                        revision=written + 1)

    @on_timer(EXPIRED)
    def expire(self, examples=beam.DoFn.StateParam(EXAMPLES), revision=beam.DoFn.StateParam(REVISION)):
        examples.clear()
        revision.clear()


class WriteExamplesStreaming(beam.PTransform):
    """Streaming examples to the same hour partitions as WriteExamples, each written once its hour is settled."""

    def __init__(self, output_dir: str, source: dict, horizon_ms: int, allowed_lateness_ms: int):
        super().__init__()
        self._fn = _WriteSettledHour(str(output_dir), source, horizon_ms, allowed_lateness_ms)

    def expand(self, examples):
        return (examples
                | "Key by event hour" >> beam.Map(lambda e: (partition_of(e.event_time_ms), e)).with_output_types(
                    Tuple[str, Example])
                | "Write each hour once settled" >> beam.ParDo(self._fn))


class _AppendLate(beam.DoFn):
    def __init__(self, path: str):
        self._path = path

    def setup(self):
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._path, "a")

    def process(self, late):
        event = late.event
        self._file.write(json.dumps({"name": event.name, "event_id": event.datum["event_id"],
                                     "user_id": event.datum["user_id"], "event_time_ms": event.datum["event_time_ms"],
                                     "delivered_ms": event.delivered_ms, "lateness_ms": late.lateness_ms}) + "\n")

    def finish_bundle(self):
        self._file.flush()

    def teardown(self):
        self._file.close()


class RecordLateEvents(beam.PTransform):
    """Late events as JSON lines in `<output_dir>/_late/late-<run>.jsonl`: what they were and how late."""

    def __init__(self, output_dir: str, run: str):
        super().__init__()
        self._path = str(Path(output_dir) / "_late" / f"late-{run}.jsonl")

    def expand(self, late):
        return late | "Append to the late log" >> beam.ParDo(_AppendLate(self._path))
