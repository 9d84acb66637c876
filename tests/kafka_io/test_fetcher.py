import struct
import time

import pytest
from kafka import KafkaProducer
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.util import calc_crc32c

from kafka_io.fetcher import (CorruptBatchError, FetchError, PartitionFetcher, parse_record_batches,
                              read_record_batches)
from kafka_io.producer import EventProducer
from tests.conftest import read_topic

RECORDS = [(1_700_000_000_000, b"u1", b""), (1_700_000_000_500, b"u2", b"x" * 300),
           (1_699_999_999_000, b"u1", b"late"), (1_700_000_100_000, b"u3", bytes(range(256)) * 40)]
_ATTRIBUTES_AT = 21  # the int16 attributes, the first byte the CRC covers


def _built(codec: int = 0, records=RECORDS) -> bytearray:
    """A v2 record batch as kafka-python's builder writes it."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 22)
    for offset, (ts, key, value) in enumerate(records):
        builder.append(offset, timestamp=ts, key=key, value=value, headers=[])
    return bytearray(builder.build())


def _batch(codec: int = 0, attributes: int = 0) -> bytes:
    built = _built(codec)
    if attributes:
        struct.pack_into(">h", built, _ATTRIBUTES_AT, struct.unpack_from(">h", built, _ATTRIBUTES_AT)[0] | attributes)
        struct.pack_into(">I", built, 17, calc_crc32c(memoryview(built)[_ATTRIBUTES_AT:]))
    return bytes(built)


def _read_all(fetcher: PartitionFetcher, topic: str, partition: int, start: int = 0) -> list[tuple]:
    records, position = [], start
    while True:
        fetched = fetcher.fetch(topic, partition, position)
        if not fetched.records:
            assert position == fetched.high_watermark
            return records
        records += fetched.records
        position = fetched.records[-1][0] + 1


@pytest.mark.parametrize("compression", [None, "gzip", "lz4", "zstd"])
def test_the_fetcher_reads_what_kafka_pythons_consumer_reads(kafka_settings, compression):
    topic = kafka_settings.event_topics["Click"]
    with EventProducer(kafka_settings.bootstrap_servers, compression=compression or "none",
                       **{"batch.size": 3_000, "linger.ms": 5}) as producer:
        for n in range(2_000):
            producer.send(topic, f"value {n}".encode() * (n % 7), f"u{n % 40}".encode(), 1_700_000_000_000 + 37 * n)
    # And messages of another client: a null key, headers (which the fetcher skips) and a value larger than 8 KiB.
    other = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, compression_type=compression)
    other.send(topic, b"no key", partition=0, headers=[("h", b"v")], timestamp_ms=1_700_000_999_000).get(timeout=30)
    other.send(topic, b"v" * 20_000, key=b"k" * 200, partition=1, timestamp_ms=1_700_001_000_000).get(timeout=30)
    other.close()
    expected = {p: [(m.offset, m.timestamp, m.key, m.value) for m in messages]
                for p, messages in read_topic(kafka_settings, topic).items()}
    fetcher = PartitionFetcher(kafka_settings.bootstrap_servers, max_bytes=16_384)  # many fetches per partition
    try:
        assert {p: _read_all(fetcher, topic, p) for p in expected} == expected
        middle = expected[0][len(expected[0]) // 2]
        assert _read_all(fetcher, topic, 0, start=middle[0])[0] == middle  # starts inside a batch
    finally:
        fetcher.close()
    assert sum(len(records) for records in expected.values()) == 2_002


def test_an_offset_past_the_log_start_is_refused_by_name(kafka_settings):
    topic = kafka_settings.event_topics["Click"]
    fetcher = PartitionFetcher(kafka_settings.bootstrap_servers)
    try:
        with pytest.raises(FetchError, match=rf"{topic}\[0\]@1000000: OffsetOutOfRangeError"):
            fetcher.fetch(topic, 0, 1_000_000)
    finally:
        fetcher.close()


def test_a_batch_that_fails_its_checksum_is_named_by_offset():
    damaged = bytearray(_batch())
    damaged[-5] ^= 0xFF
    with pytest.raises(CorruptBatchError, match="t\\[2\\]: batch at offset 0 fails its CRC-32C check"):
        parse_record_batches(bytes(damaged), where="t[2]: ")


_COUNT_AT = 57  # the int32 record count, the header's last field


@pytest.mark.parametrize("more, says", [(1, r"the payload holds 4 of the 5 records its batch counts"),
                                        (-1, r"\d+ bytes after its 3 records")])
def test_a_batch_whose_records_do_not_match_its_count_is_named_by_offset(more, says):
    miscounted = bytearray(_batch())
    struct.pack_into(">i", miscounted, _COUNT_AT, len(RECORDS) + more)
    struct.pack_into(">I", miscounted, 17, calc_crc32c(memoryview(miscounted)[_ATTRIBUTES_AT:]))
    with pytest.raises(CorruptBatchError, match=rf"t\[1\]: batch at offset 0: {says}"):
        parse_record_batches(bytes(miscounted), where="t[1]: ")


def test_a_batch_cut_off_at_the_end_of_a_fetch_waits_for_the_next():
    whole = _batch(codec=4)
    assert [r[0] for r in parse_record_batches(whole + whole[:-10])] == [0, 1, 2, 3]
    assert parse_record_batches(whole[:40]) == []


def test_control_batches_are_skipped_and_log_append_time_applies_to_every_record():
    assert parse_record_batches(_batch(attributes=0x20)) == []
    newest = max(ts for ts, _, _ in RECORDS)
    assert [r[1] for r in parse_record_batches(_batch(attributes=0x08))] == [newest] * len(RECORDS)
    assert [r[1] for r in parse_record_batches(_batch())] == [ts for ts, _, _ in RECORDS]


def test_a_control_batch_without_its_marker_is_named_as_corrupt_pure_function():
    empty = _built(records=[])  # no record where the marker belongs
    struct.pack_into(">hi", empty, _ATTRIBUTES_AT, 0x30, 0)  # control and transactional; its one offset, 0
    struct.pack_into(">I", empty, 17, calc_crc32c(memoryview(empty)[_ATTRIBUTES_AT:]))
    with pytest.raises(CorruptBatchError, match=r"t\[0\]: control batch at offset 0 holds no readable marker"):
        read_record_batches(bytes(empty), where="t[0]: ", aborted=[(-1, 0)])  # -1: the batch's producer id


def _settled_end(fetcher: PartitionFetcher, topic: str, partition: int, expected: int) -> int:
    """A partition's end as a committed reader sees it, once it reaches `expected`: a transaction's coordinator
    answers a commit or abort before it has written the partitions' markers, so the end moves a moment later."""
    deadline = time.monotonic() + 30
    while (end := fetcher.fetch(topic, partition, 0).high_watermark) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return end


