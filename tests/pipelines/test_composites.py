"""Each bounded composite on Beam's TestPipeline (FnApiRunner), over a few hand-written events, with the expected
output worked out by hand: the grouping by user, decoding, labeling and writing."""
import json

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not a test class
from apache_beam.testing.util import assert_that, equal_to

from kafka_io._records import pack_records, unpack_records
from pipelines.decode import DecodeEvents, GroupByUserShard, RecordClock, user_shard
from pipelines.examples import WriteExamples
from pipelines.join import LabelImpressions
from config.join import LabelConfig
from pipelines.partitions import partition_of, serialized
from pipelines.records import DecodedEvent, KafkaChunk, PackedChunk
from pipelines.tf_example import parse_example_fields, read_records
from schemas import EventEncoder
from tests.pipelines.events import H, S, T0, click, impression, purchase

TOPICS = {"Impression": "imp", "Click": "clk", "Dwell": "dwl", "AddToCart": "cart", "Purchase": "buy"}
LABELS = LabelConfig(click_window_s=1800, cart_window_s=3600, purchase_window_s=7200)
SHARDS = 4
CLOCK = RecordClock(H, T0 + 30 * 24 * H)
encode = EventEncoder().encode


def pipeline():
    return BeamTestPipeline(runner=FnApiRunner())


def record(offset, event, delivered_ms=None):
    name, datum = event
    return (offset, delivered_ms if delivered_ms is not None else datum["event_time_ms"], datum["user_id"].encode(),
            encode(name, datum))


def test_group_by_user_shard_puts_each_users_messages_in_their_shard_and_unreadable_ones_in_shard_zero():
    chunks = [KafkaChunk("imp", 0, [record(0, impression("a", T0, user="u1")), record(1, impression("b", T0, user="u2")),
                                    (2, T0, b"?", b"junk")]),
              KafkaChunk("clk", 1, [record(7, click("a", T0 + 5 * S, user="u1"))])]
    expected = {}
    for shard, offset in ((user_shard("u1", SHARDS), ("clk", 1, 7)), (user_shard("u1", SHARDS), ("imp", 0, 0)),
                          (user_shard("u2", SHARDS), ("imp", 0, 1)), (0, ("imp", 0, 2))):
        expected.setdefault(shard, []).append(offset)
    with pipeline() as p:
        groups = p | beam.Create(chunks) | GroupByUserShard(SHARDS)
        offsets = groups | beam.MapTuple(lambda shard, packed: (shard, sorted(
            (c.topic, c.partition, r[0]) for c in packed for r in unpack_records(c.packed))))
        assert_that(offsets, equal_to([(shard, sorted(found)) for shard, found in expected.items()]))


def test_decode_event_groups_gives_each_shards_events_and_routes_the_rest_with_their_reason():
    good = impression("a", T0)
    negative = ("Dwell", {"event_id": "d1", "impression_id": "a", "user_id": "u1", "item_id": "i1",
                          "event_time_ms": T0 + S, "dwell_ms": -3})
    packed = [PackedChunk("imp", 0, pack_records([record(0, good), (1, T0, b"u1", b"junk")])),
              PackedChunk("dwl", 2, pack_records([record(5, negative)])),
              PackedChunk("clk", 0, pack_records([record(9, click("a", T0 + 2 * S), delivered_ms=T0 + 40 * 24 * H)]))]
    with pipeline() as p:
        decoded = p | beam.Create([(3, packed)]) | DecodeEvents(TOPICS, CLOCK, grouped=True)
        events = decoded.events | beam.MapTuple(lambda shard, events: (shard, [(e.name, e.datum["event_id"],
                                                                                e.delivered_ms) for e in events]))
        assert_that(events, equal_to([(3, [("Impression", "a", T0)])]), label="events")
        letters = decoded.dead_letters | beam.Map(lambda d: (d.topic, d.partition, d.offset, d.reason))
        assert_that(letters, equal_to([("imp", 0, 1, "not_single_object"), ("dwl", 2, 5, "invalid_value"),
                                       ("clk", 0, 9, "record_time_ahead")]), label="dead letters")


