"""Dead letters to their topic, through librdkafka: once per origin, whatever their size, never stopping the job.

Each message that could not become an event is written to the dead-letter topic with its original key and value,
and headers that say where it came from and why (`dead_letter_message`). Its identity is its origin, the source
topic, partition and offset (header `dead_letter.id`): a job reads the identities the topic already holds for the
offsets it is about to read (`already_written`) and skips those letters, so running the same join again over the
same offsets does not grow the topic. Two joins over the same offsets at the same moment can still both write a
letter; the scheduler runs one at a time.

A value too large for the topic (its max.message.bytes, read from the broker) keeps its first 64 KiB, marked
truncated, with its size and SHA-256: a message that the broker keeps whole on an event topic would otherwise be
a poison pill, failing every run over its offset. A record with neither key nor value is a letter like any other.

A letter keeps its original record's headers (a trace id, say), each under `original.` beside valueloop's own, and
its original record time. The join's hot path carries neither (valueloop's events have no headers, and a replay's
records are restamped with event time), so the writer reads them back from the letter's origin
(`OriginReader`), a fetch per batch of origins: letters are few.
"""
from __future__ import annotations

import hashlib
import logging
import time
from typing import Iterable, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from confluent_kafka import KafkaError as ProducerError
from confluent_kafka import KafkaException, Producer
from kafka import TopicPartition
from kafka.errors import KafkaError

from kafka_io.fetcher import CorruptBatchError, FetchError, PartitionFetcher
from kafka_io.metadata import TopicMetadataError, topic_configs
from pipelines.kafka_source import kafka_consumer
from pipelines.records import DeadLetter

_LOG = logging.getLogger("valueloop.join")
PREFIX_BYTES = 64 << 10  # what a truncated value, or key, keeps; what the original headers may take
HEADROOM_BYTES = 16 << 10  # the batch framing and the headers beside key and value
DETAIL_BYTES = 4096
ID_HEADER = "dead_letter.id"
ORIGINAL_PREFIX = "original."  # before each of the original record's headers: valueloop's own never start so


class DeadLetterError(RuntimeError):
    """The dead-letter topic cannot take the job's letters: the message names the topic, the count and the cause."""


