"""Event-time behaviour of the streaming label step, with TestStream on the BundleBasedDirectRunner (and Flink)."""
import pickle

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from config.join import LabelConfig, LabelStrategy
from pipelines.records import DecodedEvent
from pipelines.examples import WriteExamples
from pipelines.join import LabelImpressions
from tests.pipelines.events import D, H, S, T0, cart, click, dwell, impression, purchase

CONFIG = LabelConfig(click_window_s=1800, cart_window_s=3600, purchase_window_s=86400)
HORIZON = CONFIG.horizon_ms
LATENESS = 6 * H


def arriving(pair, delivered_ms=None):
    name, datum = pair
    delivered = delivered_ms if delivered_ms is not None else datum["event_time_ms"]
    return TimestampedValue(DecodedEvent(name, datum, delivered), datum["event_time_ms"] / 1000)


def run(steps, config=CONFIG):
    """steps: lists of arriving events, or watermark positions (ms); returns examples and late events."""
    stream = BeamTestStream(coder=beam.coders.registry.get_coder(DecodedEvent))
    for step in steps:
        if isinstance(step, int):
            stream = stream.advance_watermark_to(step / 1000)
        else:
            stream = stream.add_elements(step)
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions(flags=[])
    options.view_as(StandardOptions).streaming = True
    return stream, options, config


def pickled(arrival: TimestampedValue) -> TimestampedValue:
    return TimestampedValue(pickle.dumps(arrival.value), arrival.timestamp)


def _emitted(change, ts=beam.DoFn.TimestampParam):
    e = change.example
    return (e.impression_id, ts.micros // 1000 - T0, e.clicked, e.dwell_ms, e.added_to_cart, e.purchased,
            e.purchase_value, e.is_correction)


def labels_of(stream, options, config, check_examples, check_late=None, check_withdrawn=None):
    """Asserts the examples emitted (with their emission time), the late events, and the examples withdrawn."""
    with BeamTestPipeline(runner="BundleBasedDirectRunner", options=options) as p:
        out = p | stream | LabelImpressions(config, allowed_lateness_ms=LATENESS, release_every_ms=0)
        changes = out.examples | "Each revision" >> beam.FlatMap(lambda hour: hour[1])
        emitted = (changes | "Emitted" >> beam.Filter(lambda change: not change.withdrawn)
                   | "With emission time" >> beam.Map(_emitted))
        assert_that(emitted, check_examples, label="examples")
        withdrawn = (changes | "Withdrawn" >> beam.Filter(lambda change: change.withdrawn)
                     | "As emitted" >> beam.Map(_emitted))
        assert_that(withdrawn, check_withdrawn or equal_to([]), label="withdrawn")
        late_ids = out.late | "Late ids" >> beam.Map(lambda late: late.event.datum["event_id"])
        assert_that(late_ids, check_late or equal_to([]), label="late")


def test_out_of_order_arrival_gives_the_in_order_labels():
    events = [impression("a", T0), click("a", T0 + 10 * S), dwell("a", T0 + 40 * S, 30_000), cart("k", T0 + 20 * 60 * S),
              purchase("p", T0 + 5 * H, value=7.0)]
    reversed_arrival = [arriving(e, delivered_ms=T0 + 5 * H) for e in reversed(events)]
    labels_of(*run([T0 - 1, reversed_arrival, T0 + 5 * H, T0 + 2 * D]),
              equal_to([("a", HORIZON, True, 30_000, True, True, 7.0, False)]))


@pytest.mark.parametrize("offset_ms,bought", [(86400 * S, True), (86400 * S + 1, False)])
def test_a_conversion_exactly_at_and_just_after_the_windows_edge(offset_ms, bought):
    events = [impression("a", T0), click("a", T0 + 10 * S), purchase("p", T0 + 10 * S + offset_ms)]
    labels_of(*run([T0 - 1, [arriving(e) for e in events[:2]], T0 + H, [arriving(events[2])], T0 + 3 * D]),
              equal_to([("a", HORIZON, True, None, False, bought, 10.0 if bought else 0.0, False)]))


