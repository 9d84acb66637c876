"""Messages to events: decode single-object Avro, validate, attach event time; route the rest to dead letters
(written by `dead_letters`)."""
from __future__ import annotations

import zlib
from typing import List, NamedTuple, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from kafka_io._records import pack_records, unpack_records
from pipelines.records import DeadLetter, DecodedEvent, KafkaChunk, KafkaRecord, PackedChunk
from pipelines.worker import collect_garbage_less_often
from schemas import BadEventError, EventDecoder
from schemas.validation import DEFAULT_MAX_FUTURE_SKEW_MS
from schemas.units import now_ms, seconds

EVENTS = "events"
DEAD_LETTERS = "dead_letters"


class DecodedStreams(NamedTuple):
    events: beam.PCollection  # DecodedEvent timestamped with its event time; from groups, (shard, [DecodedEvent])
    dead_letters: beam.PCollection  # DeadLetter


class RecordClock(NamedTuple):
    """The latest record timestamp a reader believes: a record stamped later comes from a producer whose clock is
    wrong (a dead letter, `record_time_ahead`), and must not move a watermark. A bounded job fixes the moment
    once, when it plans its offsets, so every worker judges alike; a streaming job reads the clock as it goes."""

    ahead_ms: int  # how far past the clock a record may be stamped: producers' clocks differ a little
    fixed_ms: int | None = None  # the moment the bounded job planned its offsets; None: now

    def latest_ms(self) -> int:
        moment_ms = self.fixed_ms if self.fixed_ms is not None else now_ms()
        return moment_ms + self.ahead_ms


class EventTimeStamps:
    """Stamps one partition's records, passed in offset order, with the partition's event-time frontier: the
    newest plausible event time among the records up to and including each. What lateness is measured against
    when record timestamps say nothing of when events were delivered (a replay stamps them all with its own
    time): an event is then late by how far its time lies behind events read before it.

    A plausible event time is one a valid event could carry: no later than the record's timestamp, or the
    reader's clock, plus the decoder's skew. Records before the first plausible one keep their timestamps. A
    record stamped past the clock keeps its own timestamp: the decoder sends it to the dead letters for that
    (`record_time_ahead`), as it does when lateness is measured against record time. One instance serves one
    partition range, from its start.
    """

    def __init__(self, clock: RecordClock, skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS):
        self._peek = EventDecoder().peek_all
        self._latest_ms = clock.latest_ms()
        self._skew_ms = skew_ms
        self._frontier = -1

    def __call__(self, records: list[tuple]) -> list[tuple]:
        latest, skew, frontier = self._latest_ms, self._skew_ms, self._frontier
        stamped = []
        for (offset, timestamp_ms, key, value), event_ms in zip(
                records, self._peek([record[3] for record in records], "event_time_ms")):
            if timestamp_ms > latest:
                stamped.append((offset, timestamp_ms, key, value))
                continue
            if type(event_ms) is int and frontier < event_ms <= timestamp_ms + skew:
                frontier = event_ms
            stamped.append((offset, frontier if frontier > 0 else timestamp_ms, key, value))
        self._frontier = frontier
        return stamped


class _Decode(beam.DoFn):
    def __init__(self, topic_records: dict[str, str], clock: RecordClock):
        self._topic_records = topic_records  # topic -> the record name it carries
        self._clock = clock
        self._decoders: dict[str, EventDecoder] = {}
        self._counters: dict[str, object] = {}

    def setup(self):
        self._decoders = {topic: EventDecoder(expected={name}) for topic, name in self._topic_records.items()}
        self._unknown_topic = EventDecoder(expected=set())
        self._decoded = Metrics.counter("decode", "events")

    def start_bundle(self):
        self._latest_ms = self._clock.latest_ms()

    def _dead_letter(self, error: BadEventError, timestamp_ms: int, key: bytes | None, value: bytes | None):
        reason = error.reason.value
        if reason not in self._counters:
            self._counters[reason] = Metrics.counter("dead_letters", reason)
        self._counters[reason].inc()
        return beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(
            error.topic, error.partition, error.offset, timestamp_ms, key, value, reason, error.detail))

    def process(self, record: KafkaRecord):
        decoder = self._decoders.get(record.topic, self._unknown_topic)
        try:
            event = decoder.decode(record.value, record.topic, record.partition, record.offset, record.timestamp_ms,
                                   self._latest_ms)
        except BadEventError as error:
            yield self._dead_letter(error, record.timestamp_ms, record.key, record.value)
            return
        self._decoded.inc()
        yield TimestampedValue(DecodedEvent(event.name, event.datum, record.timestamp_ms),
                               seconds(event.datum["event_time_ms"]))


