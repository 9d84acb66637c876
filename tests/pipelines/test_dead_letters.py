"""What a dead letter carries to its topic, and what a failed delivery says: pure functions."""
import hashlib

from confluent_kafka import KafkaError
from kafka import KafkaProducer

from pipelines.dead_letters import PREFIX_BYTES, OriginReader, _describe_failures, dead_letter_message
from pipelines.records import DeadLetter


def letter(key, value):
    return DeadLetter("valueloop.clicks", 2, 41, 1_767_225_600_000, key, value, "not_single_object", "got nothing")


def test_a_letter_that_fits_goes_whole_with_its_origin_pure_function():
    key, value, headers = dead_letter_message(letter(b"u1", b"junk"), 1 << 20)
    headers = dict(headers)
    assert (key, value) == (b"u1", b"junk")
    assert headers["source.topic"] == b"valueloop.clicks" and headers["source.partition"] == b"2"
    assert headers["source.offset"] == b"41" and headers["source.timestamp"] == b"1767225600000"
    assert headers["reason"] == b"not_single_object" and headers["detail"] == b"got nothing"
    assert headers["dead_letter.id"] == b"valueloop.clicks/2/41"
    assert (headers["key.size"], headers["value.size"]) == (b"2", b"4")
    assert not any(name.endswith("truncated") for name in headers)


def test_a_value_too_large_for_the_topic_keeps_a_marked_prefix_pure_function():
    huge = bytes(range(256)) * 8192  # 2 MiB
    key, value, headers = dead_letter_message(letter(b"u1", huge), 1 << 20)
    headers = dict(headers)
    assert key == b"u1" and value == huge[:PREFIX_BYTES]
    assert headers["value.truncated"] == b"true" and headers["value.size"] == str(len(huge)).encode()
    assert headers["value.sha256"] == hashlib.sha256(huge).hexdigest().encode()
    # Just under the limit, less the room headers take, still goes whole.
    fits = huge[:(1 << 20) - (16 << 10) - 2]
    assert dead_letter_message(letter(b"u1", fits), 1 << 20)[1] == fits


def test_a_huge_key_is_cut_too_and_a_record_without_key_or_value_is_a_letter_pure_function():
    key, value, headers = dead_letter_message(letter(b"k" * (1 << 20), b"v"), 1 << 20)
    assert len(key) == PREFIX_BYTES and dict(headers)["key.truncated"] == b"true" and value == b"v"
    key, value, headers = dead_letter_message(letter(None, None), 1 << 20)
    assert (key, value, dict(headers)["key.size"], dict(headers)["value.size"]) == (None, None, b"-1", b"-1")


def test_a_refused_delivery_names_the_topic_not_the_broker_pure_function():
    refused = _describe_failures("valueloop.dead_letter", "127.0.0.1:9092",
                                 [KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)] * 2, 0)
    assert refused.startswith("2 dead letters could not be written to valueloop.dead_letter: the topic refused them")
    assert "MSG_SIZE_TOO_LARGE" in refused and "broker" not in refused
    unreachable = _describe_failures("valueloop.dead_letter", "127.0.0.1:9092",
                                     [KafkaError(KafkaError._MSG_TIMED_OUT)], 0)
    assert "the broker at 127.0.0.1:9092 did not take them" in unreachable


def test_the_original_headers_follow_valueloops_own_under_a_prefix_pure_function():
    original = [("traceparent", b"00-abc-01"), ("reason", b"theirs"), ("null", None)]
    _, _, headers = dead_letter_message(letter(b"u1", b"junk"), 1 << 20, original)
    assert headers[-3:] == [("original.traceparent", b"00-abc-01"), ("original.reason", b"theirs"),
                            ("original.null", None)]
    as_dict = dict(headers)
    assert as_dict["reason"] == b"not_single_object" and as_dict["source.header_count"] == b"3"
    assert "source.headers_truncated" not in as_dict
    # Headers that could not be read back are said to be unread; too many bytes of them are cut, and said so.
    assert dict(dead_letter_message(letter(b"u1", b"junk"), 1 << 20)[2])["source.header_count"] == b"-1"
    many = [(f"h{n}", b"x" * 1000) for n in range(100)]
    _, value, headers = dead_letter_message(letter(b"u1", b"v" * 1_000_000), 1 << 20, many)
    kept = [name for name, _ in headers if name.startswith("original.")]
    assert kept == [f"original.h{n}" for n in range(len(kept))] and 50 < len(kept) < 66
    assert dict(headers)["source.headers_truncated"] == b"true" and dict(headers)["source.header_count"] == b"100"
    assert len(value) + sum(len(n) + len(v or b"") for n, v in headers) < (1 << 20) - (8 << 10)


def test_the_origin_reader_reads_a_records_time_and_headers_back_and_closes_whether_or_not_it_connected(
        kafka_settings):
    OriginReader(kafka_settings.bootstrap_servers, 0).close()  # never connected: nothing to close
    topic = kafka_settings.event_topics["Click"]
    producer = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers)
    sent = producer.send(topic, b"not an event", partition=0, headers=[("traceparent", b"00-ab-cd-01")],
                         timestamp_ms=1_700_000_000_000).get(timeout=30)
    producer.close()
    reader = OriginReader(kafka_settings.bootstrap_servers, 0)
    try:
        origin = reader.origin(topic, 0, sent.offset)
    finally:
        reader.close()
    reader.close()  # twice: a teardown after a failed close
    assert origin.timestamp_ms == 1_700_000_000_000 and origin.headers == [("traceparent", b"00-ab-cd-01")]
