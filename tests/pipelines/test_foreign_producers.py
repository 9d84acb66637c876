"""The bounded join against what producers other than valueloop's own send, through the real broker: librdkafka
(confluent-kafka) with every codec, poison pills, records with no key and no value, replays without record
timestamps, clocks a year ahead, reruns, and transactions committed just before a snapshot."""
import os

import pytest
from confluent_kafka import Producer

from pipelines.dead_letters import DeadLetterError
from pipelines.partitions import EXAMPLES_FILE
from pipelines.kafka_source import snapshot_ranges
from config.join import LabelConfig
from pipelines.reference_labeler import reference_labels
from pipelines.run import MostlyLateError, run_bounded_join
from config.join import JoinSettings, LatenessReference
from schemas import EventEncoder
from simulator import Simulation, SimulatorConfig
from simulator.sinks import KafkaSink
from tests.conftest import _own_topics, read_dead_letters

LABELS = LabelConfig(click_window_s=1800, cart_window_s=3600, purchase_window_s=7200)
SIM = SimulatorConfig.model_validate({"seed": 21, "requests": 700, "days": 1.0,
                                      "catalogue": {"users": 80, "items": 40}})
YEAR_MS = 365 * 86_400_000


@pytest.fixture(scope="module")
def events():
    return list(Simulation(SIM).events())


def produce(settings, messages, **config):
    """(topic, key, value, timestamp or None[, partition or None[, headers]]) through librdkafka, partitioned as
    Kafka's Java client does where no partition is given."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "acks": "all",
                         "partitioner": "murmur2_random", "message.max.bytes": 4 << 20, "linger.ms": 50, **config})
    failures = []
    for topic, key, value, timestamp, *rest in messages:
        extra = {} if timestamp is None else {"timestamp": timestamp}
        partition, headers = (rest + [None, None])[:2]
        extra.update({"partition": partition} if partition is not None else {})
        extra.update({"headers": headers} if headers is not None else {})
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=lambda e, m: e and failures.append(e),
                                 **extra)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0 and not failures, failures


def event_messages(settings, events, timestamps=True):
    encode = EventEncoder().encode
    return [(settings.event_topics[e.name], e.key, encode(e.name, e.datum), e.delivery_ms if timestamps else None)
            for e in events]


def join(settings, out, **join_settings):
    return run_bounded_join(settings, JoinSettings(labels=LABELS, output_dir=out, **join_settings))


def example_files(result, out):
    return {m["partition"]: (out / m["partition"] / EXAMPLES_FILE).read_bytes() for m in result.manifests}


@pytest.fixture(scope="module")
def own_producer_join(kafka_broker, events, tmp_path_factory):
    """The reference: the same events through valueloop's own producer, joined."""
    settings = _own_topics(kafka_broker)
    with KafkaSink(settings) as sink:
        sink.write(events)
    out = tmp_path_factory.mktemp("own")
    result = join(settings, out)
    files = example_files(result, out)
    assert len(files) > 10
    return settings, result, files


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_every_codec_from_librdkafka_gives_the_own_producers_output(kafka_broker, events, own_producer_join, codec,
                                                                   tmp_path):
    settings = _own_topics(kafka_broker)
    produce(settings, event_messages(settings, events), **{"compression.type": codec})
    result = join(settings, tmp_path)
    assert example_files(result, tmp_path) == own_producer_join[2]
    assert result.counters.get("decode.events") == own_producer_join[1].counters["decode.events"]


@pytest.fixture(scope="module")
def poisoned(kafka_broker, events, tmp_path_factory):
    """Valid events with a 2 MiB value, a record with neither key nor value and a keyed tombstone among them,
    joined twice over the same offsets."""
    settings = _own_topics(kafka_broker)
    messages = event_messages(settings, events)
    third = len(messages) // 3
    huge = os.urandom(2 << 20)
    bad = [(settings.event_topics["Click"], b"u-huge", huge, SIM.start_ms + 60_000),
           (settings.event_topics["Dwell"], None, None, SIM.start_ms + 120_000),
           (settings.event_topics["Impression"], b"u-tomb", None, SIM.start_ms + 180_000)]
    produce(settings, messages[:third] + bad[:1] + messages[third:2 * third] + bad[1:] + messages[2 * third:])
    first_out, second_out = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    first = join(settings, first_out)
    after_first = read_dead_letters(settings)
    second = join(settings, second_out)
    return settings, huge, (first, first_out, after_first), (second, second_out, read_dead_letters(settings))


