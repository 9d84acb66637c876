"""Each user's events, grouped in one step, labeled by the pure rules in `labeling`.

Every label (click, dwell, attribution of carts and purchases) concerns one user, so one grouping by the
user's shard (`decode.GroupByUserShard`) brings together everything a label needs; the bounded path then
labels each user of a shard in memory.
Dropping repeated deliveries and setting aside late events happens here, per user, and is counted.
"""
from __future__ import annotations

from operator import itemgetter
from typing import List, NamedTuple, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from config.join import LabelConfig
from pipelines.labeling import Example, label_user_events
from pipelines.partitions import partition_of, serialized
from pipelines.records import DecodedEvent, LateEvent
from schemas import BadEventError, EventDecoder
from schemas.units import DAY_MS, HOUR_MS

EXAMPLES = "examples"
LATE = "late"


class LabeledStreams(NamedTuple):
    examples: beam.PCollection  # bounded: (partition, [partitions.serialized example]); streaming: records.Revision
    late: beam.PCollection  # LateEvent


NO_WATERMARK = -(2**62)  # an input without records settles nothing


def settled_hours_end_ms(watermark_ms: int, config: LabelConfig) -> int:
    """The end of the last whole event hour whose impressions the watermark has settled."""
    return (watermark_ms - config.horizon_ms) // HOUR_MS * HOUR_MS


