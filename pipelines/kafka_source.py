"""Reading Kafka in Beam without the Java expansion service: a splittable DoFn over partition offset ranges.

Bounded mode reads fixed ranges: the offsets snapshotted when the job starts, or those that cover an
event-time interval (found with offsets_for_times on record timestamps). Each range splits into pieces of at
most `split_size` offsets, so the runner can read partitions in parallel and resume a range where it stopped.
"""
from __future__ import annotations

import time
from typing import Iterable, NamedTuple

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.transforms.core import RestrictionProvider

from pipelines.records import KafkaRecord


class PartitionRange(NamedTuple):
    """Offsets [start, stop) of one topic partition."""

    topic: str
    partition: int
    start: int
    stop: int


class SourceError(RuntimeError):
    """The broker cannot serve a range the job was asked to read."""


def _consumer(bootstrap_servers: str, **options):
    from kafka import KafkaConsumer

    return KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None,
                         client_id="valueloop-join", fetch_max_bytes=64 << 20,
                         max_partition_fetch_bytes=16 << 20, **options)


def snapshot_ranges(bootstrap_servers: str, topics: Iterable[str]) -> list[PartitionRange]:
    """Everything the topics hold now: from each partition's first kept offset to its end."""
    from kafka import TopicPartition

    consumer = _consumer(bootstrap_servers)
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        starts, ends = consumer.beginning_offsets(partitions), consumer.end_offsets(partitions)
        return [PartitionRange(tp.topic, tp.partition, starts[tp], ends[tp]) for tp in partitions]
    finally:
        consumer.close()


def ranges_for_times(bootstrap_servers: str, topics: Iterable[str], from_ms: int, to_ms: int) -> list[PartitionRange]:
    """The offsets of records whose timestamps lie in [from_ms, to_ms), per partition."""
    from kafka import TopicPartition

    consumer = _consumer(bootstrap_servers)
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = consumer.end_offsets(partitions)
        starts = consumer.offsets_for_times({tp: from_ms for tp in partitions})
        stops = consumer.offsets_for_times({tp: to_ms for tp in partitions})
        return [PartitionRange(tp.topic, tp.partition,
                               starts[tp].offset if starts[tp] else ends[tp],
                               stops[tp].offset if stops[tp] else ends[tp]) for tp in partitions]
    finally:
        consumer.close()


class _ReadRange(beam.DoFn, RestrictionProvider):
    """Reads one PartitionRange; as its own restriction provider it splits ranges into `split_size` offsets."""

    def __init__(self, bootstrap_servers: str, split_size: int, idle_timeout_s: float):
        self._bootstrap = bootstrap_servers
        self._split_size = split_size
        self._idle_timeout_s = idle_timeout_s
        self._consumer = None

    # -- restriction provider -----------------------------------------------------------------------

    def initial_restriction(self, element: PartitionRange) -> OffsetRange:
        return OffsetRange(element.start, element.stop)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def split(self, element, restriction: OffsetRange):
        yield from restriction.split(self._split_size)

    def restriction_size(self, element, restriction: OffsetRange) -> int:
        return restriction.size()

    # -- reading ------------------------------------------------------------------------------------

    def setup(self):
        self._consumer = _consumer(self._bootstrap)

    def teardown(self):
        if self._consumer is not None:
            self._consumer.close()

    def process(self, element: PartitionRange, tracker=beam.DoFn.RestrictionParam()):
        from kafka import TopicPartition

        restriction = tracker.current_restriction()
        tp = TopicPartition(element.topic, element.partition)
        consumer = self._consumer
        consumer.assign([tp])
        consumer.seek(tp, restriction.start)
        idle_since = time.monotonic()
        claimed = restriction.start - 1
        while True:
            stop = tracker.current_restriction().stop
            if consumer.position(tp) >= stop:
                break
            records = consumer.poll(timeout_ms=500, max_records=20_000).get(tp, ())
            if not records:
                self._check_reachable(consumer, tp, stop, idle_since)
                continue
            idle_since = time.monotonic()
            for r in records:
                if not tracker.try_claim(r.offset):
                    return
                claimed = r.offset
                yield KafkaRecord(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value)
        # Offsets without a record (transaction markers, compaction) still have to be claimed to finish.
        stop = tracker.current_restriction().stop
        if claimed < stop - 1:
            tracker.try_claim(stop - 1)

    def _check_reachable(self, consumer, tp, stop: int, idle_since: float) -> None:
        end = consumer.end_offsets([tp])[tp]
        if end < stop:
            raise SourceError(f"{tp.topic}[{tp.partition}]: asked to read up to offset {stop}, the log ends at {end}")
        if time.monotonic() - idle_since > self._idle_timeout_s:
            raise SourceError(f"{tp.topic}[{tp.partition}]: no records for {self._idle_timeout_s:.0f}s at offset "
                              f"{consumer.position(tp)} though the log ends at {end}")


class ReadKafkaRanges(beam.PTransform):
    """Reads the given offset ranges: one KafkaRecord per message, in offset order within a partition."""

    def __init__(self, bootstrap_servers: str, ranges: list[PartitionRange], split_size: int = 50_000,
                 idle_timeout_s: float = 60.0):
        super().__init__()
        self._bootstrap = bootstrap_servers
        self._ranges = [r for r in ranges if r.stop > r.start]
        self._split_size = split_size
        self._idle_timeout_s = idle_timeout_s

    def expand(self, pbegin):
        return (pbegin
                | "Offset ranges" >> beam.Create(self._ranges)
                | "Read offset ranges" >> beam.ParDo(_ReadRange(self._bootstrap, self._split_size, self._idle_timeout_s))
                .with_output_types(KafkaRecord))