def test_poison_pills_and_empty_records_end_as_dead_letters_with_their_origin(poisoned, own_producer_join):
    settings, huge, (result, out, letters), _ = poisoned
    assert example_files(result, out) == own_producer_join[2]  # every valid event labeled, as without them
    by_topic = {dict(m.headers)["source.topic"].decode(): m for m in letters}
    assert len(letters) == 3 and set(by_topic) == {settings.event_topics[n] for n in ("Click", "Dwell", "Impression")}
    for message in letters:
        headers = dict(message.headers)
        assert headers["reason"] == b"not_single_object"
        assert headers["dead_letter.id"].decode() == "/".join(
            [headers["source.topic"].decode(), headers["source.partition"].decode(), headers["source.offset"].decode()])
    huge_letter = dict(by_topic[settings.event_topics["Click"]].headers)
    assert by_topic[settings.event_topics["Click"]].key == b"u-huge"
    assert by_topic[settings.event_topics["Click"]].value == huge[:64 << 10]
    assert huge_letter["value.truncated"] == b"true" and huge_letter["value.size"] == str(2 << 20).encode()
    import hashlib
    assert huge_letter["value.sha256"] == hashlib.sha256(huge).hexdigest().encode()
    empty = by_topic[settings.event_topics["Dwell"]]
    assert (empty.key, empty.value, dict(empty.headers)["value.size"], dict(empty.headers)["key.size"]) == \
        (None, None, b"-1", b"-1")
    tombstone = by_topic[settings.event_topics["Impression"]]
    assert (tombstone.key, tombstone.value) == (b"u-tomb", None)
    assert result.counters["dead_letters.not_single_object"] == 3 and result.counters["dead_letters.written"] == 3


def test_running_the_same_join_twice_leaves_the_dead_letter_topic_as_after_one_run(poisoned):
    _, _, (first, first_out, after_first), (second, second_out, after_second) = poisoned
    assert len(after_second) == len(after_first) == 3
    assert sorted(dict(m.headers)["dead_letter.id"] for m in after_second) == \
        sorted(dict(m.headers)["dead_letter.id"] for m in after_first)
    assert second.counters["dead_letters.already_written"] == 3 and "dead_letters.written" not in second.counters
    assert example_files(second, second_out) == example_files(first, first_out)


def test_a_replay_without_record_timestamps_fails_loudly_and_labels_everything_measured_by_event_time(
        kafka_broker, events, tmp_path):
    settings = _own_topics(kafka_broker)
    produce(settings, event_messages(settings, events, timestamps=False))  # stamped now, as kcat or a replay does
    with pytest.raises(MostlyLateError, match=r"measured against record time.*--lateness event_time"):
        join(settings, tmp_path / "default")

    result = join(settings, tmp_path / "replay", lateness_reference=LatenessReference.EVENT_TIME)
    assert result.counters.get("join.late_events", 0) == 0
    watermark = result.manifests[0]["watermark_ms"]
    assert watermark < SIM.start_ms + 2 * 86_400_000  # event time, not the replay's clock
    settled_end = (watermark - LABELS.horizon_ms) // 3_600_000 * 3_600_000
    expected = reference_labels([(e.name, e.datum) for e in events], LABELS.click_window_ms, LABELS.cart_window_ms,
                                LABELS.purchase_window_ms, watermark)
    impressions = {e.datum["event_id"]: e.datum for e in events if e.name == "Impression"}
    expected = {k for k in expected if impressions[k]["event_time_ms"] < settled_end}
    assert sum(m["examples"] for m in result.manifests) == len(expected) > 2000


