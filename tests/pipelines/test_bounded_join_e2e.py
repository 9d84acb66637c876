"""Simulate, Kafka, the bounded join on the FnApiRunner, TFRecords: labels equal the reference labeler's."""
from collections import Counter

import pytest
from kafka import KafkaProducer

from pipelines.partitions import EXAMPLES_FILE
from config.join import LabelConfig
from pipelines.reference_labeler import reference_labels
from pipelines.run import run_bounded_join
from config.join import JoinSettings
from schemas import EventEncoder
from simulator import Simulation, SimulatorConfig
from simulator.sinks import KafkaSink
from tests.conftest import read_dead_letters

LABELS = LabelConfig(click_window_s=1800, cart_window_s=3600, purchase_window_s=86400)
SIM = SimulatorConfig.model_validate({"seed": 9, "requests": 1500, "days": 3.0,
                                      "catalogue": {"users": 120, "items": 60}})


def read_tfrecords(path):
    from trainer.tf_runtime import tf

    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]


def value(example, name):
    feature = example.features.feature.get(name)
    if feature is None:
        return None
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value)
    return values[0].decode() if kind == "bytes_list" else values[0]


@pytest.fixture(scope="module")
def joined(tmp_path_factory, request):
    kafka_settings = request.getfixturevalue("kafka_settings_module")
    events = list(Simulation(SIM).events())
    with KafkaSink(kafka_settings) as sink:
        sink.write(events)
    bad = {b"not avro": "not_single_object", b"\xc3\x01" + bytes(8) + b"\x02x": "unknown_fingerprint"}
    producer = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, acks="all")
    for payload in bad:
        producer.send(kafka_settings.event_topics["Click"], payload, key=b"u0000001", timestamp_ms=SIM.start_ms + 1)
    dwell = next(e for e in events if e.name == "Dwell")
    producer.send(kafka_settings.event_topics["Dwell"], EventEncoder().encode("Dwell", {**dwell.datum, "dwell_ms": -3}),
                  key=dwell.key, timestamp_ms=dwell.delivery_ms)
    producer.flush()
    producer.close()
    out = tmp_path_factory.mktemp("examples")
    settings = JoinSettings(labels=LABELS, output_dir=out)
    result = run_bounded_join(kafka_settings, settings, runner="direct")
    return events, result, out, kafka_settings


def test_labels_equal_the_reference_labeler_example_by_example(joined):
    events, result, out, _ = joined
    assert result.manifests, "no partition was written"
    watermark = result.manifests[0]["watermark_ms"]
    written = {}
    for manifest in result.manifests:
        examples = read_tfrecords(out / manifest["partition"] / EXAMPLES_FILE)
        assert len(examples) == manifest["examples"]
        for ex in examples:
            assert value(ex, "impression_id") not in written
            written[value(ex, "impression_id")] = ex
    settled_end = (watermark - LABELS.horizon_ms) // 3_600_000 * 3_600_000
    expected = reference_labels([(e.name, e.datum) for e in events], LABELS.click_window_ms, LABELS.cart_window_ms,
                                LABELS.purchase_window_ms, watermark)
    impressions = {e.datum["event_id"]: e.datum for e in events if e.name == "Impression"}
    expected = {k: v for k, v in expected.items() if impressions[k]["event_time_ms"] < settled_end}
    assert len(expected) > 3_000
    assert set(written) == set(expected)
    for impression_id, labels in expected.items():
        ex = written[impression_id]
        got = {"clicked": bool(value(ex, "clicked")), "click_time_ms": value(ex, "click_time_ms"),
               "dwell_ms": value(ex, "dwell_ms"), "added_to_cart": bool(value(ex, "added_to_cart")),
               "purchased": bool(value(ex, "purchased")), "purchase_value": value(ex, "purchase_value")}
        assert got == pytest.approx(labels), impression_id
    assert sum(l["purchased"] for l in expected.values()) > 10


def test_partitions_are_event_hours_with_manifests(joined):
    _, result, out, _ = joined
    for manifest in result.manifests:
        start, end = manifest["event_time_ms"]
        assert manifest["partition"].startswith("dt=2026-11-0")
        assert end - start < 3_600_000
        assert (out / manifest["partition"] / "_manifest.json").exists()
    assert not list(out.rglob("*.tmp"))


def test_malformed_messages_land_in_the_dead_letter_topic_with_their_reason(joined):
    events, result, _, kafka_settings = joined
    assert result.counters["dead_letters.not_single_object"] == 1
    assert result.counters["dead_letters.unknown_fingerprint"] == 1
    assert result.counters["dead_letters.invalid_value"] == 1
    duplicates = sum(1 for e in events) - len({(e.name, e.datum["event_id"]) for e in events})
    assert result.counters["join.duplicate_deliveries"] == duplicates
    letters = read_dead_letters(kafka_settings)
    reasons = Counter(dict(m.headers)["reason"].decode() for m in letters)
    assert reasons == {"not_single_object": 1, "unknown_fingerprint": 1, "invalid_value": 1}
    by_reason = {dict(m.headers)["reason"].decode(): m for m in letters}
    assert by_reason["not_single_object"].value == b"not avro"
    headers = dict(by_reason["invalid_value"].headers)
    assert headers["source.topic"].decode() == kafka_settings.event_topics["Dwell"]
    assert b"dwell_ms -3 is negative" in headers["detail"]


def test_the_same_join_on_flink_writes_the_same_partitions(joined, tmp_path):
    """The pipeline above, unchanged, on Beam's FlinkRunner (an embedded Flink behind infra/flink's job server)."""
    _, direct, direct_out, kafka_settings = joined
    out = tmp_path / "flink"
    flink = run_bounded_join(kafka_settings, JoinSettings(labels=LABELS, output_dir=out), runner="flink",
                             ranges=direct.ranges)
    assert [m["partition"] for m in flink.manifests] == [m["partition"] for m in direct.manifests]
    for ours, theirs in zip(flink.manifests, direct.manifests):
        assert (ours["examples"], ours["labels"]) == (theirs["examples"], theirs["labels"]), ours["partition"]
        assert (out / ours["partition"] / EXAMPLES_FILE).read_bytes() == \
            (direct_out / theirs["partition"] / EXAMPLES_FILE).read_bytes(), ours["partition"]
    assert same_counts(flink.counters, direct.counters)


def same_counts(rerun, first):
    """A rerun over the same offsets counts the same, but skips the dead letters the first run wrote."""
    def counts(counters):
        return {k: v for k, v in counters.items() if k.startswith(("dead_letters.", "join."))
                and k not in ("dead_letters.written", "dead_letters.already_written")}

    return counts(rerun) == counts(first) and "dead_letters.written" not in rerun and \
        rerun["dead_letters.already_written"] == first["dead_letters.written"]


def test_the_same_join_on_two_worker_processes_writes_the_same_partitions(joined, tmp_path):
    """With direct_num_workers=2 the offset ranges are spread over two SDK worker processes before they are read,
    and every step after the grouping by user runs in either."""
    _, direct, direct_out, kafka_settings = joined
    out = tmp_path / "two"
    two = run_bounded_join(kafka_settings, JoinSettings(labels=LABELS, output_dir=out, direct_num_workers=2),
                           runner="direct", ranges=direct.ranges)
    assert [m["partition"] for m in two.manifests] == [m["partition"] for m in direct.manifests]
    for ours in two.manifests:
        assert (out / ours["partition"] / EXAMPLES_FILE).read_bytes() == \
            (direct_out / ours["partition"] / EXAMPLES_FILE).read_bytes(), ours["partition"]
    assert same_counts(two.counters, direct.counters)
