"""A bulk producer on kafka-python: one record batch per partition, many batches per request, acks=all.

KafkaProducer.send costs tens of microseconds of Python per message (futures, accumulator, locks), which caps a
core near 15,000 messages/s. Bulk loads (the simulator, replays) need more: this producer appends each
message to its partition's record batch (Kafka's v2 format, built here with the minimum of Python per record)
and sends full batches in ProduceRequests through kafka-python's network client, keeping one request in
flight while it builds the next.

Partitioning is kafka-python's (and Java's) default: murmur2 of the key, so keyed messages land where any
other producer would put them, and one key's messages keep their order. It does not retry: a request that
fails raises DeliveryError, and what was acknowledged before stays acknowledged (at-least-once on rerun).
"""
from __future__ import annotations

import struct

from kafka import codec as kafka_codec
from kafka import errors as kafka_errors
from kafka.net.compat import KafkaNetClient
from kafka.partitioner.default import murmur2
from kafka.protocol.producer import ProduceRequest
from kafka.record.util import calc_crc32c

from infra.kafka.metadata import TopicMetadataError, partition_leaders
from schemas.compiled import _LAST
from schemas.compiled import write_long as zigzag_varint

_CODECS = {None: 0, "none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
_ACKS = {"all": -1, "-1": -1, "1": 1, "0": 0}


_COMPRESSORS = {1: kafka_codec.gzip_encode, 2: kafka_codec.snappy_encode, 3: kafka_codec.lz4_encode,
                4: kafka_codec.zstd_encode}
# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta, baseTimestamp,
# maxTimestamp, producerId, producerEpoch, baseSequence, recordCount
_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC_FROM = 21  # the CRC covers everything after itself


class RecordBatch:
    """One partition's records in Kafka's v2 record-batch format, offsets counted from 0 (the broker assigns)."""

    __slots__ = ("records", "size", "count", "first_timestamp", "max_timestamp")

    def __init__(self):
        self.records: list[bytes] = []
        self.size = 0
        self.count = 0
        self.first_timestamp = 0
        self.max_timestamp = 0

    def append(self, timestamp_ms: int, key: bytes, value: bytes) -> None:
        count = self.count
        if count == 0:
            self.first_timestamp = self.max_timestamp = timestamp_ms
        elif timestamp_ms > self.max_timestamp:
            self.max_timestamp = timestamp_ms
        # attributes, timestamp delta, offset delta, key, value, no headers; small varints straight from the table
        body = b"".join((b"\x00", zigzag_varint(timestamp_ms - self.first_timestamp),
                         _LAST[count << 1] if count < 8192 else zigzag_varint(count),
                         zigzag_varint(len(key)), key, zigzag_varint(len(value)), value, b"\x00"))
        size = zigzag_varint(len(body))
        self.records += (size, body)
        self.size += len(size) + len(body)
        self.count = count + 1

    def build(self, codec: int) -> bytes:
        payload = b"".join(self.records)
        if codec:
            payload = _COMPRESSORS[codec](payload)
        header = _BATCH_HEADER.pack(0, _BATCH_HEADER.size - 12 + len(payload), -1, 2, 0, codec, self.count - 1,
                                    self.first_timestamp, self.max_timestamp, -1, -1, -1, self.count)
        batch = bytearray(header + payload)
        struct.pack_into(">I", batch, 17, calc_crc32c(memoryview(batch)[_CRC_FROM:]))
        return bytes(batch)


class DeliveryError(RuntimeError):
    """The broker did not acknowledge a batch; the message names topic, partition and the broker's error."""


class BatchProducer:
    def __init__(self, bootstrap_servers: str, acks: str = "all", compression_type: str | None = "zstd",
                 batch_bytes: int = 1 << 20, request_bytes: int = 4 << 20, timeout_ms: int = 30_000,
                 client_id: str = "valueloop-batch-producer"):
        if compression_type not in _CODECS:
            raise ValueError(f"compression_type is one of {sorted(k for k in _CODECS if k)}, not {compression_type!r}")
        self._acks = _ACKS[str(acks)]
        self._codec = _CODECS[compression_type]
        self._batch_bytes = batch_bytes
        self._request_bytes = request_bytes
        self._timeout_ms = timeout_ms
        self._client = KafkaNetClient(bootstrap_servers=bootstrap_servers, client_id=client_id,
                                      request_timeout_ms=timeout_ms)
        self._client.check_version()
        self._leaders: dict[str, list[int]] = {}  # topic -> leader node id by partition
        self._partition_of: dict[tuple[str, bytes], int] = {}
        self._open: dict[tuple[str, int], RecordBatch] = {}
        self._full: dict[int, list[tuple[str, int, bytes]]] = {}  # leader -> finished batches
        self._full_bytes: dict[int, int] = {}
        self._in_flight: list[tuple[object, dict]] = []
        self.sent = 0

    def send(self, topic: str, value: bytes, key: bytes, timestamp_ms: int) -> None:
        partition = self._partition_of.get((topic, key))
        if partition is None:
            partition = self._partition(topic, key)
        slot = (topic, partition)
        batch = self._open.get(slot)
        if batch is None:
            batch = self._open[slot] = RecordBatch()
        batch.append(timestamp_ms, key, value)
        self.sent += 1
        if batch.size >= self._batch_bytes:
            self._finish(slot)

    def flush(self) -> None:
        """Sends everything appended so far and waits until the broker has acknowledged all of it."""
        for slot in list(self._open):
            self._finish(slot)
        for leader in list(self._full):
            self._send_request(leader)
        while self._in_flight:
            self._await_oldest()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._client.close()

    def __enter__(self) -> BatchProducer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------

    def _partition(self, topic: str, key: bytes | None) -> int:
        leaders = self._leaders.get(topic) or self._load_metadata(topic)
        if key is None:
            raise ValueError("BatchProducer needs a key on every message: keys decide partitions and order")
        partition = (murmur2(key) & 0x7FFFFFFF) % len(leaders)
        self._partition_of[(topic, key)] = partition
        return partition

    def _load_metadata(self, topic: str) -> list[int]:
        try:
            self._leaders[topic] = partition_leaders(self._client, topic, self._timeout_ms)
        except TopicMetadataError as error:
            raise DeliveryError(f"{error}: create it first (valueloop kafka up)") from None
        return self._leaders[topic]

    def _finish(self, slot: tuple[str, int]) -> None:
        batch = self._open.pop(slot, None)
        if batch is None or batch.count == 0:
            return
        records = batch.build(self._codec)
        leader = self._leaders[slot[0]][slot[1]]
        self._full.setdefault(leader, []).append((slot[0], slot[1], records))
        self._full_bytes[leader] = self._full_bytes.get(leader, 0) + len(records)
        if self._full_bytes[leader] >= self._request_bytes:
            self._send_request(leader)

    def _send_request(self, leader: int) -> None:
        batches = self._full.pop(leader, [])
        self._full_bytes.pop(leader, None)
        if not batches:
            return
        while self._in_flight:  # one request in flight: the next is built while the broker writes this one
            self._await_oldest()
        Topic = ProduceRequest.TopicProduceData
        Partition = Topic.PartitionProduceData
        by_topic: dict[str, list] = {}
        # A partition may hold several finished batches; Kafka takes one batch per partition per request.
        later: list[tuple[str, int, bytes]] = []
        seen: set[tuple[str, int]] = set()
        for topic, partition, records in batches:
            if (topic, partition) in seen:
                later.append((topic, partition, records))
                continue
            seen.add((topic, partition))
            by_topic.setdefault(topic, []).append(Partition(index=partition, records=records))
        request = ProduceRequest(transactional_id=None, acks=self._acks, timeout_ms=self._timeout_ms,
                                 topic_data=[Topic(name=t, partition_data=p) for t, p in by_topic.items()],
                                 max_version=9)
        if not self._client.await_ready(leader, timeout_ms=self._timeout_ms):
            raise DeliveryError(f"broker {leader} is not reachable")
        future = self._client.send(leader, request)
        self._in_flight.append((future, {slot: True for slot in seen}))
        self._client.poll(timeout_ms=0)
        if later:
            self._full[leader] = later
            self._full_bytes[leader] = sum(len(r) for _, _, r in later)
            self._send_request(leader)

    def _await_oldest(self) -> None:
        future, _ = self._in_flight.pop(0)
        self._client.poll(timeout_ms=self._timeout_ms, future=future)
        if not future.is_done:
            raise DeliveryError(f"no acknowledgement within {self._timeout_ms} ms")
        if future.failed():
            raise DeliveryError(f"produce request failed: {future.exception!r}")
        for topic in future.value.responses:
            for part in topic.partition_responses:
                if part.error_code:
                    error = kafka_errors.for_code(part.error_code)
                    raise DeliveryError(f"{topic.name}[{part.index}]: {error.__name__}: {part.error_message or ''}")