def allow_any_timestamp(settings, topic):
    """Kafka 4 refuses records stamped over an hour ahead of the broker's clock (message.timestamp.after.max.ms);
    brokers before it, and topics that raise the bound, keep them."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[ConfigEntry(
        "message.timestamp.after.max.ms", str(2**63 - 1), incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(30)


def test_records_stamped_a_year_ahead_and_dead_letters_leave_the_days_labels_as_without_them(kafka_broker, events,
                                                                                            tmp_path):
    """In every partition, one valid-looking event stamped a year ahead (its event time too) and one message of
    junk stamped a day after the last event: either would have moved the watermark of every partition."""
    settings = _own_topics(kafka_broker)
    with KafkaSink(settings) as sink:
        sink.write(events)
    before = join(settings, tmp_path / "before")
    encode = EventEncoder().encode
    junk_ms = max(e.delivery_ms for e in events) + 86_400_000
    extra = []
    for name, topic in settings.event_topics.items():
        allow_any_timestamp(settings, topic)
        model = next(e for e in events if e.name == name)
        for partition in range(settings.partitions):
            ahead = {**model.datum, "event_id": f"ahead-{partition}",
                     "event_time_ms": model.datum["event_time_ms"] + YEAR_MS}
            extra += [(topic, model.key, encode(name, ahead), model.delivery_ms + YEAR_MS, partition),
                      (topic, b"u-junk", b"junk", junk_ms, partition)]
    produce(settings, extra)
    after = join(settings, tmp_path / "after")
    assert example_files(after, tmp_path / "after") == example_files(before, tmp_path / "before")
    assert after.manifests[0]["watermark_ms"] == before.manifests[0]["watermark_ms"]
    cells = len(settings.event_topics) * settings.partitions
    assert after.counters["dead_letters.record_time_ahead"] == cells
    assert after.counters["dead_letters.not_single_object"] == cells


def test_a_snapshot_right_after_a_transaction_commits_holds_its_records(kafka_broker):
    from confluent_kafka import Producer as TransactionalProducer

    settings = _own_topics(kafka_broker)
    topic = settings.event_topics["Click"]
    producer = TransactionalProducer({"bootstrap.servers": settings.bootstrap_servers,
                                      "transactional.id": f"{topic}-tx", "partitioner": "murmur2_random"})
    producer.init_transactions(30)
    sent = 0
    for round_ in range(5):
        producer.begin_transaction()
        for i in range(20):
            producer.produce(topic, key=f"u{i}".encode(), value=b"x")
        sent += 20
        producer.commit_transaction(30)
        ranges = snapshot_ranges(settings.bootstrap_servers, [topic])
        # Each committed transaction takes one marker offset per partition it wrote to.
        records = sum(r.stop - r.start for r in ranges) - (round_ + 1) * len(ranges)
        assert records >= sent, f"round {round_}: the snapshot ends before the committed records"


def test_a_missing_dead_letter_topic_is_named_as_the_cause(kafka_broker, tmp_path):
    settings = _own_topics(kafka_broker).model_copy(update={"dead_letter_topic": "no.such.dead_letter"})
    with pytest.raises(DeadLetterError, match="the dead-letter topic no.such.dead_letter does not exist"):
        join(settings, tmp_path)


# -- what the broker accepts, the join reads ---------------------------------------------------------------------

BIG = {"message.max.bytes": 16 << 20, "compression.type": "none"}  # librdkafka leaves the refusing to the broker
TRACE = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("origin", b"kcat")]


def test_a_record_just_under_the_topics_limit_is_a_dead_letter_with_its_headers_and_costs_no_event(
        kafka_broker, events, own_producer_join, tmp_path):
    settings = _own_topics(kafka_broker)
    messages = event_messages(settings, events)
    limit = settings.event_max_bytes
    pill = os.urandom(limit - 512)  # with the batch's framing, just under the topic's max.message.bytes
    topic = settings.event_topics["Impression"]
    half = len(messages) // 2
    produce(settings, messages[:half] + [(topic, b"u-pill", pill, SIM.start_ms + 60_000, 0, TRACE)] +
            messages[half:], **BIG)
    result = join(settings, tmp_path)
    assert example_files(result, tmp_path) == own_producer_join[2]  # every valid event labeled, as without it
    (letter,) = read_dead_letters(settings)
    headers = dict(letter.headers)
    assert (headers["source.topic"].decode(), headers["source.partition"]) == (topic, b"0")
    assert headers["reason"] == b"not_single_object" and headers["source.timestamp"] == str(SIM.start_ms + 60_000).encode()
    assert letter.value == pill[:64 << 10] and headers["value.size"] == str(len(pill)).encode()
    assert headers["value.truncated"] == b"true"
    assert [(n, v) for n, v in letter.headers if n.startswith("original.")] == \
        [("original." + n, v) for n, v in TRACE]
    assert result.counters["dead_letters.not_single_object"] == 1 == result.counters["dead_letters.written"]


BATCH_SIM = SimulatorConfig.model_validate({"seed": 22, "requests": 6_500, "days": 1.0,
                                            "catalogue": {"users": 500, "items": 200}})


def largest_batch(kafka_broker, topic: str, partition: int) -> int:
    """The largest record batch in the partition's log, as the broker stored it: each batch starts with its base
    offset (int64) and the length (int32) of what follows."""
    import struct

    largest = 0
    for segment in sorted((kafka_broker.data_dir / f"{topic}-{partition}").glob("*.log")):
        data, at = segment.read_bytes(), 0
        while at + 12 <= len(data):
            length = struct.unpack_from(">i", data, at + 8)[0]
            largest, at = max(largest, 12 + length), at + 12 + length
    return largest


@pytest.fixture(scope="module")
def batched_joins(kafka_broker, tmp_path_factory):
    """The same 85,000 events from librdkafka twice, every impression to partition 0: once in batches of about
    10 MB (over the 9 MiB a fetcher's frames once held), once in its default batches."""
    batch_events = list(Simulation(BATCH_SIM).events())
    joins = {}
    for name, config in {"large": {"batch.size": 10_000_000, "batch.num.messages": 1_000_000, "linger.ms": 3_000},
                         "small": {"batch.size": 16_384}}.items():
        settings = _own_topics(kafka_broker)
        impressions = settings.event_topics["Impression"]
        produce(settings, [(topic, key, value, ts, 0 if topic == impressions else None)
                           for topic, key, value, ts in event_messages(settings, batch_events)], **BIG, **config)
        out = tmp_path_factory.mktemp(name)
        joins[name] = (settings, join(settings, out, user_shards=8), out)
    return joins


def test_a_batch_of_10_mb_of_valid_events_is_labeled_as_the_same_events_in_small_batches(kafka_broker,
                                                                                         batched_joins):
    (large_settings, large, large_out), (small_settings, small, small_out) = batched_joins["large"], batched_joins["small"]
    impressions = large_settings.event_topics["Impression"]
    assert largest_batch(kafka_broker, impressions, 0) > 9_500_000
    assert largest_batch(kafka_broker, small_settings.event_topics["Impression"], 0) < 100_000
    assert large.counters["decode.events"] == small.counters["decode.events"] > 80_000
    assert example_files(large, large_out) == example_files(small, small_out)
    assert sum(m["examples"] for m in large.manifests) > 50_000


def test_a_batch_larger_than_the_reader_takes_names_where_it_is_and_the_setting_that_lets_it_through(
        kafka_broker, batched_joins, tmp_path):
    """The topics' limits lowered after a large batch was written: the join names the batch, then reads it when
    told to take batches that large."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    from pipelines.kafka_source import SourceError

    settings, large, large_out = batched_joins["large"]
    impressions = settings.event_topics["Impression"]
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})

    def limit_topics(max_bytes: int) -> None:
        for topic in settings.event_topics.values():
            resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[ConfigEntry(
                "max.message.bytes", str(max_bytes), incremental_operation=AlterConfigOpType.SET)])
            admin.incremental_alter_configs([resource])[resource].result(30)

    limit_topics(1 << 20)
    try:
        with pytest.raises(SourceError, match=rf"{impressions}\[0\]@0: the broker answered with a record batch of "
                                            r"about \d+ bytes.*join.max_batch_bytes to at least \d+"):
            join(settings, tmp_path / "refused", user_shards=8)
        result = join(settings, tmp_path / "allowed", user_shards=8, max_batch_bytes=12 << 20)
        assert example_files(result, tmp_path / "allowed") == example_files(large, large_out)
    finally:
        limit_topics(settings.event_max_bytes)


def test_a_record_over_the_topics_limit_is_refused_by_the_broker_when_it_is_produced(kafka_broker):
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

    settings = _own_topics(kafka_broker)
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    for topic in settings.event_topics.values():  # set on each topic valueloop creates, not inherited
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        limit = admin.describe_configs([resource])[resource].result(30)["max.message.bytes"]
        assert (int(limit.value), limit.source) == (settings.event_max_bytes, ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "acks": "all", **BIG})
    failures = []
    producer.produce(settings.event_topics["Click"], key=b"u-over", value=os.urandom(settings.event_max_bytes + 1),
                     on_delivery=lambda error, message: failures.append(error))
    assert producer.flush(60) == 0
    assert [f.code() for f in failures] == [KafkaError.MSG_SIZE_TOO_LARGE]  # the broker's error code (10)


# -- each dead letter named by its real fault ----------------------------------------------------------------------


def test_under_event_time_lateness_a_record_stamped_a_year_ahead_is_a_dead_letter_for_its_record_time(
        kafka_broker, events, tmp_path):
    """The same records as the year-ahead test, joined with lateness measured against event time: the letters say
    record_time_ahead with the record's own time, and each counter equals the letters of its reason."""
    from collections import Counter

    settings = _own_topics(kafka_broker)
    encode = EventEncoder().encode
    extra = []
    for name, topic in settings.event_topics.items():
        allow_any_timestamp(settings, topic)
        model = next(e for e in events if e.name == name)
        ahead = {**model.datum, "event_id": f"ahead-{name}", "event_time_ms": model.datum["event_time_ms"] + YEAR_MS}
        extra += [(topic, model.key, encode(name, ahead), model.delivery_ms + YEAR_MS, 0, [("trace", name.encode())]),
                  (topic, b"u-junk", b"junk", model.delivery_ms, 1)]
    produce(settings, event_messages(settings, events) + extra)
    result = join(settings, tmp_path, lateness_reference=LatenessReference.EVENT_TIME)
    letters = [dict(m.headers) for m in read_dead_letters(settings)]
    by_reason = Counter(h["reason"].decode() for h in letters)
    assert by_reason == {"record_time_ahead": 5, "not_single_object": 5}
    assert {reason: result.counters[f"dead_letters.{reason}"] for reason in by_reason} == by_reason
    for headers in letters:
        if headers["reason"] == b"record_time_ahead":
            name = headers["original.trace"].decode()
            model = next(e for e in events if e.name == name)
            assert headers["source.timestamp"] == str(model.delivery_ms + YEAR_MS).encode()
            assert b"past the latest the reader allows" in headers["detail"]
        else:  # its own record time, not the partition's event-time frontier
            assert int(headers["source.timestamp"]) in {e.delivery_ms for e in events}


def test_on_log_append_time_topics_the_mostly_late_error_names_the_topics_timestamp_type(kafka_broker, events,
                                                                                        tmp_path):
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    settings = _own_topics(kafka_broker)
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    for topic in settings.event_topics.values():
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[ConfigEntry(
            "message.timestamp.type", "LogAppendTime", incremental_operation=AlterConfigOpType.SET)])
        admin.incremental_alter_configs([resource])[resource].result(30)
    produce(settings, event_messages(settings, events))  # their own record times, replaced by the broker's
    with pytest.raises(MostlyLateError) as late:
        join(settings, tmp_path / "default")
    text = str(late.value)
    assert "message.timestamp.type=LogAppendTime" in text and settings.event_topics["Click"] in text
    assert "--lateness event_time" in text and "a tool that stamps" not in text
    result = join(settings, tmp_path / "replay", lateness_reference=LatenessReference.EVENT_TIME)
    assert result.counters.get("join.late_events", 0) == 0 and result.manifests