def user_shard(user_id: str | None, shards: int) -> int:
    """The shard of a user's events: the same in every worker process (str hashes are salted per process)."""
    return zlib.crc32(user_id.encode()) % shards if user_id is not None else 0


class _SplitByShard(beam.DoFn):
    def __init__(self, shards: int):
        self._shards = shards

    def setup(self):
        self._users = EventDecoder().peek_all

    def process(self, chunk: KafkaChunk):
        shards, shard_of = self._shards, {}
        by_shard: dict[int, list[tuple]] = {}
        # A message whose user cannot be read goes to shard 0, where decoding sends it to the dead letters.
        for record, user in zip(chunk.records, self._users([record[3] for record in chunk.records], "user_id")):
            shard = shard_of.get(user)
            if shard is None:
                shard = shard_of[user] = user_shard(user, shards)
            records = by_shard.get(shard)
            if records is None:
                records = by_shard[shard] = []
            records.append(record)
        for shard, records in by_shard.items():
            yield shard, PackedChunk(chunk.topic, chunk.partition, pack_records(records))


class GroupByUserShard(beam.PTransform):
    """KafkaChunks to (shard, [PackedChunk]) groups: every message of a user, still undecoded and packed, in one
    of `shards` groups, by the user id read from the message (the only field read here).

    Messages, not decoded events, go through the shuffle: a decoded datum costs some twenty times as much to carry
    as its bytes. And groups of shards, not users, are the keys: a few dozen groups of lists cost the runner far
    less than one element per event (about 70,000 elements/s through a GroupByKey here).
    """

    def __init__(self, shards: int):
        super().__init__()
        self._shards = shards

    def expand(self, chunks):
        return (chunks
                | "Split chunks by user shard" >> beam.ParDo(_SplitByShard(self._shards)).with_output_types(
                    Tuple[int, PackedChunk])
                | "Group by user shard" >> beam.GroupByKey())


class _DecodeGroup(_Decode):
    def setup(self):
        super().setup()
        collect_garbage_less_often()

    def process(self, shard_chunks):
        shard, chunks = shard_chunks
        events: list[DecodedEvent] = []
        for chunk in chunks:
            decoder = self._decoders.get(chunk.topic, self._unknown_topic)
            decoded, bad = decoder.decode_all(unpack_records(chunk.packed), chunk.topic, chunk.partition, DecodedEvent,
                                              self._latest_ms)
            events += decoded
            for (_offset, timestamp_ms, key, value), error in bad:
                yield self._dead_letter(error, timestamp_ms, key, value)
        self._decoded.inc(len(events))
        yield shard, events


class DecodeEvents(beam.PTransform):
    """Messages to DecodedEvents; undecodable or invalid messages, and records stamped past the `clock`, to dead
    letters. Per record (KafkaRecords, a stream), each event is stamped with its event time, the one place an
    element's event time is attached; `grouped`, it takes (shard, [PackedChunk]) groups (`GroupByUserShard`, a
    bounded read) to (shard, [DecodedEvent]), whose labeling reads event time from the events themselves."""

    def __init__(self, event_topics: dict[str, str], clock: RecordClock, grouped: bool = False):
        super().__init__()
        topic_records = {topic: name for name, topic in event_topics.items()}
        self._grouped = grouped
        self._fn = (_DecodeGroup if grouped else _Decode)(topic_records, clock)

    def expand(self, messages):
        if self._grouped:
            label, output = "Decode and validate", Tuple[int, List[DecodedEvent]]
        else:
            label, output = "Decode, validate, attach event time", DecodedEvent
        outputs = messages | label >> beam.ParDo(self._fn).with_output_types(output).with_outputs(
            DEAD_LETTERS, main=EVENTS)
        return DecodedStreams(outputs[EVENTS], outputs[DEAD_LETTERS])
