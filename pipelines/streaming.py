"""The streaming label step: each user's events held in state, released by event-time timers.

It calls the same pure function as the bounded path (`labeling.label_user_events`), asking at each timer for
the examples whose label time lies between the previous firing and this one, so the two paths cannot
disagree. A timer fires when the watermark reaches a moment at which some example of the user becomes due (an
impression settles; under fake-negative, a click is known or a conversion arrives).

Its output is example `Revision`s. An event that arrives behind the user's last release, within the allowed
lateness, may concern examples already out: the examples released so far are labeled again with it, and what
it adds, changes or withdraws comes out at once as a newer revision (a late purchase for an impression that
settled, a late click that moves a conversion's attribution to another impression). The writer keeps the
newest revision of each example, so what is written equals what the bounded join, which sees every event at
once, writes; only events past the allowed lateness go to the late output.
"""
from __future__ import annotations

import bisect
from typing import Tuple

import apache_beam as beam
from apache_beam.coders import IterableCoder, StrUtf8Coder, TupleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from pipelines.partitions import kind_of, summary_of
from pipelines.join import EXAMPLES, LATE, LabeledStreams
from pipelines.labeling import Example, label_user_events
from config.join import LabelConfig, LabelStrategy
from pipelines.records import DecodedEvent, LateEvent, Revision
from schemas.units import DAY_MS, from_micros, micros

_NEVER = 2**62
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


def _released_changes(held: list[DecodedEvent], event: DecodedEvent, config: LabelConfig,
                      released_ms: int) -> list[tuple[Example, bool]]:
    """What `event` changes in the examples released up to `released_ms`, as (example, withdrawn) pairs: the
    examples it adds or labels differently, and those it takes back (a correction whose conversion a late
    click attributes to another impression)."""
    def released(events) -> dict[tuple, Example]:
        return {kind_of(summary_of(e)): e for e in label_user_events(events, config, released_ms)}

    pairs = [(e.name, e.datum) for e in held]
    before, after = released(pairs), released([*pairs, (event.name, event.datum)])
    changed = [(example, False) for kind, example in after.items() if before.get(kind) != example]
    return changed + [(example, True) for kind, example in before.items() if kind not in after]


def _identity(event: DecodedEvent) -> str:
    return f"{event.name}/{event.datum['event_id']}"


def _set_release(release, at_ms: int) -> None:
    """One timer per release time (tagged by it), so every release already known is pending at once."""
    release.set(Timestamp(micros=micros(at_ms)), dynamic_timer_tag=str(at_ms))


class _LabelUserStreaming(beam.DoFn):
    """One user's events in a bag, the rest of the user's progress in one value.

    Two choices keep a backlog from crawling (a restart after an outage, a replay):
    - every state read is a round trip to the runner, so what each arriving event needs (when the user was last
      released, the identities of the held events for the duplicate check) is one value, and the bag is only
      appended to on arrival and read when a timer fires;
    - each release time is a timer of its own, so when the watermark jumps over many of them they all fire in
      the same pass; one timer re-set after each firing made a chain of passes as long as the user's history.
    """
    EVENTS = BagStateSpec("events", _EVENT_CODER)
    # (event time of the last release, or -1 before the first; the version of the user's last revisions;
    # identities of the held events)
    PROGRESS = ReadModifyWriteStateSpec("progress", _PROGRESS_CODER)
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)

    def __init__(self, config: LabelConfig, allowed_lateness_ms: int):
        self._config = config
        self._allowed_lateness_ms = allowed_lateness_ms

    def setup(self):
        self._late = Metrics.counter("join", "late_events")
        self._duplicates = Metrics.counter("join", "duplicate_deliveries")
        self._examples = Metrics.counter("join", "examples")
        self._revised = Metrics.counter("join", "examples_revised")

    def process(self, element: Tuple[str, DecodedEvent], events=beam.DoFn.StateParam(EVENTS),
                progress=beam.DoFn.StateParam(PROGRESS), release=beam.DoFn.TimerParam(RELEASE)):
        _user, event = element
        event_ms = event.datum["event_time_ms"]
        last_fired, version, held = progress.read() or (-1, 0, ())
        lateness = max(event.delivered_ms - event_ms - self._allowed_lateness_ms,
                       (last_fired - event_ms - self._allowed_lateness_ms) if last_fired >= 0 else -1)
        if lateness > 0:
            self._late.inc()
            yield beam.pvalue.TaggedOutput(LATE, LateEvent(event, lateness))
            return
        identity = _identity(event)
        if identity in held:
            self._duplicates.inc()
            return
        if event_ms <= last_fired:  # behind the last release: it may concern examples already out
            changes = _released_changes(list(events.read()), event, self._config, last_fired)
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
        # Every example still to come, as if every event were in: those due now, and when the next one is.
        pending = label_user_events([(e.name, e.datum) for e in held], self._config, _NEVER,
                                    since_ms=last_fired if last_fired >= 0 else None)
        due = bisect.bisect_right(pending, now_ms, key=lambda e: e.label_time_ms)  # sorted by label time
        if due:
            version += 1
            self._examples.inc(due)
            yield from (Revision(example, version) for example in pending[:due])
        # Keep only what a later example can still need: nothing older than the longest window and the lateness.
        keep_after = now_ms - self._config.horizon_ms - self._allowed_lateness_ms
        kept = [e for e in held if e.datum["event_time_ms"] >= keep_after]
        if len(kept) < len(held):
            events.clear()
            for e in kept:
                events.add(e)
        progress.write((now_ms, version, tuple(_identity(e) for e in kept)))
        if due < len(pending):
            _set_release(release, pending[due].label_time_ms)


class LabelImpressionsStreaming(beam.PTransform):
    """Timestamped DecodedEvents to example `Revision`s: each example as the watermark releases it, and a newer
    revision whenever an event within the allowed lateness changes it afterwards; to the late output, events
    past the allowed lateness."""

    def __init__(self, config: LabelConfig, allowed_lateness_ms: int = DAY_MS):
        super().__init__()
        self._fn = _LabelUserStreaming(config, allowed_lateness_ms)

    def expand(self, events):
        outputs = (events
                   | "Key by user" >> beam.Map(lambda e: (e.datum["user_id"], e)).with_output_types(Tuple[str, DecodedEvent])
                   | "Hold and release by event time" >> beam.ParDo(self._fn).with_output_types(Revision)
                   .with_outputs(LATE, main=EXAMPLES))
        return LabeledStreams(outputs[EXAMPLES], outputs[LATE])
