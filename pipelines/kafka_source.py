"""Reading Kafka in Beam without the Java expansion service: splittable DoFns on kafka-python.

Bounded mode reads fixed ranges: the offsets snapshotted when the job starts, or those that cover an
event-time interval (found with offsets_for_times on record timestamps). Each range splits into pieces of at
most `split_size` offsets, so the runner can read partitions in parallel and resume a range where it stopped.
It reads with `kafka_io.fetcher` and emits chunks of records, claiming each chunk's offsets at once: one
element per message would cap the job near the runner's per-element speed.

Unbounded mode follows the topics with one consumer and checkpoints its per-partition offsets (and newest
event times) with the runner at every deferral, estimating the watermark from event time.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Iterable, NamedTuple

import apache_beam as beam
from apache_beam.io.iobase import RestrictionTracker
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.net.compat import KafkaNetClient

from kafka_io.fetcher import FRAME_MARGIN_BYTES, BatchTooLargeError, CorruptBatchError, FetchError, PartitionFetcher
from kafka_io.metadata import topic_configs
from pipelines.progress import Progress
from pipelines.records import KafkaChunk, KafkaRecord
from pipelines.stream_status import SAMPLES_KEPT, StreamStatus, read_status, write_status
from pipelines.worker import collect_garbage_less_often
from schemas.units import micros, now_ms, seconds, utc


_CONSUMER_FRAME_BYTES = 100_000_000  # kafka-python's consumer's own frame limit


class PartitionRange(NamedTuple):
    """Offsets [start, stop) of one topic partition."""

    topic: str
    partition: int
    start: int
    stop: int


class SourceError(RuntimeError):
    """The broker cannot serve a range the job was asked to read."""


def kafka_consumer(bootstrap_servers: str, isolation_level: str = "read_committed", **options):
    """kafka-python's consumer for offset look-ups and small reads, without a group, read_committed by default."""
    # kafka-python's consumer (3.0.12) spends about 100 ms finding the broker's version before its first request,
    # a tenth of a small bounded run; its network client finds it in a few milliseconds. Ask that, and pass it on.
    probe = KafkaNetClient(bootstrap_servers=bootstrap_servers, client_id="valueloop-join")
    try:
        version = probe.check_version()
    finally:
        probe.close()
    # read_committed, as the fetcher reads: a snapshot's end is the last stable offset, before open transactions.
    return KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None,
                         isolation_level=isolation_level, api_version=version,
                         client_id="valueloop-join", fetch_max_bytes=64 << 20,
                         max_partition_fetch_bytes=16 << 20, **options)


def stable_ends(bootstrap_servers: str, consumer, partitions: list, wait_s: float) -> dict:
    """Each partition's end as a read_committed reader sees it: the last stable offset, once the transactions that
    have already ended are readable.

    A transaction's commit returns to its producer before the broker has written the commit markers to its
    partitions; until then the last stable offset still stands before the transaction's records. So where it
    lies below the log's end, this waits, up to `wait_s`, for it to reach that end. A transaction still open
    after that stays outside the snapshot, as it does for any read_committed consumer.
    """
    ends = consumer.end_offsets(partitions)
    if wait_s <= 0:
        return ends
    uncommitted = kafka_consumer(bootstrap_servers, isolation_level="read_uncommitted")
    try:
        log_ends = uncommitted.end_offsets(partitions)
    finally:
        uncommitted.close()
    deadline = time.monotonic() + wait_s
    behind = [tp for tp in partitions if ends[tp] < log_ends[tp]]
    while behind and time.monotonic() < deadline:
        time.sleep(0.05)
        ends.update(consumer.end_offsets(behind))
        behind = [tp for tp in behind if ends[tp] < log_ends[tp]]
    return ends


def snapshot_ranges(bootstrap_servers: str, topics: Iterable[str], stable_wait_s: float = 10.0) -> list[PartitionRange]:
    """Everything the topics hold now: from each partition's first kept offset to its end (`stable_ends`)."""
    consumer = kafka_consumer(bootstrap_servers)
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        starts = consumer.beginning_offsets(partitions)
        ends = stable_ends(bootstrap_servers, consumer, partitions, stable_wait_s)
        return [PartitionRange(tp.topic, tp.partition, starts[tp], ends[tp]) for tp in partitions]
    finally:
        consumer.close()