def test_a_conversion_whose_click_lies_in_another_hours_partition():
    events = [impression("a", T0 + 59 * 60 * S), click("a", T0 + 59 * 60 * S + 30 * S), cart("k", T0 + 61 * 60 * S)]
    labels_of(*run([T0, [arriving(e) for e in events], T0 + 3 * D]),
              equal_to([("a", 59 * 60 * S + HORIZON, True, None, True, False, 0.0, False)]))


def test_duplicate_deliveries_count_once():
    events = [impression("a", T0), click("a", T0 + 10 * S), purchase("p", T0 + H, value=5.0)]
    twice = [arriving(e) for e in events] + [arriving(e, delivered_ms=T0 + 2 * H) for e in events]
    labels_of(*run([T0 - 1, twice, T0 + 3 * D]), equal_to([("a", HORIZON, True, None, False, True, 5.0, False)]))


def test_data_later_than_the_allowed_lateness_goes_to_the_late_output():
    on_time = [impression("a", T0), click("a", T0 + 10 * S)]
    too_late = purchase("late-purchase", T0 + H)
    labels_of(*run([T0 - 1, [arriving(e) for e in on_time], T0 + H + LATENESS + 1,
                    [arriving(too_late, delivered_ms=T0 + H + LATENESS + 1)], T0 + 3 * D]),
              equal_to([("a", HORIZON, True, None, False, False, 0.0, False)]),
              equal_to(["late-purchase"]))


def test_a_purchase_with_two_candidate_clicks_goes_to_the_last():
    events = [impression("a", T0), click("a", T0 + 10 * S), impression("b", T0 + H),
              click("b", T0 + H + 10 * S), purchase("p", T0 + 3 * H, value=4.0)]
    labels_of(*run([T0 - 1, [arriving(e) for e in events], T0 + 3 * D]),
              equal_to([("a", HORIZON, True, None, False, False, 0.0, False),
                        ("b", H + HORIZON, True, None, False, True, 4.0, False)]))


def test_fake_negative_emits_at_the_click_and_corrects_when_the_conversion_arrives():
    config = CONFIG.model_copy(update={"strategy": LabelStrategy.FAKE_NEGATIVE})
    shown, clicked = impression("a", T0), click("a", T0 + 10 * S)
    later = [cart("k", T0 + 20 * 60 * S), purchase("p", T0 + 6 * H, value=8.0)]
    labels_of(*run([T0 - 1, [arriving(shown), arriving(clicked)], T0 + 15 * 60 * S, [arriving(e) for e in later],
                    T0 + 3 * D], config=config),
              equal_to([("a", 10 * S, True, None, False, False, 0.0, False),
                        ("a", 20 * 60 * S, True, None, True, False, 0.0, True),
                        ("a", 6 * H, True, None, False, True, 8.0, True)]))


def test_releases_that_the_watermark_passes_at_once_each_come_out_at_their_own_time():
    # a backlog: a week of one user's impressions arrive together, then the watermark jumps past all of them
    shown = [impression(f"a{k}", T0 + k * 7 * H) for k in range(24)]
    bought = [click("a5", T0 + 35 * H + 10 * S), purchase("p", T0 + 36 * H, value=3.0)]
    expected = [(f"a{k}", k * 7 * H + HORIZON, k == 5, None, False, k == 5, 3.0 if k == 5 else 0.0, False)
                for k in range(24)]
    labels_of(*run([T0 - 1, [arriving(e) for e in shown + bought], T0 + 30 * D]), equal_to(expected))


def test_a_late_purchase_for_a_settled_impression_comes_out_as_a_newer_revision():
    # within the allowed lateness, but the impression's final labels went out when the watermark settled it
    shown, clicked = impression("a", T0), click("a", T0 + 10 * S)
    bought = purchase("p", T0 + 23 * H, value=4.0)
    labels_of(*run([T0 - 1, [arriving(shown), arriving(clicked)], T0 + HORIZON + 1,
                    [arriving(bought, delivered_ms=T0 + HORIZON + 2)], T0 + 3 * D]),
              equal_to([("a", HORIZON, True, None, False, False, 0.0, False),
                        ("a", 23 * H, True, None, False, True, 4.0, False)]))


