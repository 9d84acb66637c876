"""Each user's events, grouped in one step, labeled by the pure rules in `labeling`.

Every label (click, dwell, attribution of carts and purchases) concerns one user, so a single GroupByKey on
user id brings together everything a label needs; the bounded path then labels each group in memory.
Dropping repeated deliveries and setting aside late events happens here, per user, and is counted.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.labeling import Example, LabelConfig, label_user_events
from pipelines.records import DecodedEvent, LateEvent

EXAMPLES = "examples"
LATE = "late"


class LabeledStreams(NamedTuple):
    examples: beam.PCollection  # labeling.Example
    late: beam.PCollection  # LateEvent


HOUR_MS = 3_600_000
NO_WATERMARK = -(2**62)  # an input without records settles nothing


def settled_hours_end_ms(watermark_ms: int, config: LabelConfig) -> int:
    """The end of the last whole event hour whose impressions the watermark has settled."""
    return (watermark_ms - config.horizon_ms) // HOUR_MS * HOUR_MS


class _LabelUser(beam.DoFn):
    def __init__(self, config: LabelConfig, from_ms: int | None, to_ms: int | None, allowed_lateness_ms: int):
        self._config = config
        self._from_ms, self._to_ms = from_ms, to_ms
        self._allowed_lateness_ms = allowed_lateness_ms

    def setup(self):
        self._duplicates = Metrics.counter("join", "duplicate_deliveries")
        self._late = Metrics.counter("join", "late_events")
        self._examples = Metrics.counter("join", "examples")

    def process(self, user_events, watermark_ms: int):
        _user, events = user_events
        # Only whole hours are written, so only impressions of hours that the watermark has wholly settled.
        to_ms = settled_hours_end_ms(watermark_ms, self._config)
        if self._to_ms is not None:
            to_ms = min(to_ms, self._to_ms)
        unique: dict[tuple[str, str], DecodedEvent] = {}
        duplicates = 0
        for event in events:
            key = (event.name, event.datum["event_id"])
            if key in unique:
                duplicates += 1
            else:
                unique[key] = event
        if duplicates:
            self._duplicates.inc(duplicates)
        on_time = []
        for event in unique.values():
            lateness = event.delivered_ms - event.datum["event_time_ms"] - self._allowed_lateness_ms
            if lateness > 0:
                self._late.inc()
                yield beam.pvalue.TaggedOutput(LATE, LateEvent(event, lateness))
            else:
                on_time.append((event.name, event.datum))
        for example in label_user_events(on_time, self._config, watermark_ms):
            if (self._from_ms is None or example.event_time_ms >= self._from_ms) and example.event_time_ms < to_ms:
                self._examples.inc()
                yield example


class LabelImpressions(beam.PTransform):
    """DecodedEvents to labeled examples of the impressions in [from_ms, to_ms) that the watermark settles.

    `watermark` is a singleton PCollection (see `EstimateWatermark`). An event delivered more than
    `allowed_lateness_ms` after its event time goes to the late output instead.
    """

    def __init__(self, config: LabelConfig, watermark, from_ms: int | None = None, to_ms: int | None = None,
                 allowed_lateness_ms: int = 86_400_000):
        super().__init__()
        self._fn = _LabelUser(config, from_ms, to_ms, allowed_lateness_ms)
        self._watermark = watermark

    def expand(self, events):
        outputs = (events
                   | "Key by user" >> beam.Map(lambda e: (e.datum["user_id"], e)).with_output_types(Tuple[str, DecodedEvent])
                   | "Group each user's events" >> beam.GroupByKey()
                   | "Label the user's impressions" >> beam.ParDo(
                       self._fn, watermark_ms=beam.pvalue.AsSingleton(self._watermark, default_value=NO_WATERMARK)
                   ).with_output_types(Example).with_outputs(LATE, main=EXAMPLES))
        return LabeledStreams(outputs[EXAMPLES], outputs[LATE])


class EstimateWatermark(beam.PTransform):
    """The bounded input's watermark: per partition the newest record time, the minimum over partitions, less
    the out-of-orderness bound. Every event time at or before it has (up to the allowed lateness) been read."""

    def __init__(self, out_of_orderness_ms: int):
        super().__init__()
        self._bound = out_of_orderness_ms

    def expand(self, records):
        bound = self._bound
        return (records
                | "Record time by partition" >> beam.Map(lambda r: ((r.topic, r.partition), r.timestamp_ms))
                | "Newest per partition" >> beam.CombinePerKey(max)
                | "Drop partition" >> beam.Values()
                | "Oldest of the partitions" >> beam.CombineGlobally(min).without_defaults()
                | "Less the out-of-orderness bound" >> beam.Map(lambda t: t - bound))