class _LabelShard(beam.DoFn):
    """Labels every user of one shard, each user's events on their own; yields examples grouped by hour."""

    def __init__(self, config: LabelConfig, from_ms: int | None, to_ms: int | None, allowed_lateness_ms: int):
        self._config = config
        self._from_ms, self._to_ms = from_ms, to_ms
        self._allowed_lateness_ms = allowed_lateness_ms

    def setup(self):
        self._duplicates = Metrics.counter("join", "duplicate_deliveries")
        self._late = Metrics.counter("join", "late_events")
        self._examples = Metrics.counter("join", "examples")

    def process(self, shard_events, watermark_ms: int):
        _shard, events = shard_events
        by_user: dict[str, list[DecodedEvent]] = {}
        for event in events:
            by_user.setdefault(event.datum["user_id"], []).append(event)
        # Only whole hours are written, so only impressions of hours that the watermark has wholly settled.
        to_ms = settled_hours_end_ms(watermark_ms, self._config)
        if self._to_ms is not None:
            to_ms = min(to_ms, self._to_ms)
        from_ms = self._from_ms if self._from_ms is not None else -(2**62)
        by_hour: dict[int, list[Example]] = {}
        for events in by_user.values():
            for example in self._label_user(events, watermark_ms):
                if isinstance(example, beam.pvalue.TaggedOutput):
                    yield example
                elif from_ms <= example.event_time_ms < to_ms:
                    by_hour.setdefault(example.event_time_ms // HOUR_MS, []).append(example)
        self._examples.inc(sum(len(examples) for examples in by_hour.values()))
        for hour, examples in by_hour.items():
            yield partition_of(hour * HOUR_MS), [serialized(e) for e in examples]

    def _label_user(self, events: list[DecodedEvent], watermark_ms: int):
        seen: set[tuple[str, str]] = set()
        on_time = []
        allowed_ms = self._allowed_lateness_ms
        for event in events:
            name, datum, delivered_ms = event
            key = (name, datum["event_id"])
            if key in seen:  # a repeated delivery: the first one counts
                self._duplicates.inc()
                continue
            seen.add(key)
            lateness = delivered_ms - datum["event_time_ms"] - allowed_ms
            if lateness > 0:
                self._late.inc()
                yield beam.pvalue.TaggedOutput(LATE, LateEvent(event, lateness))
            else:
                on_time.append((name, datum))
        yield from label_user_events(on_time, self._config, watermark_ms)


class LabelImpressions(beam.PTransform):
    """(user shard, [DecodedEvent]) pairs, each with every event of its users (see `decode.GroupByUserShard`), to
    the labeled examples of the impressions in [from_ms, to_ms) that the watermark settles, as (partition,
    [`partitions.serialized` example]) pairs: several per partition, one per shard that has some.

    `watermark` is a singleton PCollection (see `EstimateWatermark`). An event delivered more than
    `allowed_lateness_ms` after its event time goes to the late output instead.
    """

    def __init__(self, config: LabelConfig, watermark, from_ms: int | None = None, to_ms: int | None = None,
                 allowed_lateness_ms: int = DAY_MS):
        super().__init__()
        self._fn = _LabelShard(config, from_ms, to_ms, allowed_lateness_ms)
        self._watermark = watermark

    def expand(self, shard_events):
        outputs = shard_events | "Label each user's impressions" >> beam.ParDo(
            self._fn, watermark_ms=beam.pvalue.AsSingleton(self._watermark, default_value=NO_WATERMARK)
        ).with_output_types(Tuple[str, List[Tuple[tuple, bytes]]]).with_outputs(LATE, main=EXAMPLES)
        return LabeledStreams(outputs[EXAMPLES], outputs[LATE])


class _NewestHonestTime(beam.DoFn):
    """A KafkaChunk to (topic, partition, newest record time) over the records that are valid events stamped no
    later than the clock allows; nothing for a chunk without one. A dead letter's timestamp says nothing of how
    far event time has come (random bytes carry whatever time their producer gave them), and one valid-looking
    record stamped a year ahead would otherwise settle every open hour at once.

    Only the newest candidate is decoded, and the next newest only when it is no valid event: about one decode
    per chunk."""

    def __init__(self, topic_records: dict[str, str], clock):
        self._topic_records = topic_records
        self._clock = clock

    def setup(self):
        self._decoders = {topic: EventDecoder(expected={name}) for topic, name in self._topic_records.items()}
        self._latest_ms = self._clock.latest_ms()

    def _valid(self, topic: str, partition: int, record) -> bool:
        decoder = self._decoders.get(topic)
        if decoder is None:
            return False
        offset, timestamp_ms, _key, value = record
        try:
            decoder.decode(value, topic, partition, offset, timestamp_ms, self._latest_ms)
        except BadEventError:
            return False
        return True

    def process(self, chunk):
        newest = max(chunk.records, key=itemgetter(1))
        if not self._valid(chunk.topic, chunk.partition, newest):
            newest = next((r for r in sorted(chunk.records, key=itemgetter(1), reverse=True)
                           if self._valid(chunk.topic, chunk.partition, r)), None)
            if newest is None:
                return
        yield chunk.topic, chunk.partition, newest[1]


class _OldestOfNewest(beam.CombineFn):
    """(topic, partition, record time) triples to the newest time of each partition (the accumulator), then the
    oldest of those."""

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, newest: dict, sample) -> dict:
        topic, partition, time_ms = sample
        if time_ms > newest.get((topic, partition), NO_WATERMARK):
            newest[(topic, partition)] = time_ms
        return newest

    def merge_accumulators(self, accumulators) -> dict:
        merged: dict = {}
        for newest in accumulators:
            for partition, time_ms in newest.items():
                merged[partition] = max(merged.get(partition, NO_WATERMARK), time_ms)
        return merged

    def extract_output(self, newest: dict) -> int:
        return min(newest.values()) if newest else NO_WATERMARK


class EstimateWatermark(beam.PTransform):
    """KafkaChunks to the bounded input's watermark: per partition the newest time of a record that is a valid
    event stamped no later than `clock` allows (`_NewestHonestTime`), the minimum over partitions, less the
    out-of-orderness bound. Every event time at or before it has (up to the allowed lateness) been read.

    A partition whose records are all dead letters holds nothing back, as an empty one does not. With records
    stamped by `decode.EventTimeStamps`, it is the watermark of event time."""

    def __init__(self, out_of_orderness_ms: int, event_topics: dict[str, str], clock):
        super().__init__()
        self._bound = out_of_orderness_ms
        self._topic_records = {topic: name for name, topic in event_topics.items()}
        self._clock = clock

    def expand(self, chunks):
        bound = self._bound
        return (chunks
                | "Newest valid record time per chunk" >> beam.ParDo(
                    _NewestHonestTime(self._topic_records, self._clock))
                | "Oldest of the partitions' newest record times" >> beam.CombineGlobally(
                    _OldestOfNewest()).without_defaults()
                | "Less the out-of-orderness bound" >> beam.Map(lambda t: t - bound))
