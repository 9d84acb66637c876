"""A bulk reader on kafka-python: FetchRequests through its network client, record batches parsed here.

kafka-python's consumer turns every message into a ConsumerRecord through several layers, about 21 µs a
message on this machine, which caps a core below 50,000 messages/s. Bulk reads of offset ranges (the bounded
join, replays) need more: this reader fetches a partition's record batches and parses Kafka's v2 format, the
records themselves in C (`_records.c`), checking every batch's CRC-32C, skipping control batches (transaction
markers) and decompressing with kafka-python's codecs. It reads committed data only, as Kafka's consumers do
with isolation.level=read_committed: aborted transactions are left out, open ones not yet reached.

A broker answers a fetch with at least one whole record batch, however large, so the reader must take frames as
large as the largest batch its topics may hold (their max.message.bytes, `metadata.topic_configs`): anything
smaller turns one large batch into a poison pill that no rerun gets past. A batch larger still is a
BatchTooLargeError naming where it is and how large.
"""
from __future__ import annotations

import re
import struct
import time
from typing import NamedTuple

from crc32c import crc32c
from kafka import codec as kafka_codec
from kafka import errors as kafka_errors
from kafka.net.compat import KafkaNetClient
from kafka.protocol.consumer.fetch import FetchRequest

from kafka_io._records import RecordFormatError, append_records
from kafka_io.metadata import partition_leaders
from schemas.units import seconds

_DECOMPRESSORS = {1: kafka_codec.gzip_decode, 2: kafka_codec.snappy_decode, 3: kafka_codec.lz4_decode,
                  4: kafka_codec.zstd_decode}
# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta, baseTimestamp,
# maxTimestamp, producerId, producerEpoch, baseSequence, recordCount
_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC_FROM = 21  # the CRC covers everything after itself
_OFFSET_AND_LENGTH = struct.Struct(">qi")
_CONTROL = 0x20
_TRANSACTIONAL = 0x10
_LOG_APPEND_TIME = 0x08
# Errors after which the leader may have moved or come back: look it up again and retry.
_RETRIABLE = (kafka_errors.NotLeaderForPartitionError, kafka_errors.LeaderNotAvailableError,
              kafka_errors.UnknownTopicOrPartitionError, kafka_errors.FencedLeaderEpochError,
              kafka_errors.KafkaConnectionError, kafka_errors.NodeNotReadyError, kafka_errors.KafkaTimeoutError,
              kafka_errors.RequestTimedOutError)


class CorruptBatchError(ValueError):
    """A fetched record batch fails its checksum or its framing; the message names where."""


class FetchError(RuntimeError):
    """The broker refused a fetch for a reason retrying does not mend (an offset out of range, say)."""


class BatchTooLargeError(FetchError):
    """The broker answered a fetch with a record batch larger than the reader was set to take."""

    def __init__(self, topic: str, partition: int, offset: int, response_bytes: int, limit_bytes: int):
        self.topic, self.partition, self.offset = topic, partition, offset
        self.response_bytes, self.limit_bytes = response_bytes, limit_bytes
        super().__init__(f"{topic}[{partition}]@{offset}: the broker answered with a record batch of about "
                         f"{response_bytes} bytes, more than the {limit_bytes} bytes this reader takes")


# What a fetch response holds beside its record batches: headers, the topic's name, aborted transactions.
FRAME_MARGIN_BYTES = 1 << 20
_FRAME_LENGTH = re.compile(r"frame length: (\d+)")


def parse_record_batches(data: bytes, first_offset: int = 0, where: str = "") -> list[tuple]:
    """The records of the v2 record batches in `data` (a fetch response's records) at `first_offset` or later,
    as plain (offset, timestamp_ms, key, value) tuples: a NamedTuple per record would cost a third more.

    A batch cut off at the end of `data` (fetches end where the size limit falls) is left for the next fetch.
    """
    return read_record_batches(data, first_offset, where)[0]


def read_record_batches(data: bytes, first_offset: int = 0, where: str = "",
                        aborted: list[tuple[int, int]] = (), headers: bool = False) -> tuple[list[tuple], int]:
    """`parse_record_batches`, and the offset after the last whole batch in `data` (`first_offset` if none):
    where the next fetch starts. It counts control batches too (a transaction's commit or abort marker), which
    take an offset and hold no record.

    `aborted` is a read_committed fetch's aborted transactions, (producer id, first offset) pairs: their records
    are left out, as Kafka's own consumer leaves them out. A producer's transaction counts as aborted from its
    first offset until that producer's abort marker. With `headers`, each record has a fifth item: its headers,
    a list of (key, value) pairs.
    """
    out: list[tuple] = []
    view = memoryview(data)
    at, next_offset = 0, first_offset
    pending = sorted(aborted, key=lambda a: a[1], reverse=True)  # popped from the end, lowest first offset first
    aborting: set[int] = set()
    while at + _BATCH_HEADER.size <= len(data):
        base_offset, length = _OFFSET_AND_LENGTH.unpack_from(data, at)
        end = at + 12 + length
        if end > len(data):
            break
        (_, _, _, magic, crc, attributes, last_offset_delta, base_ts, max_ts, producer_id, _, _, count) = \
            _BATCH_HEADER.unpack_from(data, at)
        if magic != 2:
            raise CorruptBatchError(f"{where}batch at offset {base_offset} has message format {magic}, not 2")
        if crc32c(view[at + _CRC_FROM:end]) != crc:
            raise CorruptBatchError(f"{where}batch at offset {base_offset} fails its CRC-32C check")
        skip = False
        if pending or aborting:
            while pending and pending[-1][1] <= base_offset + last_offset_delta:
                aborting.add(pending.pop()[0])
            if attributes & _CONTROL and producer_id in aborting:
                try:
                    abort = _is_abort_marker(view[at + _BATCH_HEADER.size:end])
                except RecordFormatError:
                    raise CorruptBatchError(f"{where}control batch at offset {base_offset} holds no readable "
                                            "marker") from None
                if abort:
                    aborting.discard(producer_id)
            skip = bool(attributes & _TRANSACTIONAL) and producer_id in aborting
        if not attributes & _CONTROL and not skip:
            payload = view[at + _BATCH_HEADER.size:end]
            codec = attributes & 0x07
            if codec:
                payload = _DECOMPRESSORS[codec](bytes(payload))
            fixed_ts = max_ts if attributes & _LOG_APPEND_TIME else None
            try:
                append_records(payload, count, base_offset, base_ts, fixed_ts, first_offset, out, headers)
            except RecordFormatError as error:
                raise CorruptBatchError(f"{where}batch at offset {base_offset}: {error}") from None
        next_offset = max(next_offset, base_offset + last_offset_delta + 1)
        at = end
    return out, next_offset