def _decoded(event, delivered_ms=None):
    name, datum = event
    return DecodedEvent(name, datum, delivered_ms if delivered_ms is not None else datum["event_time_ms"])


def test_label_impressions_labels_the_settled_hours_drops_repeats_and_sets_late_events_aside():
    # Impression a (hour 0) is clicked after 10 s and bought an hour later: clicked and purchased. Impression b
    # (hour 1) has nothing. Impression c (hour 9) is not settled: 9 h + 30 min + 2 h lies past the watermark.
    # The click on a comes twice (counted once); a purchase delivered two days after it happened is late.
    events = [_decoded(impression("a", T0)), _decoded(click("a", T0 + 10 * S)), _decoded(click("a", T0 + 10 * S)),
              _decoded(purchase("p1", T0 + H, value=25.0)), _decoded(impression("b", T0 + H + 60 * S, item="i2")),
              _decoded(purchase("p2", T0 + H + 90 * S, item="i2"), delivered_ms=T0 + 50 * H),
              _decoded(impression("c", T0 + 9 * H))]
    watermark_ms = T0 + 10 * H
    with pipeline() as p:
        watermark = p | "Watermark" >> beam.Create([watermark_ms])
        labeled = p | beam.Create([(1, events)]) | LabelImpressions(LABELS, watermark, allowed_lateness_ms=86_400_000)
        summaries = labeled.examples | beam.MapTuple(lambda partition, rows: (partition, [row[0][:6] for row in rows]))
        horizon = (30 * 60 + 2 * 3600) * S  # the click window and the longest conversion window
        assert_that(summaries, equal_to([
            (partition_of(T0), [("a", T0 + horizon, False, False, True, True)]),
            (partition_of(T0 + H), [("b", T0 + H + 60 * S + horizon, False, False, False, False)])]), label="examples")
        late = labeled.late | beam.Map(lambda late: (late.event.datum["event_id"], late.lateness_ms))
        assert_that(late, equal_to([("p2", 50 * H - H - 90 * S - 86_400_000)]), label="late")


def test_write_examples_writes_one_file_and_manifest_per_hour(tmp_path):
    from pipelines.labeling import label_user_events

    events = [impression("a", T0), click("a", T0 + 10 * S), purchase("p1", T0 + H, value=25.0),
              impression("b", T0 + 5 * S, item="i2"), impression("c", T0 + H + 60 * S)]
    examples = label_user_events(events, LABELS, T0 + 10 * H)
    hour0 = [serialized(e) for e in examples if e.event_time_ms < T0 + H]
    hour1 = [serialized(e) for e in examples if e.event_time_ms >= T0 + H]
    batches = [(partition_of(T0), hour0[:1]), (partition_of(T0), hour0[1:]), (partition_of(T0 + H), hour1)]
    with pipeline() as p:
        watermark = p | "Watermark" >> beam.Create([T0 + 10 * H])
        manifests = p | beam.Create(batches) | WriteExamples(str(tmp_path), {"run": "test"}, watermark)
        assert_that(manifests | beam.Map(lambda m: (m["partition"], m["examples"], json.dumps(m["labels"]),
                                                    m["watermark_ms"])),
                    equal_to([(partition_of(T0), 2, json.dumps({"clicked": 1, "added_to_cart": 0, "purchased": 1,
                                                                 "corrections": 0}), T0 + 10 * H),
                              (partition_of(T0 + H), 1, json.dumps({"clicked": 0, "added_to_cart": 0, "purchased": 0,
                                                                     "corrections": 0}), T0 + 10 * H)]))
    written = [parse_example_fields(r) for r in read_records(tmp_path / partition_of(T0) / "examples.tfrecord")]
    assert [(f["impression_id"], f["clicked"], f["purchased"], f["purchase_value"]) for f in written] == \
        [("a", 1, 1, pytest.approx(25.0)), ("b", 0, 0, 0.0)]
    assert (written[0]["purchase_time_ms"], "cart_time_ms" in written[0]) == (T0 + H, False)  # nulls are absent
    assert "purchase_time_ms" not in written[1]
    assert json.loads((tmp_path / partition_of(T0 + H) / "_manifest.json").read_text())["source"] == {"run": "test"}
