"""The labeling core: each user's events labeled by the pure rules in `labeling`, bounded or streaming.

Every label (click, dwell, attribution of carts and purchases) concerns one user. One composite,
`LabelImpressions`, takes either path, by its watermark:
- **bounded** (a watermark estimated from what was read, `EstimateWatermark`): one grouping by the user's shard
  (`decode.GroupByUserShard`) brings together everything a label needs, and each user of a shard is labeled in
  memory;
- **streaming** (the runner's watermark): each user's events are held in state and released by event-time
  timers. At each timer it asks the same pure function for the examples whose label time lies between the
  previous firing and this one, so the two paths cannot disagree. A timer fires when the watermark reaches a
  moment at which some example of the user becomes due (an impression settles; under fake-negative, a click is
  known or a conversion arrives). An event that arrives behind the user's last release, within the allowed
  lateness, may concern examples already out: they are labeled again with it, and what it adds, changes or
  withdraws comes out at once as a newer `Revision` (a late purchase for an impression that settled, a late
  click that moves a conversion's attribution to another impression). The writer keeps the newest revision of
  each example, so what is written equals what the bounded join, which sees every event at once, writes.

Both drop repeated deliveries and set aside late events by one rule (`lateness_ms`), per user, and count them.
"""
from __future__ import annotations

import time
from operator import itemgetter
from typing import List, NamedTuple, Tuple

import apache_beam as beam
from apache_beam.coders import IterableCoder, StrUtf8Coder, TupleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from config.join import LabelConfig, LabelStrategy
from pipelines.labeling import Example, label_user_events
from pipelines.partitions import kind_of, partition_of, serialized, summary_of
from pipelines.progress import Progress
from pipelines.records import DecodedEvent, LateEvent, Revision
from schemas import BadEventError, EventDecoder
from schemas.units import DAY_MS, HOUR_MS, from_micros, micros

EXAMPLES = "examples"
LATE = "late"


class LabeledStreams(NamedTuple):
    examples: beam.PCollection  # bounded: (partition, [partitions.serialized example]); streaming: records.Revision
    late: beam.PCollection  # LateEvent


NO_WATERMARK = -(2**62)  # an input without records settles nothing


def settled_hours_end_ms(watermark_ms: int, config: LabelConfig) -> int:
    """The end of the last whole event hour whose impressions the watermark has settled."""
    return (watermark_ms - config.horizon_ms) // HOUR_MS * HOUR_MS


def lateness_ms(event: DecodedEvent, allowed_lateness_ms: int, released_ms: int = -1) -> int:
    """How far past the allowed lateness `event` came (positive: late): behind its own delivery time, or behind
    the user's last release in a stream (`released_ms`, -1 before the first), whichever is later. The one rule
    of both paths."""
    event_ms = event.datum["event_time_ms"]
    behind_release = released_ms - event_ms - allowed_lateness_ms if released_ms >= 0 else -1
    return max(event.delivered_ms - event_ms - allowed_lateness_ms, behind_release)


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
            lateness = lateness_ms(event, allowed_ms)
            if lateness > 0:
                self._late.inc()
                yield beam.pvalue.TaggedOutput(LATE, LateEvent(event, lateness))
            else:
                on_time.append((name, datum))
        yield from label_user_events(on_time, self._config, watermark_ms)


_EVENT_CODER = beam.coders.registry.get_coder(DecodedEvent)
_PROGRESS_CODER = TupleCoder([VarIntCoder(), VarIntCoder(), IterableCoder(StrUtf8Coder())])


def _release_hint_ms(event: DecodedEvent, config: LabelConfig) -> int | None:
    """When this event alone could make an example due (exact for impressions, a lower bound otherwise)."""
    t = event.datum["event_time_ms"]
    if event.name == "Impression":
        if config.strategy is LabelStrategy.WAIT_FOR_WINDOW:
            return t + config.horizon_ms
        return t + config.click_window_ms
    if config.strategy is LabelStrategy.FAKE_NEGATIVE:
        return t
    return None


def _concerned_from_ms(held: list[DecodedEvent], event: DecodedEvent, config: LabelConfig) -> int:
    """The oldest impression time whose examples `event` can change. A click or conversion at t concerns only
    impressions of the label horizon before it: a conversion's click is at most its window earlier, and that
    click's impression at most the click window before the click. A click or dwell also concerns its own
    impression, wherever it lies."""
    at_ms = event.datum["event_time_ms"] - config.horizon_ms
    own = event.datum.get("impression_id") if event.name in ("Click", "Dwell") else None
    if own is not None:
        at_ms = min([at_ms] + [e.datum["event_time_ms"] for e in held
                               if e.name == "Impression" and e.datum["event_id"] == own])
    return at_ms