def dead_letter_id(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


def _fit(data: bytes | None, budget: int) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    if data is None or len(data) <= budget:
        return data, []
    return data[:PREFIX_BYTES], [("truncated", b"true"), ("sha256", hashlib.sha256(data).hexdigest().encode())]


def dead_letter_message(letter: DeadLetter, max_bytes: int, original_headers: list | None = None
                        ) -> tuple[bytes | None, bytes | None, list]:
    """The (key, value, headers) written for `letter` to a topic that takes messages of up to `max_bytes`.

    The origin (`source.*`), the reason and its detail, the identity and the original sizes (-1 for null) are
    always there. Key and value go whole when they fit; otherwise the value, and a key over 64 KiB, keep their
    first 64 KiB, with `value.truncated` (`key.truncated`) and the SHA-256 of the whole. The original record's
    headers (None: they could not be read back) follow under `original.`, in order, as many as fit in 64 KiB;
    `source.header_count` says how many it had (-1: unread), `source.headers_truncated` that some are left out.
    """
    headers = [("source.topic", letter.topic.encode()), ("source.partition", str(letter.partition).encode()),
               ("source.offset", str(letter.offset).encode()), ("source.timestamp", str(letter.timestamp_ms).encode()),
               ("reason", letter.reason.encode()), ("detail", letter.detail.encode()[:DETAIL_BYTES]),
               (ID_HEADER, dead_letter_id(letter.topic, letter.partition, letter.offset).encode()),
               ("key.size", str(-1 if letter.key is None else len(letter.key)).encode()),
               ("value.size", str(-1 if letter.value is None else len(letter.value)).encode()),
               ("source.header_count", str(-1 if original_headers is None else len(original_headers)).encode())]
    kept, kept_bytes = [], 0
    for name, header in original_headers or ():
        size = len(ORIGINAL_PREFIX) + len(name.encode()) + len(header or b"")
        if kept_bytes + size > PREFIX_BYTES:
            headers.append(("source.headers_truncated", b"true"))
            break
        kept.append((ORIGINAL_PREFIX + name, header))
        kept_bytes += size
    key, key_marks = _fit(letter.key, PREFIX_BYTES)
    value, value_marks = _fit(letter.value, max_bytes - HEADROOM_BYTES - len(key or b"") - kept_bytes)
    headers += [(f"key.{name}", mark) for name, mark in key_marks]
    headers += [(f"value.{name}", mark) for name, mark in value_marks]
    return key, value, headers + kept


class Origin(NamedTuple):
    timestamp_ms: int  # the record's own timestamp, as the broker keeps it
    headers: list  # (key, value) pairs


class OriginReader:
    """Reads back the timestamp and headers of the records that letters come from, one fetch per batch: the
    records of the last fetch of each partition are kept until a letter asks for an offset they lack. It
    connects when the first letter asks, so a job with no letters never needs it."""

    def __init__(self, bootstrap_servers: str, max_batch_bytes: int):
        self._bootstrap = bootstrap_servers
        self._max_batch_bytes = max_batch_bytes
        self._fetcher: PartitionFetcher | None = None
        self._read: dict[tuple[str, int], dict[int, Origin]] = {}

    def origin(self, topic: str, partition: int, offset: int) -> Origin | None:
        """The record's Origin; None when the broker no longer holds it (retention, compaction)."""
        read = self._read.get((topic, partition), {})
        if offset not in read:
            if self._fetcher is None:
                self._fetcher = PartitionFetcher(self._bootstrap, client_id="valueloop-dead-letters",
                                                 max_batch_bytes=self._max_batch_bytes)
            fetched = self._fetcher.fetch(topic, partition, offset, headers=True)
            read = self._read[(topic, partition)] = {r[0]: Origin(r[1], r[4]) for r in fetched.records}
        return read.get(offset)

    def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()
            self._fetcher = None


def topic_limit(bootstrap_servers: str, topic: str, timeout_s: float = 10.0) -> int:
    """The dead-letter topic's max.message.bytes on the broker; DeadLetterError when the topic is missing."""
    try:
        return topic_configs(bootstrap_servers, [topic], timeout_s)[topic].max_message_bytes
    except TopicMetadataError:
        raise DeadLetterError(f"the dead-letter topic {topic} does not exist on {bootstrap_servers}: "
                              "`valueloop kafka topics` creates it with its limits") from None


def already_written(bootstrap_servers: str, topic: str, origins: Iterable[tuple[str, int, int, int]],
                    timeout_s: float = 60.0) -> frozenset[str]:
    """The identities of the letters the dead-letter topic holds whose origins lie in the (topic, partition,
    start, stop) ranges: what a run over those ranges must not write again. Reads the whole topic, which holds
    only what could not be read."""
    wanted: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for source_topic, partition, start, stop in origins:
        wanted.setdefault((source_topic, partition), []).append((start, stop))
    consumer = kafka_consumer(bootstrap_servers)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = {tp: end for tp, end in consumer.end_offsets(partitions).items() if end > 0}
        if not ends:
            return frozenset()
        consumer.assign(list(ends))
        consumer.seek_to_beginning(*ends)
        found: set[str] = set()
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise DeadLetterError(f"reading the dead-letter topic {topic} took over {timeout_s:.0f}s")
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    identity = dict(record.headers or ()).get(ID_HEADER)
                    if identity is None:
                        continue
                    source_topic, partition, offset = identity.decode().rsplit("/", 2)
                    if any(start <= int(offset) < stop for start, stop in wanted.get((source_topic, int(partition)), ())):
                        found.add(identity.decode())
        return frozenset(found)
    finally:
        consumer.close()


class _SendDeadLetters(beam.DoFn):
    def __init__(self, bootstrap_servers: str, topic: str, max_bytes: int, skip: frozenset[str],
                 max_batch_bytes: int):
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._max_bytes = max_bytes
        self._skip = skip
        self._max_batch_bytes = max_batch_bytes
        self._producer = None
        self._origins = None

    def setup(self):
        self._producer = Producer({
            "bootstrap.servers": self._bootstrap, "client.id": "valueloop-dead-letters", "acks": "all",
            "enable.idempotence": True, "compression.type": "zstd", "linger.ms": 20,
            "message.max.bytes": self._max_bytes, "message.timeout.ms": 60_000,
            "log_level": 4})  # warnings and worse: not the idle connections the broker closes
        self._origins = OriginReader(self._bootstrap, self._max_batch_bytes)
        self._unread = Metrics.counter("dead_letters", "origin_unread")
        self._written = Metrics.counter("dead_letters", "written")
        self._skipped = Metrics.counter("dead_letters", "already_written")
        self._failures: list = []

    def _delivered(self, error, message):
        if error is not None:
            self._failures.append(error)

    def process(self, letter: DeadLetter):
        if dead_letter_id(letter.topic, letter.partition, letter.offset) in self._skip:
            self._skipped.inc()
            return
        try:
            origin = self._origins.origin(letter.topic, letter.partition, letter.offset)
        except (FetchError, CorruptBatchError, KafkaError) as error:  # the letter goes without them, counted
            _LOG.warning("the origin of the dead letter %s cannot be read back: %s",
                         dead_letter_id(letter.topic, letter.partition, letter.offset), error)
            origin = None
        if origin is None:
            self._unread.inc()
        else:
            letter = letter._replace(timestamp_ms=origin.timestamp_ms)
        key, value, headers = dead_letter_message(letter, self._max_bytes, origin and origin.headers)
        while True:
            try:
                self._producer.produce(self._topic, value=value, key=key, headers=headers, on_delivery=self._delivered)
                break
            except BufferError:  # librdkafka's queue is full: let it deliver some
                self._producer.poll(0.1)
            except KafkaException as error:
                raise DeadLetterError(f"the dead-letter producer refused a letter from {letter.topic}"
                                      f"[{letter.partition}]@{letter.offset}: {error}") from None
        self._written.inc()
        self._producer.poll(0)

    def finish_bundle(self):
        left = self._producer.flush(90)
        if self._failures or left:
            failures, self._failures = self._failures, []
            raise DeadLetterError(_describe_failures(self._topic, self._bootstrap, failures, left))

    def teardown(self):
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None  # librdkafka's client goes with its last reference
        if self._origins is not None:
            self._origins.close()


def _describe_failures(topic: str, bootstrap: str, failures: list, left: int) -> str:
    if left and not failures:
        return f"{left} dead letters for {topic} were still unsent after 90s: is the broker at {bootstrap} up?"
    first = failures[0]
    unreachable = first.code() in (ProducerError._MSG_TIMED_OUT, ProducerError._TRANSPORT, ProducerError._ALL_BROKERS_DOWN)
    cause = f"the broker at {bootstrap} did not take them ({first.str()})" if unreachable else \
        f"the topic refused them: {first.name()}: {first.str()}"
    return f"{len(failures)} dead letters could not be written to {topic}: {cause}"


class WriteDeadLetters(beam.PTransform):
    """Each dead letter to the dead-letter topic (`dead_letter_message`) with its origin's record time and
    headers, except those in `skip`, identities of letters the topic already holds (`already_written`).
    `max_batch_bytes` is the largest batch the origins' topics may hold (`kafka_source.largest_batch_bytes`)."""

    def __init__(self, bootstrap_servers: str, topic: str, max_bytes: int, skip: frozenset[str] = frozenset(),
                 max_batch_bytes: int = 0):
        super().__init__()
        self._fn = _SendDeadLetters(bootstrap_servers, topic, max_bytes, skip, max_batch_bytes)

    def expand(self, letters):
        return letters | "Send to the dead-letter topic" >> beam.ParDo(self._fn)