def ranges_for_times(bootstrap_servers: str, topics: Iterable[str], from_ms: int, to_ms: int,
                     stable_wait_s: float = 10.0) -> list[PartitionRange]:
    """The offsets of records whose timestamps lie in [from_ms, to_ms), per partition, up to `stable_ends`."""
    consumer = kafka_consumer(bootstrap_servers)
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = stable_ends(bootstrap_servers, consumer, partitions, stable_wait_s)
        starts = consumer.offsets_for_times({tp: from_ms for tp in partitions})
        stops = consumer.offsets_for_times({tp: to_ms for tp in partitions})
        return [PartitionRange(tp.topic, tp.partition,
                               min(starts[tp].offset, ends[tp]) if starts[tp] else ends[tp],
                               min(stops[tp].offset, ends[tp]) if stops[tp] else ends[tp]) for tp in partitions]
    finally:
        consumer.close()


def largest_batch_bytes(bootstrap_servers: str, topics: Iterable[str], at_least: int | None = None) -> int:
    """The largest record batch a reader of `topics` must take: their largest max.message.bytes as the broker
    applies it now, or `at_least` (join.max_batch_bytes) where that is larger."""
    limits = [config.max_message_bytes for config in topic_configs(bootstrap_servers, topics).values()]
    return max([*limits, at_least or 0])


class _RunTracker(OffsetRestrictionTracker):
    """Offsets claimed a run at a time: a claim of offset n claims every unclaimed offset up to n as well.

    When the range has been split below n since the run was read, the claim takes what the range still holds
    (up to its new stop) and succeeds; the reader then emits only the records below the stop.
    """

    def try_claim(self, position):
        stop = self._range.stop
        last = self._last_claim_attempt if self._last_claim_attempt is not None else self._range.start - 1
        if position >= stop > last + 1:
            position = stop - 1
        return super().try_claim(position)


class _ReadRange(beam.DoFn, RestrictionProvider):
    """Reads one PartitionRange in chunks; as its own restriction provider it splits ranges into `split_size`
    offsets."""

    def __init__(self, bootstrap_servers: str, split_size: int, chunk_size: int, idle_timeout_s: float,
                 restamp=None, max_batch_bytes: int = 0):
        self._bootstrap = bootstrap_servers
        self._max_batch_bytes = max_batch_bytes
        self._split_size = split_size
        self._chunk_size = chunk_size
        self._idle_timeout_s = idle_timeout_s
        self._restamp = restamp
        self._fetcher = None

    # -- restriction provider -----------------------------------------------------------------------

    def initial_restriction(self, element: PartitionRange) -> OffsetRange:
        return OffsetRange(element.start, element.stop)

    def create_tracker(self, restriction: OffsetRange) -> _RunTracker:
        return _RunTracker(restriction)

    def split(self, element, restriction: OffsetRange):
        if self._restamp is not None:  # a range's stamps follow its records in order, from its start
            yield restriction
            return
        yield from restriction.split(self._split_size)

    def restriction_size(self, element, restriction: OffsetRange) -> int:
        return restriction.size()

    # -- reading ------------------------------------------------------------------------------------

    def setup(self):
        collect_garbage_less_often()
        self._fetcher = PartitionFetcher(self._bootstrap, client_id="valueloop-join",
                                         max_batch_bytes=self._max_batch_bytes)

    def teardown(self):
        if self._fetcher is not None:
            self._fetcher.close()

    def process(self, element: PartitionRange, tracker=beam.DoFn.RestrictionParam()):
        position = tracker.current_restriction().start
        claimed = position - 1
        idle_since = time.monotonic()
        stamp = self._restamp() if self._restamp is not None else None
        while position < tracker.current_restriction().stop:
            try:
                fetched = self._fetcher.fetch(element.topic, element.partition, position)
            except BatchTooLargeError as error:
                raise SourceError(f"{error} (its fetch size, or the largest max.message.bytes of the topics read "
                                  f"when the job was planned). A batch written before its topic's limit was lowered "
                                  f"can be larger: set join.max_batch_bytes to at least {error.response_bytes}") \
                    from None
            except (FetchError, CorruptBatchError) as error:
                raise SourceError(str(error)) from error
            stop = tracker.current_restriction().stop
            records = [r for r in fetched.records if r[0] < stop] if fetched.records and fetched.records[-1][0] >= stop \
                else fetched.records
            if not records:
                if fetched.next_offset > position:  # offsets without a record: transaction markers, or past the stop
                    position = fetched.next_offset
                    continue
                self._check_reachable(element, position, stop, fetched.high_watermark, idle_since)
                continue
            idle_since = time.monotonic()
            for at in range(0, len(records), self._chunk_size):
                run = records[at:at + self._chunk_size]
                if not tracker.try_claim(run[-1][0]):
                    return
                claimed = run[-1][0]
                stop = tracker.current_restriction().stop
                if claimed >= stop:  # split below the run's end while it was read
                    kept = [r for r in run if r[0] < stop]
                    if kept:
                        yield KafkaChunk(element.topic, element.partition, stamp(kept) if stamp else kept)
                    return
                yield KafkaChunk(element.topic, element.partition, stamp(run) if stamp else run)
            position = claimed + 1
        # Offsets without a record (transaction markers, compaction) still have to be claimed to finish.
        stop = tracker.current_restriction().stop
        if claimed < stop - 1:
            tracker.try_claim(stop - 1)

    def _check_reachable(self, element: PartitionRange, position: int, stop: int, end: int, idle_since: float) -> None:
        where = f"{element.topic}[{element.partition}]"
        if end < stop:
            raise SourceError(f"{where}: asked to read up to offset {stop}, the log ends at {end}")
        if time.monotonic() - idle_since > self._idle_timeout_s:
            raise SourceError(f"{where}: no records for {self._idle_timeout_s:.0f}s at offset {position} "
                              f"though the log ends at {end}")


