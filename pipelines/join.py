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

import random
import time
from operator import itemgetter
from typing import List, NamedTuple, Tuple

import apache_beam as beam
from apache_beam.coders import FastPrimitivesCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from config.join import LabelConfig, LabelStrategy
from pipelines.labeling import Example, label_user_events
from pipelines.partitions import kind_of, partition_of, serialized, summary_of
from pipelines.decode import user_shard
from pipelines.progress import Progress
from pipelines.records import DecodedEvent, LateEvent, Revision
from schemas import BadEventError, EventDecoder
from schemas.units import DAY_MS, HOUR_MS, from_micros, micros

EXAMPLES = "examples"
LATE = "late"


class LabeledStreams(NamedTuple):
    examples: beam.PCollection  # (partition, [partitions.serialized example]) bounded, [records.Revision] streaming
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


class _BatchByShard(beam.DoFn):
    """A bundle's events gathered by user shard (`decode.user_shard`): one (shard, [DecodedEvent]) element a shard
    and bundle, stamped with the earliest of its events' timestamps. The label step then pays the runner's keyed
    exchange, state and timer requests once a batch, not once an event."""

    def __init__(self, shards: int):
        self._shards = shards

    def start_bundle(self):
        self._batches: dict[int, tuple[list[DecodedEvent], Timestamp]] = {}

    def process(self, event: DecodedEvent, timestamp=beam.DoFn.TimestampParam):
        shard = user_shard(event.datum["user_id"], self._shards)
        batch = self._batches.get(shard)
        if batch is None:
            self._batches[shard] = ([event], timestamp)
        else:
            batch[0].append(event)
            if timestamp < batch[1]:
                self._batches[shard] = (batch[0], timestamp)

    def finish_bundle(self):
        for shard, (events, timestamp) in self._batches.items():
            yield WindowedValue((shard, events), timestamp, [GlobalWindow()])
        self._batches = {}


class _HeldUser:
    """One user's part of a shard's state, as the label step keeps it in the worker: the events held, their
    identities (the duplicate check), the last release and the version of the last revisions, and the next
    moment an example of the user can become due."""

    __slots__ = ("events", "identities", "last_fired", "version", "next_release")

    def __init__(self, last_fired: int = -1, version: int = 0):
        self.events: list[DecodedEvent] = []
        self.identities: set[str] = set()
        self.last_fired, self.version = last_fired, version
        self.next_release: int | None = None