def _is_abort_marker(payload) -> bool:
    """Whether a control batch's one record is an abort marker: its key is (version int16, type int16), type 0."""
    record: list = []
    append_records(payload, 1, 0, 0, None, 0, record)
    key = record[0][2]
    return key is not None and len(key) >= 4 and struct.unpack_from(">h", key, 2)[0] == 0


class Fetched(NamedTuple):
    records: list[tuple]  # (offset, timestamp_ms, key, value), and headers when asked for
    high_watermark: int  # the end a read_committed reader sees: the last stable offset
    next_offset: int  # where to fetch next: after the last batch read, its records or a transaction marker


class PartitionFetcher:
    """Reads partitions from given offsets in bulk; one network client, leaders looked up as needed.

    `max_bytes` is what one fetch asks for; `max_batch_bytes` the largest record batch it takes (a broker sends a
    batch whole even past `max_bytes`): the largest max.message.bytes of the topics read.
    """

    def __init__(self, bootstrap_servers: str, client_id: str = "valueloop-fetcher", max_bytes: int = 8 << 20,
                 max_wait_ms: int = 200, timeout_ms: int = 30_000, max_batch_bytes: int = 0):
        self._frame_limit = max(max_bytes, max_batch_bytes) + FRAME_MARGIN_BYTES
        self._client = KafkaNetClient(bootstrap_servers=bootstrap_servers, client_id=client_id,
                                      request_timeout_ms=timeout_ms, receive_message_max_bytes=self._frame_limit)
        self._client.check_version()
        self._max_bytes = max_bytes
        self._max_wait_ms = max_wait_ms
        self._timeout_ms = timeout_ms
        self._leaders: dict[str, list[int]] = {}

    def fetch(self, topic: str, partition: int, offset: int, headers: bool = False) -> Fetched:
        """Records of `topic`[`partition`] from `offset` on, up to the size limit; none when it has no more yet.
        With `headers`, each record's headers too (`read_record_batches`).

        Retries a moved or restarting leader until the timeout; raises BatchTooLargeError for a batch past
        `max_batch_bytes` and FetchError for anything else.
        """
        deadline = time.monotonic() + seconds(self._timeout_ms)
        while True:
            try:
                return self._fetch_once(topic, partition, offset, headers)
            except kafka_errors.InvalidReceiveError as error:
                found = _FRAME_LENGTH.search(str(error))
                size = int(found.group(1)) if found else -1
                raise BatchTooLargeError(topic, partition, offset, size, self._frame_limit - FRAME_MARGIN_BYTES) \
                    from None
            except _RETRIABLE as error:
                if time.monotonic() > deadline:
                    raise FetchError(f"{topic}[{partition}]@{offset}: {type(error).__name__} for "
                                     f"{seconds(self._timeout_ms):.0f}s: {error}") from error
                self._leaders.pop(topic, None)
                time.sleep(0.2)

    def _fetch_once(self, topic: str, partition: int, offset: int, headers: bool) -> Fetched:
        leaders = self._leaders.get(topic)
        if leaders is None:
            leaders = self._leaders[topic] = partition_leaders(self._client, topic, self._timeout_ms)
        Topic = FetchRequest.FetchTopic
        request = FetchRequest(
            replica_id=-1, max_wait_ms=self._max_wait_ms, min_bytes=1, max_bytes=self._max_bytes, isolation_level=1,
            session_id=0, session_epoch=-1, forgotten_topics_data=[], rack_id="", max_version=12,
            topics=[Topic(topic=topic, partitions=[Topic.FetchPartition(
                partition=partition, fetch_offset=offset, partition_max_bytes=self._max_bytes,
                current_leader_epoch=-1, log_start_offset=-1)])])
        response = self._client.send_and_receive(leaders[partition], request, timeout_ms=self._timeout_ms)
        if response.error_code:
            raise kafka_errors.for_code(response.error_code)(f"fetch of {topic}[{partition}]")
        (answer,) = [p for t in response.responses for p in t.partitions]
        if answer.error_code:
            error = kafka_errors.for_code(answer.error_code)
            if issubclass(error, _RETRIABLE):
                raise error(f"{topic}[{partition}]")
            raise FetchError(f"{topic}[{partition}]@{offset}: {error.__name__}")
        aborted = [(a.producer_id, a.first_offset) for a in answer.aborted_transactions or ()]
        records, next_offset = read_record_batches(answer.records or b"", offset, f"{topic}[{partition}]: ", aborted,
                                                   headers)
        # Read committed: the log as a reader sees it ends at the last stable offset, before any open transaction.
        end = answer.last_stable_offset if answer.last_stable_offset >= 0 else answer.high_watermark
        return Fetched(records, end, next_offset)

    def close(self) -> None:
        self._client.close()