class ReadKafkaRanges(beam.PTransform):
    """Reads the given offset ranges: KafkaChunks of up to `chunk_size` records, in offset order within a
    partition, read with `kafka_io.fetcher` (kafka-python's network client, record batches parsed in bulk).

    With `spread`, the ranges are shuffled to the runner's workers before they are read, for a runner that would
    otherwise read them all in the worker that started the job; a runner of one worker has nothing to gain by it.

    With `restamp`, a factory of functions from a chunk's records to records with other timestamps: each range
    gets one, and passes it its chunks in offset order (`decode.EventTimeStamps`); such ranges are read whole.

    `max_batch_bytes` is the largest record batch the reader takes (`largest_batch_bytes`): a broker sends a batch
    whole, however large, so a smaller limit would make a large batch unreadable.
    """

    def __init__(self, bootstrap_servers: str, ranges: list[PartitionRange], split_size: int = 50_000,
                 chunk_size: int = 5_000, idle_timeout_s: float = 60.0, spread: bool = True, restamp=None,
                 max_batch_bytes: int = 0):
        super().__init__()
        self._max_batch_bytes = max_batch_bytes
        self._restamp = restamp
        self._spread = spread
        self._bootstrap = bootstrap_servers
        self._ranges = [r for r in ranges if r.stop > r.start]
        self._split_size = split_size
        self._chunk_size = chunk_size
        self._idle_timeout_s = idle_timeout_s

    def expand(self, pbegin):
        return (pbegin
                | "Offset ranges" >> beam.Create(self._ranges, reshuffle=self._spread)
                | "Read offset ranges" >> beam.ParDo(
                    _ReadRange(self._bootstrap, self._split_size, self._chunk_size, self._idle_timeout_s,
                               self._restamp, self._max_batch_bytes))
                .with_output_types(KafkaChunk))


# -- unbounded: follow the topics ------------------------------------------------------------------------------


class FollowState(NamedTuple):
    """Where a follow stands: the next offset and the newest event time read, per partition."""

    positions: tuple  # ((topic, partition, next offset), ...)
    newest_event_ms: tuple  # ((topic, partition, event time ms), ...)


class _FollowTracker(RestrictionTracker):
    """Claims (topic, partition, offset) positions in any partition order; checkpoints the whole map."""

    def __init__(self, state: FollowState):
        self._positions = {(t, p): o for t, p, o in state.positions}
        self._newest = {(t, p): ms for t, p, ms in state.newest_event_ms}
        self._stopped = False

    def current_restriction(self) -> FollowState:
        return FollowState(tuple((t, p, o) for (t, p), o in sorted(self._positions.items())),
                           tuple((t, p, ms) for (t, p), ms in sorted(self._newest.items())))

    def try_claim(self, position) -> bool:
        topic, partition, offset, event_ms = position
        if self._stopped:
            return False
        self._positions[(topic, partition)] = offset + 1
        if event_ms > self._newest.get((topic, partition), -1):
            self._newest[(topic, partition)] = event_ms
        return True

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder != 0 or self._stopped:
            return None
        self._stopped = True  # checkpoint: everything claimed so far is done, the rest resumes from here
        return FollowState((), ()), self.current_restriction()

    def check_done(self):
        if not self._stopped:
            raise ValueError("a follow ends only by checkpointing (defer_remainder)")

    def current_progress(self):
        return None  # unknown: a follow never ends, and a made-up fraction invites the runner to split it

    def is_bounded(self):
        return False


