from collections import defaultdict

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from infra.kafka.producer import BatchProducer, DeliveryError, RecordBatch

RECORDS = [(1_700_000_000_000, b"u1", b""), (1_700_000_000_500, b"u2", b"x" * 300),
           (1_699_999_999_000, b"u1", b"late"), (1_700_000_100_000, b"u3", bytes(range(256)) * 40)]


def test_record_batch_matches_kafka_pythons_builder_byte_for_byte():
    ours = RecordBatch()
    reference = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                          producer_epoch=-1, base_sequence=-1, batch_size=1 << 22)
    for offset, (ts, key, value) in enumerate(RECORDS):
        ours.append(ts, key, value)
        reference.append(offset, timestamp=ts, key=key, value=value, headers=[])
    built, expected = ours.build(codec=0), bytes(reference.build())
    # Bytes 12..15 are the partition leader epoch: -1 as the Java producer writes it, 0 from kafka-python.
    assert built[:12] + built[16:] == expected[:12] + expected[16:]


@pytest.mark.parametrize("codec", [0, 1, 4])
def test_compressed_batches_read_back_with_valid_crc(codec):
    batch = RecordBatch()
    for ts, key, value in RECORDS:
        batch.append(ts, key, value)
    read = DefaultRecordBatch(bytearray(batch.build(codec)))
    assert read.validate_crc()
    assert [(r.offset, r.timestamp, r.key, r.value) for r in read] == \
        [(i, ts, key, value) for i, (ts, key, value) in enumerate(RECORDS)]


def _read_partitions(settings, topic) -> dict[int, list]:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, consumer_timeout_ms=5_000)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        by_partition = defaultdict(list)
        for message in consumer:
            by_partition[message.partition].append(message)
        return by_partition
    finally:
        consumer.close()


def test_keys_land_where_kafka_pythons_producer_puts_them_in_order(kafka_settings):
    topic = kafka_settings.event_topics["Click"]
    keys = [f"u{n:07d}".encode() for n in range(50)]
    reference = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers)
    expected = {key: reference.send(topic, b"ref", key=key).get(timeout=30).partition for key in keys}
    reference.close()
    # Small batches and requests, so that a run spans many requests with several batches per partition.
    with BatchProducer(kafka_settings.bootstrap_servers, batch_bytes=2_000, request_bytes=6_000) as producer:
        for n in range(3_000):
            key = keys[n % len(keys)]
            producer.send(topic, f"{n}".encode(), key, 1_700_000_000_000 + n)
    seen = defaultdict(list)
    for partition, messages in _read_partitions(kafka_settings, topic).items():
        for m in messages:
            if m.value != b"ref":
                assert expected[m.key] == partition
                seen[m.key].append(int(m.value))
    assert sum(len(v) for v in seen.values()) == 3_000
    assert all(values == sorted(values) for values in seen.values())


def test_a_message_larger_than_a_batch_goes_alone(kafka_settings):
    topic = kafka_settings.event_topics["Impression"]
    with BatchProducer(kafka_settings.bootstrap_servers, batch_bytes=1_000) as producer:
        producer.send(topic, b"x" * 50_000, b"big", 1_700_000_000_000)
        producer.send(topic, b"small", b"big", 1_700_000_000_001)
    (messages,) = _read_partitions(kafka_settings, topic).values()
    assert [len(m.value) for m in messages] == [50_000, 5]


def test_an_unknown_topic_is_named(kafka_settings):
    with pytest.raises(DeliveryError, match="no.such.topic"):
        with BatchProducer(kafka_settings.bootstrap_servers) as producer:
            producer.send("no.such.topic", b"v", b"k", 1)
