"""Each user's events, grouped in one step, labeled by the pure rules in `labeling`.

Every label (click, dwell, attribution of carts and purchases) concerns one user, so one grouping by the
user's shard (`decode.GroupByUserShard`) brings together everything a label needs; the bounded path then
labels each user of a shard in memory.
Dropping repeated deliveries and setting aside late events happens here, per user, and is counted.
"""
from __future__ import annotations

from typing import List, NamedTuple, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.examples import partition_of, serialized
from pipelines.labeling import Example, LabelConfig, label_user_events
from pipelines.records import DecodedEvent, LateEvent

EXAMPLES = "examples"
LATE = "late"


class LabeledStreams(NamedTuple):
    examples: beam.PCollection  # bounded: (partition, [examples.serialized example]); streaming: records.Revision
    late: beam.PCollection  # LateEvent


HOUR_MS = 3_600_000
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
    [`examples.serialized` example]) pairs: several per partition, one per shard that has some.

    `watermark` is a singleton PCollection (see `EstimateWatermark`). An event delivered more than
    `allowed_lateness_ms` after its event time goes to the late output instead.
    """

    def __init__(self, config: LabelConfig, watermark, from_ms: int | None = None, to_ms: int | None = None,
                 allowed_lateness_ms: int = 86_400_000):
        super().__init__()
        self._fn = _LabelShard(config, from_ms, to_ms, allowed_lateness_ms)
        self._watermark = watermark

    def expand(self, shard_events):
        outputs = shard_events | "Label each user's impressions" >> beam.ParDo(
            self._fn, watermark_ms=beam.pvalue.AsSingleton(self._watermark, default_value=NO_WATERMARK)
        ).with_output_types(Tuple[str, List[Tuple[tuple, bytes]]]).with_outputs(LATE, main=EXAMPLES)
        return LabeledStreams(outputs[EXAMPLES], outputs[LATE])


class _OldestOfNewest(beam.CombineFn):
    """KafkaChunks to the newest record time of each partition (the accumulator), then the oldest of those."""

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, newest: dict, chunk) -> dict:
        partition = (chunk.topic, chunk.partition)
        newest[partition] = max(newest.get(partition, NO_WATERMARK), max(record[1] for record in chunk.records))
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
    """KafkaChunks to the bounded input's watermark: per partition the newest record time, the minimum over partitions, less
    the out-of-orderness bound. Every event time at or before it has (up to the allowed lateness) been read."""

    def __init__(self, out_of_orderness_ms: int):
        super().__init__()
        self._bound = out_of_orderness_ms

    def expand(self, chunks):
        bound = self._bound
        return (chunks
                | "Oldest of the partitions' newest record times" >> beam.CombineGlobally(
                    _OldestOfNewest()).without_defaults()
                | "Less the out-of-orderness bound" >> beam.Map(lambda t: t - bound))