class _LabelShardUsers(beam.DoFn):
    """The users of one shard: their events in one bag, their progress in one value, one event-time timer per
    release moment of the shard.

    Three choices keep a backlog from crawling (a restart after an outage, a replay):
    - the runner's keyed exchange and its state and timer requests cost about the same for a batch as for one
      event, so the step takes batches of a shard's events (`_BatchByShard`);
    - the events held are kept in the worker too, grouped by user (`_HeldUser`): a token written with every
      change of the shard's state says whether the worker's copy is the state's, and a copy that is not (another
      worker changed the state, or a failed bundle left it half changed) is built again from the bag;
    - release moments fall on a grid (`release_every_ms`, offset so that each falls just before the writer
      settles an hour: an hour's end plus the label horizon, less a millisecond), so that the watermark jumping
      over a week fires a shard's timer once an hour of it, not once an impression. Each firing labels, for
      every user with an example due, what lies between the user's last release and the firing
      (`label_user_events`): the examples are those of their label times, whenever they are computed. With
      `release_every_ms` 0 each release moment is its own.

    An event behind its user's last release concerns examples already out: they are labeled again with it
    (`_released_changes`) and what changed comes out at once as newer revisions. Every `progress_log_s` it logs
    its firings, the examples they labeled and the held events they read, and its bundles' sizes and durations
    (`pipelines.progress`). Output: (hour partition, [Revision]) batches.
    """
    EVENTS = BagStateSpec("events", _EVENT_CODER)
    # (token of this state, {user: (event time of the last release or -1, version of the last revisions)},
    # events in the bag, pruned ones included)
    PROGRESS = ReadModifyWriteStateSpec("progress", FastPrimitivesCoder())
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)

    def __init__(self, config: LabelConfig, allowed_lateness_ms: int, progress_log_s: float = 60.0,
                 release_every_ms: int = HOUR_MS):
        self._config = config
        self._allowed_lateness_ms = allowed_lateness_ms
        self._progress_log_s = progress_log_s
        self._release_every_ms = release_every_ms

    def setup(self):
        self._late = Metrics.counter("join", "late_events")
        self._duplicates = Metrics.counter("join", "duplicate_deliveries")
        self._examples = Metrics.counter("join", "examples")
        self._revised = Metrics.counter("join", "examples_revised")
        self._labeled = Metrics.counter("join", "examples_labeled")  # the labeling work, releases and revisions
        self._rebuilt = Metrics.counter("join", "shard_state_rebuilt")
        self._progress = Progress("label", self._progress_log_s)
        # shard -> (token, users, events in the bag)
        self._held: dict[int, tuple[int | None, dict[str, _HeldUser], int]] = {}

    def start_bundle(self):
        self._bundle_began, self._bundle_work = time.monotonic(), 0

    def finish_bundle(self):
        busy_ms = (time.monotonic() - self._bundle_began) * 1000
        self._progress.add(bundles=1, elements_and_firings=self._bundle_work, busy_ms=round(busy_ms))
        self._progress.sample(bundle_elements_and_firings=self._bundle_work, bundle_ms=busy_ms)
        self._progress.report()

    def _release_at(self, at_ms: int) -> int:
        """The grid's first moment at or after `at_ms`."""
        every = self._release_every_ms
        if every <= 0:
            return at_ms
        offset = self._config.horizon_ms - 1
        return -((offset - at_ms) // every) * every + offset

    def _kept_after(self, last_fired: int) -> int:
        """The oldest event time a user released at `last_fired` still needs: the longest window and the
        lateness before it."""
        return last_fired - self._config.horizon_ms - self._allowed_lateness_ms if last_fired >= 0 else -(2**62)

    def _users(self, shard: int, events, progress) -> tuple[dict[str, _HeldUser], int]:
        """The shard's users as its state holds them, and the events in its bag: the worker's copy when its token
        is the state's, else one built again from the bag. The copy is marked as changing until `_commit`."""
        token, fired, in_bag = progress.read() or (None, {}, 0)
        cached = self._held.get(shard)
        if cached is not None and token is not None and cached[0] == token:
            users = cached[1]
        else:
            users = {user: _HeldUser(last_fired, version) for user, (last_fired, version) in fired.items()}
            in_bag = 0
            for event in events.read():
                in_bag += 1
                user = users.get(event.datum["user_id"])
                if user is None:
                    user = users[event.datum["user_id"]] = _HeldUser()
                if event.datum["event_time_ms"] >= self._kept_after(user.last_fired):  # not pruned yet
                    user.events.append(event)
                    user.identities.add(_identity(event))
            for user in users.values():
                user.next_release = _next_release_ms(user.events, self._config, user.last_fired)
            self._rebuilt.inc()
        self._held[shard] = (None, users, in_bag)
        return users, in_bag

    def _commit(self, shard: int, users: dict[str, _HeldUser], in_bag: int, progress) -> None:
        token = random.getrandbits(62)
        progress.write((token, {name: (user.last_fired, user.version) for name, user in users.items()}, in_bag))
        self._held[shard] = (token, users, in_bag)

    def process(self, element: Tuple[int, List[DecodedEvent]], events=beam.DoFn.StateParam(EVENTS),
                progress=beam.DoFn.StateParam(PROGRESS), release=beam.DoFn.TimerParam(RELEASE)):
        shard, arriving = element
        self._bundle_work += 1
        users, in_bag = self._users(shard, events, progress)
        out: dict[str, list[Revision]] = {}
        releases: set[int] = set()
        for event in arriving:
            name = event.datum["user_id"]
            user = users.get(name)
            if user is None:
                user = users[name] = _HeldUser()
            lateness = lateness_ms(event, self._allowed_lateness_ms, user.last_fired)
            if lateness > 0:
                self._late.inc()
                yield beam.pvalue.TaggedOutput(LATE, LateEvent(event, lateness))
                continue
            identity = _identity(event)
            if identity in user.identities:
                self._duplicates.inc()
                continue
            if event.datum["event_time_ms"] <= user.last_fired:  # behind the last release: may concern examples out
                changes, labeled = _released_changes(user.events, event, self._config, user.last_fired)
                self._labeled.inc(labeled)
                self._progress.add(relabelings=1, examples_labeled=labeled)
                self._progress.sample(held_events_read=len(user.events))
                if changes:
                    user.version += 1
                    self._revised.inc(len(changes))
                    for example, withdrawn in changes:
                        out.setdefault(partition_of(example.event_time_ms), []).append(
                            Revision(example, user.version, withdrawn))
            user.events.append(event)
            user.identities.add(identity)
            events.add(event)
            in_bag += 1
            hint = _release_hint_ms(event, self._config)
            if hint is not None:
                at_ms = max(hint, user.last_fired + 1)
                user.next_release = at_ms if user.next_release is None else min(user.next_release, at_ms)
                releases.add(self._release_at(at_ms))
        for at_ms in releases:
            _set_release(release, at_ms)
        self._commit(shard, users, in_bag, progress)
        yield from out.items()

    @on_timer(RELEASE)
    def on_release(self, key=beam.DoFn.KeyParam, fire=beam.DoFn.TimestampParam,
                   events=beam.DoFn.StateParam(EVENTS), progress=beam.DoFn.StateParam(PROGRESS),
                   release=beam.DoFn.TimerParam(RELEASE)):
        now_ms = from_micros(fire.micros)
        users, in_bag = self._users(key, events, progress)
        due = [user for user in users.values() if user.next_release is not None and user.next_release <= now_ms]
        self._bundle_work += 1
        if not due:  # a release another firing already covered
            self._commit(key, users, in_bag, progress)
            return
        keep_after = self._kept_after(now_ms)
        out: dict[str, list[Revision]] = {}
        labeled, held = 0, 0
        for user in due:
            # Only the examples this firing releases are labeled: the work is what it settles, not the history.
            examples = label_user_events([(e.name, e.datum) for e in user.events], self._config, now_ms,
                                         since_ms=user.last_fired if user.last_fired >= 0 else None)
            labeled, held = labeled + len(examples), held + len(user.events)
            if examples:
                user.version += 1
                for example in examples:
                    out.setdefault(partition_of(example.event_time_ms), []).append(Revision(example, user.version))
            # Keep only what a later example can still need: nothing older than the longest window and the lateness.
            kept = [e for e in user.events if e.datum["event_time_ms"] >= keep_after]
            if len(kept) < len(user.events):
                user.events, user.identities = kept, {_identity(e) for e in kept}
            user.last_fired = now_ms
            user.next_release = _next_release_ms(user.events, self._config, now_ms)
        self._labeled.inc(labeled)
        self._examples.inc(labeled)
        self._progress.add(firings=1, users_released=len(due), examples_labeled=labeled)
        self._progress.sample(labeled_a_firing=labeled, held_events_read=held)
        # The bag is written again with what is kept once it holds as many pruned events as kept ones (a rebuild
        # skips the pruned ones by their users' last releases), not at every firing: that rewrite is the costly part.
        kept = sum(len(user.events) for user in users.values())
        if in_bag > 2 * kept + 1000:
            events.clear()
            for user in users.values():
                for event in user.events:
                    events.add(event)
            in_bag = kept
        following = [user.next_release for user in users.values() if user.next_release is not None]
        if following:
            _set_release(release, self._release_at(min(following)))
        self._commit(key, users, in_bag, progress)
        yield from out.items()


class LabelImpressions(beam.PTransform):
    """Decoded events to labeled examples, by the rules of `labeling`; to the late output, events delivered more
    than `allowed_lateness_ms` after their event time. Bounded or streaming is the `watermark`:

    - a singleton PCollection (a bounded read, see `EstimateWatermark`): the input is (user shard,
      [DecodedEvent]) pairs, each with every event of its users (`decode.GroupByUserShard`), and the output the
      examples of the impressions in [from_ms, to_ms) that the watermark settles, as (partition,
      [`partitions.serialized` example]) pairs, several per partition;
    - None (a stream, the runner's watermark): the input is DecodedEvents stamped with event time, gathered by
      user shard (`shards` of them) and held in state, released by event-time timers on a grid of
      `release_every_ms`; the output (partition, [`Revision`]) batches: each example as the watermark releases
      it, and a newer revision whenever an event within the allowed lateness changes it afterwards, logging its
      progress every `progress_log_s`. `from_ms` and `to_ms` apply to the bounded path only.
    """

    def __init__(self, config: LabelConfig, watermark=None, from_ms: int | None = None, to_ms: int | None = None,
                 allowed_lateness_ms: int = DAY_MS, progress_log_s: float = 60.0, shards: int = 16,
                 release_every_ms: int = HOUR_MS):
        super().__init__()
        self._watermark = watermark
        self._shards = shards
        self._fn = _LabelShardUsers(config, allowed_lateness_ms, progress_log_s, release_every_ms) \
            if watermark is None else _LabelShard(config, from_ms, to_ms, allowed_lateness_ms)

    def expand(self, events):
        if self._watermark is None:
            outputs = (events
                       | "Gather by user shard" >> beam.ParDo(_BatchByShard(self._shards)).with_output_types(
                           Tuple[int, List[DecodedEvent]])
                       | "Hold and release by event time" >> beam.ParDo(self._fn).with_output_types(
                           Tuple[str, List[Revision]]).with_outputs(LATE, main=EXAMPLES))
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