def test_fake_negative_withdraws_a_correction_whose_conversion_a_late_click_moves_to_another_impression():
    config = CONFIG.model_copy(update={"strategy": LabelStrategy.FAKE_NEGATIVE})
    on_time = [impression("a", T0), click("a", T0 + 10 * S), impression("b", T0 + H),
               purchase("p", T0 + 2 * H, value=6.0)]
    late_click = click("b", T0 + H + 60 * S)  # the last click before the purchase: it takes the purchase from "a"
    labels_of(*run([T0 - 1, [arriving(e) for e in on_time], T0 + 3 * H,
                    [arriving(late_click, delivered_ms=T0 + 3 * H)], T0 + 3 * D], config=config),
              equal_to([("a", 10 * S, True, None, False, False, 0.0, False),
                        ("b", H + 30 * 60 * S, False, None, False, False, 0.0, False),
                        ("a", 2 * H, True, None, False, True, 6.0, True),
                        # the late click's revisions, emitted at its event time
                        ("b", H + 60 * S, True, None, False, False, 0.0, False),
                        ("b", H + 60 * S, True, None, False, True, 6.0, True)]),
              check_withdrawn=equal_to([("a", H + 60 * S, True, None, False, True, 6.0, True)]))


def test_fake_negative_corrects_for_a_conversion_that_comes_after_its_release_time():
    config = CONFIG.model_copy(update={"strategy": LabelStrategy.FAKE_NEGATIVE})
    shown, clicked = impression("a", T0), click("a", T0 + 10 * S)
    bought = purchase("p", T0 + 20 * 60 * S, value=8.0)  # behind the release at the click window's end
    labels_of(*run([T0 - 1, [arriving(shown), arriving(clicked)], T0 + 2 * H,
                    [arriving(bought, delivered_ms=T0 + 2 * H)], T0 + 3 * D], config=config),
              equal_to([("a", 10 * S, True, None, False, False, 0.0, False),
                        ("a", 20 * 60 * S, True, None, False, True, 8.0, True)]))


@pytest.mark.parametrize("runner,strategy", [("BundleBasedDirectRunner", LabelStrategy.WAIT_FOR_WINDOW),
                                             ("BundleBasedDirectRunner", LabelStrategy.FAKE_NEGATIVE),
                                             ("flink", LabelStrategy.FAKE_NEGATIVE)])
def test_revisions_for_events_behind_the_release_leave_the_hours_the_bounded_join_writes(tmp_path, runner, strategy):
    from pipelines.partitions import partition_of, write_partition
    from pipelines.flink import flink_pipeline_options
    from pipelines.labeling import label_user_events

    config = CONFIG.model_copy(update={"strategy": strategy})
    on_time = [impression("a", T0), click("a", T0 + 10 * S), impression("b", T0 + H, item="i2"),
               click("b", T0 + H + 10 * S, item="i2"), impression("c", T0 + 20 * H), purchase("p1", T0 + 23 * H)]
    released_ms = T0 + HORIZON + H + 1  # "a" and "b" settled, "a" bought
    late = [click("c", T0 + 20 * H + 10 * S),  # takes "a"'s purchase: the last click on the item before it
            purchase("p2", T0 + 23 * H + 30 * 60 * S, item="i2", value=3.0)]  # "b" bought, after it went out
    # Pickled, since Flink runs the TestStream in Java, which knows only Beam's standard coders.
    stream = (BeamTestStream(coder=beam.coders.BytesCoder()).advance_watermark_to((T0 - 1) / 1000)
              .add_elements([pickled(arriving(e)) for e in on_time])
              .advance_watermark_to(released_ms / 1000)
              .add_elements([pickled(arriving(e, delivered_ms=released_ms)) for e in late])
              .advance_watermark_to_infinity())
    options = (flink_pipeline_options(streaming=True) if runner == "flink"
               else PipelineOptions(flags=[], runner=runner, streaming=True))
    with beam.Pipeline(options=options) as p:
        out = (p | stream.with_output_types(bytes) | beam.Map(pickle.loads).with_output_types(DecodedEvent)
               | LabelImpressions(config, allowed_lateness_ms=LATENESS))
        _ = out.examples | WriteExamples(str(tmp_path / "streaming"), {}, horizon_ms=HORIZON, allowed_lateness_ms=LATENESS)

    every = label_user_events(on_time + late, config, T0 + 30 * D)
    by_hour: dict[str, list] = {}
    for example in every:
        by_hour.setdefault(partition_of(example.event_time_ms), []).append(example)
    for partition, examples in by_hour.items():
        write_partition(tmp_path / "bounded", partition, examples, {})

    def written(directory):
        return {path.relative_to(directory): path.read_bytes() for path in directory.glob("*/*/examples.tfrecord")}

    bounded = written(tmp_path / "bounded")
    assert len(bounded) == 3 and written(tmp_path / "streaming") == bounded


