"""The streaming label step: each user's events held in state, released by event-time timers.

It calls the same pure function as the bounded path (`labeling.label_user_events`), asking at each timer for
the examples whose label time lies between the previous firing and this one, so the two paths cannot
disagree. A timer fires when the watermark reaches the next moment at which some example of the user becomes
due (an impression settles; under fake-negative, a click is known or a conversion arrives).
"""
from __future__ import annotations

from typing import Tuple

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from pipelines.join import EXAMPLES, LATE, LabeledStreams
from pipelines.labeling import Example, LabelConfig, LabelStrategy, label_user_events
from pipelines.records import DecodedEvent, LateEvent

_NEVER = 2**62
_EVENT_CODER = beam.coders.registry.get_coder(DecodedEvent)


def next_release_ms(events: list[DecodedEvent], config: LabelConfig, after_ms: int | None) -> int | None:
    """The earliest label time after `after_ms` among the user's examples, as if every event were in."""
    due = label_user_events([(e.name, e.datum) for e in events], config, _NEVER, since_ms=after_ms)
    return min((e.label_time_ms for e in due), default=None)


def _release_hint_ms(event: DecodedEvent, config: LabelConfig) -> int | None:
    """When this event alone could make an example due (exact for impressions, a lower bound otherwise)."""
    t = event.datum["event_time_ms"]
    if event.name == "Impression":
        if config.strategy is LabelStrategy.WAIT_FOR_WINDOW:
            return t + config.horizon_ms
        return t + int(config.click_window_s * 1000)
    if config.strategy is LabelStrategy.FAKE_NEGATIVE:
        return t
    return None


class _LabelUserStreaming(beam.DoFn):
    EVENTS = BagStateSpec("events", _EVENT_CODER)
    FIRED = ReadModifyWriteStateSpec("fired_ms", VarIntCoder())  # event time of the last release
    NEXT = ReadModifyWriteStateSpec("next_ms", VarIntCoder())  # when the release timer is set for
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)

    def __init__(self, config: LabelConfig, allowed_lateness_ms: int):
        self._config = config
        self._allowed_lateness_ms = allowed_lateness_ms

    def setup(self):
        self._late = Metrics.counter("join", "late_events")
        self._duplicates = Metrics.counter("join", "duplicate_deliveries")
        self._examples = Metrics.counter("join", "examples")

    def process(self, element: Tuple[str, DecodedEvent], events=beam.DoFn.StateParam(EVENTS),
                fired=beam.DoFn.StateParam(FIRED), next_ms=beam.DoFn.StateParam(NEXT),
                release=beam.DoFn.TimerParam(RELEASE)):
        _user, event = element
        event_ms = event.datum["event_time_ms"]
        last_fired = fired.read()
        lateness = max(event.delivered_ms - event_ms - self._allowed_lateness_ms,
                       (last_fired - event_ms - self._allowed_lateness_ms) if last_fired is not None else -1)
        if lateness > 0:
            self._late.inc()
            yield beam.pvalue.TaggedOutput(LATE, LateEvent(event, lateness))
            return
        held = list(events.read())
        if any(e.name == event.name and e.datum["event_id"] == event.datum["event_id"] for e in held):
            self._duplicates.inc()
            return
        events.add(event)
        hint = _release_hint_ms(event, self._config)
        if hint is not None:
            hint = max(hint, (last_fired or hint - 1) + 1)
            scheduled = next_ms.read()
            if scheduled is None or hint < scheduled:
                release.set(Timestamp(micros=hint * 1000))
                next_ms.write(hint)

    @on_timer(RELEASE)
    def on_release(self, fire=beam.DoFn.TimestampParam, events=beam.DoFn.StateParam(EVENTS),
                   fired=beam.DoFn.StateParam(FIRED), next_ms=beam.DoFn.StateParam(NEXT),
                   release=beam.DoFn.TimerParam(RELEASE)):
        now_ms = fire.micros // 1000
        held = list(events.read())
        pairs = [(e.name, e.datum) for e in held]
        for example in label_user_events(pairs, self._config, now_ms, since_ms=fired.read()):
            self._examples.inc()
            yield example
        fired.write(now_ms)
        # Keep only what a later example can still need: nothing older than the longest window and the lateness.
        keep_after = now_ms - self._config.horizon_ms - self._allowed_lateness_ms
        kept = [e for e in held if e.datum["event_time_ms"] >= keep_after]
        if len(kept) < len(held):
            events.clear()
            for e in kept:
                events.add(e)
        upcoming = next_release_ms(kept, self._config, now_ms)
        if upcoming is None:
            next_ms.clear()
        else:
            release.set(Timestamp(micros=upcoming * 1000))
            next_ms.write(upcoming)


class LabelImpressionsStreaming(beam.PTransform):
    """Timestamped DecodedEvents to examples as the watermark releases them; late events to the late output."""

    def __init__(self, config: LabelConfig, allowed_lateness_ms: int = 86_400_000):
        super().__init__()
        self._fn = _LabelUserStreaming(config, allowed_lateness_ms)

    def expand(self, events):
        outputs = (events
                   | "Key by user" >> beam.Map(lambda e: (e.datum["user_id"], e)).with_output_types(Tuple[str, DecodedEvent])
                   | "Hold and release by event time" >> beam.ParDo(self._fn).with_output_types(Example)
                   .with_outputs(LATE, main=EXAMPLES))
        return LabeledStreams(outputs[EXAMPLES], outputs[LATE])