def send_in_transactions(kafka_settings, topic: str, partitions: list[int], aborted: set[int],
                         transactional_id: str) -> None:
    """One transaction per record: `value n` to partitions[n], aborted when n is in `aborted`, else committed.
    Each takes two offsets of its partition, the record's and its marker's; returns once every marker is written."""
    producer = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, transactional_id=transactional_id)
    producer.init_transactions()
    for n, partition in enumerate(partitions):
        producer.begin_transaction()
        producer.send(topic, f"value {n}".encode(), key=b"k", partition=partition, timestamp_ms=1_700_000_000_000 + n)
        producer.flush()
        if n in aborted:
            producer.abort_transaction()
        else:
            producer.commit_transaction()
    producer.close()
    fetcher = PartitionFetcher(kafka_settings.bootstrap_servers)
    try:
        for partition in set(partitions):
            _settled_end(fetcher, topic, partition, 2 * partitions.count(partition))
    finally:
        fetcher.close()


def test_transaction_markers_move_the_fetch_on_and_aborted_transactions_are_left_out(kafka_settings):
    topic = kafka_settings.event_topics["Click"]
    send_in_transactions(kafka_settings, topic, [0, 0, 0, 0], aborted={2}, transactional_id="fetcher-test")
    fetcher = PartitionFetcher(kafka_settings.bootstrap_servers)
    try:
        end = fetcher.fetch(topic, 0, 0).high_watermark
        assert end == 8
        records, position = [], 0
        while position < end:
            fetched = fetcher.fetch(topic, 0, position)
            assert fetched.next_offset > position  # never stuck on a marker
            records += fetched.records
            position = fetched.next_offset
        assert [(offset, value) for offset, _, _, value in records] == [(0, b"value 0"), (2, b"value 1"),
                                                                        (6, b"value 3")]
        # from the aborted record's own offset: past it and its marker to the next committed record
        assert [r[0] for r in fetcher.fetch(topic, 0, 4).records] == [6]
        assert fetcher.fetch(topic, 0, 7).records == []  # the last marker alone
        assert fetcher.fetch(topic, 0, 7).next_offset == 8
    finally:
        fetcher.close()