def _labeling_work(history_days: int, final: bool, strategy: LabelStrategy) -> tuple[int, int]:
    """(examples labeled, examples released) by the streaming label step over one user's stream under the default
    windows (a 7-day purchase window, a day of lateness: state spans about eight days): four clicked
    impressions a day for `history_days` days, one bought each day, the watermark advancing every six hours;
    then, if `final`, three more impressions at the end of that history."""
    from apache_beam.metrics.metric import MetricsFilter

    from config.join import JoinSettings

    config = LabelConfig(strategy=strategy)
    events = []
    for k in range(history_days * 4):
        at, item = T0 + k * 6 * H, f"i{k % 3}"
        events += [impression(f"h{k}", at, item=item), click(f"h{k}", at + 10 * S, item=item)]
        if k % 4 == 0:
            events.append(purchase(f"p{k}", at + 2 * H, item=item))
    end = T0 + history_days * D
    if final:
        events += [impression(f"f{k}", end + k * S, item="i9") for k in range(3)]
    stream = BeamTestStream(coder=beam.coders.registry.get_coder(DecodedEvent)).advance_watermark_to((T0 - 1) / 1000)
    for at in range(T0, end + config.horizon_ms + 7 * H, 6 * H):
        arrived = [arriving(e) for e in events if at <= e[1]["event_time_ms"] < at + 6 * H]
        stream = (stream.add_elements(arrived) if arrived else stream).advance_watermark_to((at + 6 * H) / 1000)
    # Prism, which reports a streaming job's counters (the BundleBasedDirectRunner reports none)
    options = PipelineOptions(flags=[], runner="PrismRunner", prism_location=str(JoinSettings().prism_location),
                              environment_type="LOOPBACK", streaming=True)
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | stream.advance_watermark_to_infinity() | LabelImpressions(config, allowed_lateness_ms=D)
    result = pipeline.run()
    result.wait_until_finish()

    def counter(name: str) -> int:
        found = result.metrics().query(MetricsFilter().with_namespace("join").with_name(name))["counters"]
        return sum(c.committed for c in found)

    return counter("examples_labeled"), counter("examples")


@pytest.mark.parametrize("strategy", [LabelStrategy.WAIT_FOR_WINDOW, LabelStrategy.FAKE_NEGATIVE])
def test_a_firings_labeling_work_is_the_same_for_a_user_with_one_day_of_history_and_with_eight(strategy):
    """A count of the examples labeled, not a time: releasing three impressions at the end of a user's history
    labels three examples (and under fake negatives their corrections none), whether eight days of the user's
    events are held or one; and over the whole stream every example is labeled once."""
    work = {}
    for days in (1, 8):
        before, released_before = _labeling_work(days, final=False, strategy=strategy)
        after, released_after = _labeling_work(days, final=True, strategy=strategy)
        assert before == released_before and after == released_after  # each firing labels what it releases
        work[days] = (after - before, released_after - released_before)
    assert work[1] == work[8] == (3, 3)