def _released_changes(held: list[DecodedEvent], event: DecodedEvent, config: LabelConfig,
                      released_ms: int) -> tuple[list[tuple[Example, bool]], int]:
    """What `event` changes in the examples released up to `released_ms`, as (example, withdrawn) pairs: the
    examples it adds or labels differently, and those it takes back (a correction whose conversion a late
    click attributes to another impression); and how many examples were labeled to find them. Only the
    impressions the event can concern are labeled (`_concerned_from_ms`)."""
    since = _concerned_from_ms(held, event, config)

    def released(events) -> dict[tuple, Example]:
        return {kind_of(summary_of(e)): e
                for e in label_user_events(events, config, released_ms, impressions_from_ms=since)}

    pairs = [(e.name, e.datum) for e in held]
    before, after = released(pairs), released([*pairs, (event.name, event.datum)])
    changed = [(example, False) for kind, example in after.items() if before.get(kind) != example]
    return changed + [(example, True) for kind, example in before.items() if kind not in after], \
        len(before) + len(after)


def _next_release_ms(held: list[DecodedEvent], config: LabelConfig, after_ms: int) -> int | None:
    """The earliest moment after `after_ms` at which an example of the held events can become due (from each
    event's `_release_hint_ms`), without labeling anything; None when there is none."""
    hints = [h for h in (_release_hint_ms(e, config) for e in held) if h is not None and h > after_ms]
    return min(hints, default=None)


def _identity(event: DecodedEvent) -> str:
    return f"{event.name}/{event.datum['event_id']}"


def _set_release(release, at_ms: int) -> None:
    """One timer per release time (tagged by it), so every release already known is pending at once."""
    release.set(Timestamp(micros=micros(at_ms)), dynamic_timer_tag=str(at_ms))