class _FollowTopics(beam.DoFn, RestrictionProvider):
    """Reads every partition of the topics with one consumer. The watermark is the newest event time read in the
    partitions that still have records to read, their minimum (once all are caught up, the newest read
    anywhere), less the out-of-orderness bound.

    `event_time_of(value, record_ms)` gives a record's event time, or None for a record that is no valid event
    (a dead letter) or is stamped past the reader's clock: those move no watermark. With `stamp_event_time`,
    each record's timestamp becomes its partition's newest event time so far, for lateness measured against
    event time (`settings.LatenessReference`).

    Every `progress_log_s` it logs what it read (records, calls, records a call) and how far behind it is: the
    records between its positions and the partitions' ends, and the newest event time read against the clock;
    with `status_path`, it also writes where it stands there (`pipelines.stream_status`).
    """

    def __init__(self, bootstrap_servers: str, out_of_orderness_ms: int, event_time_of, poll_s: float = 1.0,
                 stamp_event_time: bool = False, max_batch_bytes: int = 0, progress_log_s: float = 60.0,
                 status_path=None):
        self._progress_log_s = progress_log_s
        self._status_path = status_path
        self._bootstrap = bootstrap_servers
        self._max_batch_bytes = max_batch_bytes
        self._bound = out_of_orderness_ms
        self._event_time_of = event_time_of
        self._poll_s = poll_s
        self._stamp_event_time = stamp_event_time
        self._consumer = None

    def initial_restriction(self, element: FollowState) -> FollowState:
        return element

    def create_tracker(self, restriction: FollowState) -> _FollowTracker:
        return _FollowTracker(restriction)

    def restriction_size(self, element, restriction) -> int:
        return 1

    def split(self, element, restriction):
        yield restriction

    def setup(self):
        self._progress = Progress("stream", self._progress_log_s)
        # the records behind of earlier periods, kept across a restart of the job: how long it has been behind
        try:
            before = read_status(self._status_path) if self._status_path is not None else None
        except ValueError:
            before = None
        self._samples = list(before.samples) if before is not None else []
        # A broker sends a batch whole past the fetch limits: the consumer's frames must hold the largest one.
        self._consumer = kafka_consumer(self._bootstrap, receive_message_max_bytes=max(
            _CONSUMER_FRAME_BYTES, self._max_batch_bytes + FRAME_MARGIN_BYTES))

    def teardown(self):
        if self._consumer is not None:
            self._consumer.close()

    @beam.DoFn.unbounded_per_element()
    def process(self, element: FollowState, tracker=beam.DoFn.RestrictionParam(),
                watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        state = tracker.current_restriction()
        partitions = {(t, p): TopicPartition(t, p) for t, p, _ in state.positions}
        consumer = self._consumer
        consumer.assign(list(partitions.values()))
        for t, p, offset in state.positions:
            consumer.seek(partitions[(t, p)], offset)
        began = time.monotonic()
        deadline = began + self._poll_s
        read, polling_s = 0, 0.0
        newest = {(t, p): ms for t, p, ms in state.newest_event_ms}
        while time.monotonic() < deadline:
            polled = time.monotonic()
            batches = consumer.poll(timeout_ms=200, max_records=5_000)
            polling_s += time.monotonic() - polled
            for tp, records in batches.items():
                for r in records:
                    event_ms = self._event_time_of(r.value, r.timestamp)
                    if not tracker.try_claim((r.topic, r.partition, r.offset, -1 if event_ms is None else event_ms)):
                        return
                    read += 1
                    frontier = newest.get((r.topic, r.partition), -1)
                    if event_ms is not None and event_ms > frontier:
                        frontier = newest[(r.topic, r.partition)] = event_ms
                    # No valid event (event_ms None) keeps its own record time, by which the decode step judges
                    # it: a record stamped past the clock is a dead letter for that, whatever the lateness mode.
                    delivered_ms = frontier if self._stamp_event_time and frontier >= 0 and event_ms is not None \
                        else r.timestamp
                    # A dead letter goes out at its partition's event time: it has none of its own to tell.
                    yield TimestampedValue(KafkaRecord(r.topic, r.partition, r.offset, delivered_ms, r.key, r.value),
                                           seconds(event_ms if event_ms is not None else max(frontier, 0)))
        claimed = tracker.current_restriction()
        try:
            ends = consumer.end_offsets(list(partitions.values()))
        except KafkaError:  # the broker away (a restart, a leader moving): the watermark waits for the next round
            tracker.defer_remainder(Duration(seconds=1))
            return
        next_offset = {(t, p): o for t, p, o in claimed.positions}
        newest = {(t, p): ms for t, p, ms in claimed.newest_event_ms}
        behind = [newest.get(k, -1) for k in partitions if next_offset[k] < ends[partitions[k]]]
        # A partition with records still to read holds the watermark back; once every partition is caught up, a
        # quiet one (a sparse purchases partition, say) does not: all there is has been read.
        candidate = min(behind) if behind else max(newest.values(), default=-1)
        if candidate >= 0:
            estimate = Timestamp(micros=micros(candidate - self._bound))
            if watermark.current_watermark() is None or estimate > watermark.current_watermark():
                watermark.set_watermark(estimate)
        # the call's time beyond polling is its records' way downstream: the steps fused with it, and the runner
        self._progress.add(records=read, source_calls=1, polling_ms=round(polling_s * 1000),
                           call_ms=round((time.monotonic() - began) * 1000))
        self._progress.sample(records_a_call=read)
        newest_ms = max(newest.values(), default=-1)
        records_behind = sum(max(ends[partitions[k]] - next_offset[k], 0) for k in partitions)
        reported = self._progress.report(
            records_behind=records_behind,
            newest_event_time=utc(newest_ms).isoformat(timespec="seconds") if newest_ms >= 0 else "none yet",
            event_time_behind_s=round((now_ms() - newest_ms) / 1000) if newest_ms >= 0 else "unknown")
        if reported is not None and self._status_path is not None:
            self._write_status(partitions, next_offset, ends, newest_ms, watermark.current_watermark())
        tracker.defer_remainder(Duration(seconds=0 if read else 0.5))


    def _write_status(self, partitions, next_offset, ends, newest_ms: int, current_watermark) -> None:
        updated = now_ms()
        status = StreamStatus(
            updated, self._progress_log_s,
            [(t, p, next_offset[(t, p)], ends[tp]) for (t, p), tp in sorted(partitions.items())], newest_ms,
            None if current_watermark is None else current_watermark.micros // 1000, [])
        self._samples = (self._samples + [(updated, status.records_behind)])[-SAMPLES_KEPT:]
        write_status(self._status_path, dataclasses.replace(status, samples=self._samples))


def start_positions(bootstrap_servers: str, topics: Iterable[str], from_ms: int | None = None) -> FollowState:
    """Each partition's first kept offset, or the first offset at or after record time `from_ms`."""
    ranges = snapshot_ranges(bootstrap_servers, topics) if from_ms is None else \
        ranges_for_times(bootstrap_servers, topics, from_ms, 2**62)
    return FollowState(tuple((r.topic, r.partition, r.start) for r in ranges), ())


class FollowKafkaTopics(beam.PTransform):
    """Follows the topics from `start` for as long as the job runs: KafkaRecords stamped with event time; batches
    of up to `max_batch_bytes` (`largest_batch_bytes`)."""

    def __init__(self, bootstrap_servers: str, start: FollowState, out_of_orderness_ms: int, event_time_of,
                 stamp_event_time: bool = False, max_batch_bytes: int = 0, progress_log_s: float = 60.0,
                 status_path=None):
        super().__init__()
        self._fn = _FollowTopics(bootstrap_servers, out_of_orderness_ms, event_time_of,
                                 stamp_event_time=stamp_event_time, max_batch_bytes=max_batch_bytes,
                                 progress_log_s=progress_log_s, status_path=status_path)
        self._start = start

    def expand(self, pbegin):
        return (pbegin
                | "Start positions" >> beam.Create([self._start])
                | "Follow the topics" >> beam.ParDo(self._fn).with_output_types(KafkaRecord))
