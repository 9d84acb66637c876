"""Simulated events through the real broker and through Avro files come back exactly as generated."""
from collections import Counter, defaultdict

import fastavro
import pytest
from kafka import KafkaProducer

from schemas import BadEventError, EventDecoder
from schemas.codec import Reason
from simulator import Simulation, SimulatorConfig
from simulator.sinks import AvroFileSink, KafkaSink
from tests.conftest import read_topic

SMALL = SimulatorConfig.model_validate({"seed": 5, "requests": 600, "days": 0.5, "catalogue": {"users": 200, "items": 100}})


def consume_all(settings, topic: str) -> list:
    return [m for _, messages in sorted(read_topic(settings, topic).items()) for m in messages]


def test_simulated_events_round_trip_through_the_broker(kafka_settings):
    expected = list(Simulation(SMALL).events())
    with KafkaSink(kafka_settings) as sink:
        sent = sink.write(expected)
    assert sum(sent.values()) == len(expected)

    decoder = EventDecoder()
    for name, topic in kafka_settings.event_topics.items():
        messages = consume_all(kafka_settings, topic)
        wanted = [e for e in expected if e.name == name]
        got = [(m.key, m.timestamp, decoder.decode(m.value, m.topic, m.partition, m.offset, m.timestamp)) for m in messages]
        assert Counter((k, ts, ev.datum["event_id"]) for k, ts, ev in got) == \
            Counter((e.key, e.delivery_ms, e.datum["event_id"]) for e in wanted)
        by_id = {e.datum["event_id"]: e.datum for e in wanted}
        assert all(ev.name == name and ev.datum == by_id[ev.datum["event_id"]] for _, _, ev in got)
        # One user's events share a partition and keep their delivery order within it.
        per_user_partition = defaultdict(set)
        for m in messages:
            per_user_partition[m.key].add(m.partition)
        assert all(len(p) == 1 for p in per_user_partition.values())
        for partition in {m.partition for m in messages}:
            stamps = [m.timestamp for m in messages if m.partition == partition]
            assert stamps == sorted(stamps)


def test_each_kind_of_bad_message_from_the_broker_names_its_origin(kafka_settings):
    topic = kafka_settings.event_topics["Click"]
    producer = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, acks="all")
    good = next(e for e in Simulation(SMALL).events() if e.name == "Click")
    from schemas import EventEncoder

    valid = EventEncoder().encode("Click", good.datum)
    payloads = {
        Reason.NOT_SINGLE_OBJECT: b"not avro at all",
        Reason.UNKNOWN_FINGERPRINT: b"\xc3\x01" + bytes(8) + valid[10:],
        Reason.MALFORMED_BODY: valid[:-4],
        Reason.INVALID_VALUE: EventEncoder().encode("Dwell", {**good.datum, "dwell_ms": -1}),
    }
    for payload in payloads.values():
        producer.send(topic, payload, partition=1, timestamp_ms=good.delivery_ms)
    producer.send(topic, valid, partition=1, timestamp_ms=good.delivery_ms)
    producer.flush()
    producer.close()

    decoder = EventDecoder()
    reasons, decoded = [], []
    for m in consume_all(kafka_settings, topic):
        try:
            decoded.append(decoder.decode(m.value, m.topic, m.partition, m.offset, m.timestamp))
        except BadEventError as error:
            assert (error.topic, error.partition, error.offset) == (topic, 1, m.offset)
            assert f"{topic}[1]@{m.offset}: {error.reason.value}" in str(error)
            reasons.append(error.reason)
    assert reasons == list(payloads)
    assert [e.datum for e in decoded] == [good.datum]


def test_avro_files_hold_every_event_in_delivery_order(tmp_path):
    expected = list(Simulation(SMALL).events())
    with AvroFileSink(tmp_path) as sink:
        sink.write(expected)
    for name in ("Impression", "Click", "Dwell", "AddToCart", "Purchase"):
        with open(sink.path(name), "rb") as f:
            records = list(fastavro.reader(f))
        assert records == [e.datum for e in expected if e.name == name]
        assert records, name