class _LabelUser(beam.DoFn):
    """One user's events in a bag, the rest of the user's progress in one value.

    Two choices keep a backlog from crawling (a restart after an outage, a replay):
    - every state read is a round trip to the runner, so what each arriving event needs (when the user was last
      released, the identities of the held events for the duplicate check) is one value, and the bag is only
      appended to on arrival and read when a timer fires;
    - each release time is a timer of its own, so when the watermark jumps over many of them they all fire in
      the same pass; one timer re-set after each firing made a chain of passes as long as the user's history.

    Every `progress_log_s` it logs its firings, the examples they labeled and the held events they read, and
    its bundles' sizes and durations (`pipelines.progress`).
    """
    EVENTS = BagStateSpec("events", _EVENT_CODER)
    # (event time of the last release, or -1 before the first; the version of the user's last revisions;
    # identities of the held events)
    PROGRESS = ReadModifyWriteStateSpec("progress", _PROGRESS_CODER)
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)

    def __init__(self, config: LabelConfig, allowed_lateness_ms: int, progress_log_s: float = 60.0):
        self._config = config
        self._allowed_lateness_ms = allowed_lateness_ms
        self._progress_log_s = progress_log_s

    def setup(self):
        self._late = Metrics.counter("join", "late_events")
        self._duplicates = Metrics.counter("join", "duplicate_deliveries")
        self._examples = Metrics.counter("join", "examples")
        self._revised = Metrics.counter("join", "examples_revised")
        self._labeled = Metrics.counter("join", "examples_labeled")  # the labeling work, releases and revisions
        self._progress = Progress("label", self._progress_log_s)

    def start_bundle(self):
        self._bundle_began, self._bundle_work = time.monotonic(), 0

    def finish_bundle(self):
        busy_ms = (time.monotonic() - self._bundle_began) * 1000
        self._progress.add(bundles=1, elements_and_firings=self._bundle_work, busy_ms=round(busy_ms))
        self._progress.sample(bundle_elements_and_firings=self._bundle_work, bundle_ms=busy_ms)
        self._progress.report()

    def process(self, element: Tuple[str, DecodedEvent], events=beam.DoFn.StateParam(EVENTS),
                progress=beam.DoFn.StateParam(PROGRESS), release=beam.DoFn.TimerParam(RELEASE)):
        _user, event = element
        self._bundle_work += 1
        event_ms = event.datum["event_time_ms"]
        last_fired, version, held = progress.read() or (-1, 0, ())
        lateness = lateness_ms(event, self._allowed_lateness_ms, last_fired)
        if lateness > 0:
            self._late.inc()
            yield beam.pvalue.TaggedOutput(LATE, LateEvent(event, lateness))
            return
        identity = _identity(event)
        if identity in held:
            self._duplicates.inc()
            return
        if event_ms <= last_fired:  # behind the last release: it may concern examples already out
            held_events = list(events.read())
            changes, labeled = _released_changes(held_events, event, self._config, last_fired)
            self._labeled.inc(labeled)
            self._progress.add(relabelings=1, examples_labeled=labeled)
            self._progress.sample(held_events_read=len(held_events))
            if changes:
                version += 1
                self._revised.inc(len(changes))
                yield from (Revision(example, version, withdrawn) for example, withdrawn in changes)
        events.add(event)
        progress.write((last_fired, version, (*held, identity)))
        hint = _release_hint_ms(event, self._config)
        if hint is not None:
            _set_release(release, max(hint, last_fired + 1))

    @on_timer(RELEASE)
    def on_release(self, fire=beam.DoFn.TimestampParam, events=beam.DoFn.StateParam(EVENTS),
                   progress=beam.DoFn.StateParam(PROGRESS), release=beam.DoFn.TimerParam(RELEASE)):
        now_ms = from_micros(fire.micros)
        last_fired, version, _ = progress.read() or (-1, 0, ())
        if now_ms <= last_fired:
            return  # a release this one's predecessor already covered
        held = list(events.read())
        # Only the examples this firing releases are labeled: the work is what it settles, not the history held.
        due = label_user_events([(e.name, e.datum) for e in held], self._config, now_ms,
                                since_ms=last_fired if last_fired >= 0 else None)
        self._labeled.inc(len(due))
        self._bundle_work += 1
        self._progress.add(firings=1, examples_labeled=len(due))
        self._progress.sample(labeled_a_firing=len(due), held_events_read=len(held))
        if due:
            version += 1
            self._examples.inc(len(due))
            yield from (Revision(example, version) for example in due)
        # Keep only what a later example can still need: nothing older than the longest window and the lateness.
        keep_after = now_ms - self._config.horizon_ms - self._allowed_lateness_ms
        kept = [e for e in held if e.datum["event_time_ms"] >= keep_after]
        if len(kept) < len(held):
            events.clear()
            for e in kept:
                events.add(e)
        progress.write((now_ms, version, tuple(_identity(e) for e in kept)))
        following = _next_release_ms(kept, self._config, now_ms)
        if following is not None:
            _set_release(release, following)


class LabelImpressions(beam.PTransform):
    """Decoded events to labeled examples, by the rules of `labeling`; to the late output, events delivered more
    than `allowed_lateness_ms` after their event time. Bounded or streaming is the `watermark`:

    - a singleton PCollection (a bounded read, see `EstimateWatermark`): the input is (user shard,
      [DecodedEvent]) pairs, each with every event of its users (`decode.GroupByUserShard`), and the output the
      examples of the impressions in [from_ms, to_ms) that the watermark settles, as (partition,
      [`partitions.serialized` example]) pairs, several per partition;
    - None (a stream, the runner's watermark): the input is DecodedEvents stamped with event time, held per user
      in state and released by event-time timers, and the output example `Revision`s: each example as the
      watermark releases it, and a newer revision whenever an event within the allowed lateness changes it
      afterwards, logging its progress every `progress_log_s`. `from_ms` and `to_ms` apply to the bounded path
      only.
    """

    def __init__(self, config: LabelConfig, watermark=None, from_ms: int | None = None, to_ms: int | None = None,
                 allowed_lateness_ms: int = DAY_MS, progress_log_s: float = 60.0):
        super().__init__()
        self._watermark = watermark
        self._fn = _LabelUser(config, allowed_lateness_ms, progress_log_s) if watermark is None else \
            _LabelShard(config, from_ms, to_ms, allowed_lateness_ms)

    def expand(self, events):
        if self._watermark is None:
            outputs = (events
                       | "Key by user" >> beam.Map(lambda e: (e.datum["user_id"], e)).with_output_types(
                           Tuple[str, DecodedEvent])
                       | "Hold and release by event time" >> beam.ParDo(self._fn).with_output_types(Revision)
                       .with_outputs(LATE, main=EXAMPLES))
        else:
            outputs = events | "Label each user's impressions" >> beam.ParDo(
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
