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

from pipelines._tf_example import frame
from pipelines.labeling import Example
from pipelines.records import Revision
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
    from pipelines._tf_example import KIND_BYTES, KIND_FLOAT, KIND_INT, Serializer
    from schemas import default_registry

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


def partition_of(event_time_ms: int) -> str:
    hour = dt.datetime.fromtimestamp(event_time_ms // 1000, tz=dt.timezone.utc)
    return f"dt={hour:%Y-%m-%d}/hour={hour:%H}"


def hour_of(partition: str) -> int:
    """The start, in ms since the epoch, of the event hour a partition (`partition_of`) holds."""
    day, hour = partition.split("/")
    moment = dt.datetime.strptime(f"{day[3:]} {hour[5:]}", "%Y-%m-%d %H").replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp()) * 1000


def resume_hour_ms(output_dir: str | Path) -> int | None:
    """Where a streaming join that stopped should start again: the first hour after the oldest complete
    partition (one with a manifest) in `output_dir` that has none; None when there is no partition at all.

    Not simply the hour after the newest: when the watermark passes several hours at once, the runner may write
    them in any order, and a job killed then leaves a gap. An hour without impressions also counts as a gap,
    which only makes the restart read and write again more than it needs."""
    written = {hour_of(path.parent.relative_to(output_dir).as_posix())
               for path in Path(output_dir).glob(f"dt=*/hour=*/{MANIFEST_FILE}")}
    if not written:
        return None
    hour = min(written)
    while hour in written:
        hour += 3_600_000
    return hour


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


_SUMMARY = ("impression_id", "label_time_ms", "is_correction", "added_to_cart", "purchased", "clicked",
            "event_time_ms", "label_strategy")


def _summary(fields: dict) -> tuple:
    return tuple(fields.get(name) for name in _SUMMARY)


def kind_of(summary: tuple) -> tuple:
    """Which of its impression's examples a summary (`serialized`) is: the one example of `wait_for_window`,
    the negative of `fake_negative`, or one of its corrections (cart, purchase). A partition holds one of each;
    a later version of the labels replaces the earlier."""
    impression_id, _label_time_ms, is_correction, added_to_cart, purchased = summary[:5]
    return impression_id, is_correction, is_correction and added_to_cart, is_correction and purchased


def summary_of(example: Example) -> tuple:
    """What the manifest and the writer need of an example, in `_SUMMARY` order."""
    return (example.impression_id, example.label_time_ms, example.is_correction, example.added_to_cart,
            example.purchased, example.clicked, example.event_time_ms, example.label_strategy)


def serialized(example: Example) -> tuple[tuple, bytes]:
    """The example as its manifest summary and its tf.Example bytes: what a partition file is written from.

    Pairs of plain values cross a runner's shuffle far cheaper than Example tuples with a features dict."""
    return summary_of(example), serialize_example(example)


def write_partition(output_dir: str | Path, partition: str, examples: list[Example], source: dict,
                    watermark_ms: int | None = None, revision: int = 1,
                    keep_written: bool = False) -> tuple[dict, int]:
    """Writes one partition's TFRecord file, then its manifest; returns the manifest and the duplicates dropped.

    An example is identified by its impression and its kind (`kind_of`); a runner that retries work may deliver
    one twice, and the file must hold it once. With `keep_written`, the examples already in the partition's
    file stay in it unless a new example of the same kind replaces one (a streaming hour written again).
    """
    return write_serialized_partition(output_dir, partition, [serialized(e) for e in examples], source,
                                      watermark_ms, revision, keep_written)


