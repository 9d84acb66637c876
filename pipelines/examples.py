"""The Beam transforms that write labeled examples (one composite, `WriteExamples`: bounded batches to whole
partitions, or streaming revisions to hours once the watermark settles them) and late events beside them
(`partitions` holds the layout)."""
from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from pipelines.partitions import kind_of, serialized, summary_of, write_serialized_partition
from pipelines.records import Revision
from schemas.units import DAY_MS, HOUR_MS, from_micros, micros


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

    def process(self, hour_revisions, revisions=beam.DoFn.StateParam(REVISIONS),
                writes=beam.DoFn.StateParam(WRITES), hour=beam.DoFn.TimerParam(HOUR)):
        partition, changes = hour_revisions
        for change in changes:
            revisions.add(change)
        settle_ms = (changes[0].example.event_time_ms // HOUR_MS + 1) * HOUR_MS + self._horizon_ms
        if writes.read():  # written already: this came after, so the partition is rewritten now
            yield self._write(partition, settle_ms, revisions, writes)
            return
        hour.set(Timestamp(micros=micros(settle_ms)))

    @on_timer(HOUR)
    def settle_or_expire(self, key=beam.DoFn.KeyParam, fire=beam.DoFn.TimestampParam,
                         revisions=beam.DoFn.StateParam(REVISIONS), writes=beam.DoFn.StateParam(WRITES),
                         hour=beam.DoFn.TimerParam(HOUR)):
        fire_ms = from_micros(fire.micros)
        if writes.read():  # the second firing: the allowed lateness has passed
            revisions.clear()
            writes.clear()
            return
        yield self._write(key, fire_ms, revisions, writes)
        hour.set(Timestamp(micros=micros(fire_ms + self._allowed_lateness_ms)))

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


class WriteExamples(beam.PTransform):
    """Labeled examples to TFRecord partitions by impression event hour (`partitions` holds the layout); yields
    the manifest of every partition written. Bounded or streaming, as the label step (`join.LabelImpressions`):

    - with a `watermark` (a singleton PCollection, recorded in each manifest): (partition, [`serialized`
      example]) batches, all of a partition's batches written at once in one file;
    - without one: (partition, [`Revision`]) batches of example revisions, each hour written once the runner's
      watermark passes its end plus `horizon_ms`, and again, whole, whenever a revision of it comes within
      `allowed_lateness_ms` after that.
    """

    def __init__(self, output_dir: str, source: dict, watermark=None, horizon_ms: int | None = None,
                 allowed_lateness_ms: int = DAY_MS):
        super().__init__()
        if watermark is None and horizon_ms is None:
            raise ValueError("a stream's examples need horizon_ms: when an hour's labels settle")
        self._watermark = watermark
        self._fn = _WritePartition(str(output_dir), source) if watermark is not None else \
            _WriteSettledHour(str(output_dir), source, horizon_ms, allowed_lateness_ms)

    def expand(self, examples):
        if self._watermark is not None:
            return (examples
                    | "Group by event hour" >> beam.GroupByKey()
                    | "Write partition and manifest" >> beam.ParDo(
                        self._fn, watermark_ms=beam.pvalue.AsSingleton(self._watermark)))
        return examples | "Write each hour once settled" >> beam.ParDo(self._fn)


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