def test_an_open_transaction_ends_the_log_a_committed_reader_sees(kafka_settings):
    topic = kafka_settings.event_topics["Click"]
    KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers).send(
        topic, b"before", key=b"k", partition=0).get(timeout=30)
    producer = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, transactional_id="open-test")
    producer.init_transactions()
    producer.begin_transaction()
    producer.send(topic, b"open", key=b"k", partition=0)
    producer.flush()
    fetcher = PartitionFetcher(kafka_settings.bootstrap_servers)
    try:
        fetched = fetcher.fetch(topic, 0, 0)
        assert [r[3] for r in fetched.records] == [b"before"]
        assert fetched.high_watermark == 1
        producer.commit_transaction()
        # The coordinator writes the partitions' commit markers after it answers: the end moves soon after.
        assert _settled_end(fetcher, topic, 0, 3) == 3
        assert [r[3] for r in fetcher.fetch(topic, 0, 0).records] == [b"before", b"open"]
    finally:
        fetcher.close()
        producer.close()


def test_packed_records_unpack_to_the_same_records_and_a_cut_pack_is_refused_pure_function():
    from kafka_io._records import RecordFormatError, pack_records, unpack_records

    records = [(0, 1_700_000_000_000, b"u1", b"v" * 300), (7, -1, None, b""), (2**62, 5, b"", None), (1, 2, None, None)]
    packed = pack_records(records)
    assert unpack_records(packed) == records and unpack_records(pack_records([])) == []
    for cut in (len(packed) - 1, 20, 3):
        with pytest.raises(RecordFormatError):
            unpack_records(packed[:cut])
    with pytest.raises(TypeError):
        pack_records([(0, 1, "not bytes", b"")])


def test_damaged_batch_payloads_give_records_or_a_format_error_pure_function():
    """Seeded damage to a real batch's records (bytes flipped, cut, inserted): the C parser returns at most the
    batch's count of records, each within the payload, or raises RecordFormatError; it never reads past the end."""
    import random

    from kafka_io._records import RecordFormatError, append_records

    payload = _batch()[61:]  # the records after the 61-byte batch header
    rng, refused = random.Random(3), 0
    for n in range(2000):
        damaged = bytearray(payload)
        at = rng.randrange(len(damaged))
        if n % 3 == 0:
            damaged[at] ^= 1 << rng.randrange(8)
        elif n % 3 == 1:
            del damaged[at:]
        else:
            damaged[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        out: list = []
        try:
            append_records(bytes(damaged), len(RECORDS), 0, 0, None, 0, out)
        except RecordFormatError:
            refused += 1
            continue
        assert len(out) == len(RECORDS)
        assert sum(len(key or b"") + len(value or b"") for _, _, key, value in out) <= len(damaged)
    assert refused > 1000


def test_headers_are_read_when_asked_for_as_kafka_pythons_builder_wrote_them_pure_function():
    from kafka_io._records import RecordFormatError, append_records

    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 22)
    written = [[("traceparent", b"00-abc-01"), ("empty", b""), ("null", None), ("ünïcode", b"\xff")], [],
               [("k", b"v" * 5000)]]
    for offset, headers in enumerate(written):
        builder.append(offset, timestamp=1_700_000_000_000 + offset, key=b"u", value=b"x", headers=headers)
    batch = bytes(builder.build())
    records, _ = read_record_batches(batch, 0, headers=True)
    assert [r[4] for r in records] == written
    assert [r[:4] for r in records] == parse_record_batches(batch)  # the same records, headers or not
    assert [r[4] for r in read_record_batches(batch, 1, headers=True)[0]] == written[1:]
    payload = batch[61:]
    with pytest.raises(RecordFormatError):  # a header cut off inside its record
        append_records(payload[:40], 1, 0, 0, None, 0, [], True)