def write_serialized_partition(output_dir: str | Path, partition: str, rows: list[tuple[tuple, bytes]], source: dict,
                               watermark_ms: int | None = None, revision: int = 1, keep_written: bool = False,
                               withdrawn: frozenset[tuple] = frozenset()) -> tuple[dict, int]:
    """`write_partition` for examples already `serialized`; with `keep_written`, the `withdrawn` kinds are
    taken out of what was written before."""
    directory = Path(output_dir) / partition
    records: dict[tuple, tuple[tuple, bytes]] = {}
    if keep_written and (directory / EXAMPLES_FILE).exists():
        if (directory / MANIFEST_FILE).exists():
            revision = max(revision, json.loads((directory / MANIFEST_FILE).read_text())["revision"] + 1)
        for record in read_records(directory / EXAMPLES_FILE):
            summary = _summary(parse_example_fields(record))
            kind = kind_of(summary)
            if kind not in withdrawn:
                records[kind] = (summary, record)
    for summary, record in rows:
        records[kind_of(summary)] = (tuple(summary), record)
    duplicates = 0 if keep_written else len(rows) - len(records)
    rows = sorted(records.values(), key=lambda row: row[0][:5])
    directory.mkdir(parents=True, exist_ok=True)
    _remove_orphans(directory)
    _write_atomically(directory / EXAMPLES_FILE, frame([record for _, record in rows]))
    column = dict(zip(_SUMMARY, zip(*(summary for summary, _ in rows))))  # empty when every example is withdrawn
    manifest = {
        "partition": partition,
        "file": EXAMPLES_FILE,
        "examples": len(rows),
        "labels": {
            "clicked": sum(map(bool, column.get("clicked", ()))),
            "added_to_cart": sum(map(bool, column.get("added_to_cart", ()))),
            "purchased": sum(map(bool, column.get("purchased", ()))),
            "corrections": sum(map(bool, column.get("is_correction", ()))),
        },
        "label_strategy": column["label_strategy"][0] if column else None,
        "event_time_ms": [min(column["event_time_ms"]), max(column["event_time_ms"])] if column else None,
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

    def process(self, partition_batches, watermark_ms: int | None = None):
        partition, batches = partition_batches
        yield self.write(partition, [row for batch in batches for row in batch], watermark_ms)

    def write(self, partition: str, rows: list[tuple[tuple, bytes]], watermark_ms: int | None, revision: int = 1,
              keep_written: bool = False, withdrawn: frozenset[tuple] = frozenset()) -> dict:
        manifest, duplicates = write_serialized_partition(self._output_dir, partition, rows, self._source,
                                                          watermark_ms, revision, keep_written, withdrawn)
        if duplicates:
            self._duplicates.inc(duplicates)
        self._files.inc()
        return manifest


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


def describe_partition(manifest: dict) -> str:
    """One line for a written partition: its hour, its examples and their labels."""
    labels = manifest["labels"]
    line = (f"{manifest['partition']}  {manifest['examples']:>7,} examples  clicked {labels['clicked']:>6,}  "
            f"carted {labels['added_to_cart']:>5,}  purchased {labels['purchased']:>5,}")
    if manifest.get("revision", 1) > 1:
        line += f"  (written again: revision {manifest['revision']})"
    return line


class WriteExamples(beam.PTransform):
    """(partition, [`serialized` example]) batches to TFRecord partitions by impression event hour, all of a partition's batches
    in one file; yields each partition's manifest."""

    def __init__(self, output_dir: str, source: dict, watermark=None):
        super().__init__()
        self._output_dir = str(output_dir)
        self._source = source
        self._watermark = watermark  # a singleton PCollection, recorded in each manifest

    def expand(self, batches):
        side = {} if self._watermark is None else {"watermark_ms": beam.pvalue.AsSingleton(self._watermark)}
        return (batches
                | "Group by event hour" >> beam.GroupByKey()
                | "Write partition and manifest" >> beam.ParDo(_WritePartition(self._output_dir, self._source), **side))


class _WriteSettledHour(beam.DoFn):
    """Holds an hour's example revisions until the watermark passes the hour's end plus the label horizon, then
    writes the newest of each kind of example, leaving out the withdrawn.

    A revision of the hour that still comes after that makes the partition be written again at once, whole,
    with a higher revision in its manifest. That happens when an event within the allowed lateness changes
    examples already released, and when the watermark jumps (a backlog read, then a pause) and the runner fires
    this timer before the upstream timers whose output it is waiting for. Once the allowed lateness has passed
    too, the hour's state is dropped.

    One timer does both, settling and then expiring: runners do not order two timers of a key by their
    timestamps when the watermark passes both at once (Flink fired an expiry before the write it should follow,
    and the hour's examples were dropped unwritten).
    """

    REVISIONS = BagStateSpec("revisions", beam.coders.registry.get_coder(Revision))
    WRITES = ReadModifyWriteStateSpec("writes", VarIntCoder())  # times the hour was written: its manifest revision
    HOUR = TimerSpec("hour", TimeDomain.WATERMARK)

    def __init__(self, output_dir: str, source: dict, horizon_ms: int, allowed_lateness_ms: int):
        self._writer = _WritePartition(output_dir, source)
        self._horizon_ms = horizon_ms
        self._allowed_lateness_ms = allowed_lateness_ms

    def setup(self):
        self._writer.setup()
        self._rewrites = Metrics.counter("examples", "partition_rewrites")

    def process(self, hour_revision, revisions=beam.DoFn.StateParam(REVISIONS), writes=beam.DoFn.StateParam(WRITES),
                hour=beam.DoFn.TimerParam(HOUR)):
        partition, change = hour_revision
        revisions.add(change)
        settle_ms = (change.example.event_time_ms // 3_600_000 + 1) * 3_600_000 + self._horizon_ms
        if writes.read():  # written already: this came after, so the partition is rewritten now
            yield self._write(partition, settle_ms, revisions, writes)
            return
        hour.set(Timestamp(micros=settle_ms * 1000))

    @on_timer(HOUR)
    def settle_or_expire(self, key=beam.DoFn.KeyParam, fire=beam.DoFn.TimestampParam,
                         revisions=beam.DoFn.StateParam(REVISIONS), writes=beam.DoFn.StateParam(WRITES),
                         hour=beam.DoFn.TimerParam(HOUR)):
        fire_ms = fire.micros // 1000
        if writes.read():  # the second firing: the allowed lateness has passed
            revisions.clear()
            writes.clear()
            return
        yield self._write(key, fire_ms, revisions, writes)
        hour.set(Timestamp(micros=(fire_ms + self._allowed_lateness_ms) * 1000))

    def _write(self, partition: str, watermark_ms: int, revisions, writes) -> dict:
        written = writes.read() or 0
        if written:
            self._rewrites.inc()
        writes.write(written + 1)
        newest: dict[tuple, Revision] = {}
        for change in revisions.read():
            kind = kind_of(summary_of(change.example))
            if kind not in newest or change.version >= newest[kind].version:
                newest[kind] = change
        rows = [serialized(change.example) for change in newest.values() if not change.withdrawn]
        withdrawn = frozenset(kind for kind, change in newest.items() if change.withdrawn)
        # A first write by this state may still find the hour on disk: its state expired and then a revision
        # came. The examples written then stay unless it replaces or withdraws one of them.
        return self._writer.write(partition, rows, watermark_ms, written + 1, keep_written=True, withdrawn=withdrawn)


class WriteExamplesStreaming(beam.PTransform):
    """Streaming example `Revision`s to the same hour partitions as WriteExamples, each hour written once it is
    settled and again whenever a revision of it comes after; yields the manifest of every write."""

    def __init__(self, output_dir: str, source: dict, horizon_ms: int, allowed_lateness_ms: int):
        super().__init__()
        self._fn = _WriteSettledHour(str(output_dir), source, horizon_ms, allowed_lateness_ms)

    def expand(self, revisions):
        return (revisions
                | "Key by event hour" >> beam.Map(
                    lambda change: (partition_of(change.example.event_time_ms), change)).with_output_types(
                    Tuple[str, Revision])
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
