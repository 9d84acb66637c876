"""Messages into Kafka through librdkafka (confluent-kafka): acks=all, idempotence on, zstd, every delivery checked.

librdkafka is the field's producer: batching and compression in C, retries that keep order and never duplicate
(the idempotent producer's sequence numbers), and a leader that moves or a broker that restarts taken in its
stride. Partitioning is Kafka's Java client's (murmur2 of the key), so keyed messages land where any other
producer would put them and one key's messages keep their order.
"""
from __future__ import annotations

from collections import Counter

from confluent_kafka import KafkaError, KafkaException, Producer



class DeliveryError(RuntimeError):
    """Messages the broker did not take: the message names each topic with its count and the first cause."""


class EventProducer:
    """Sends keyed messages with their timestamps; `flush` waits for every delivery report and raises
    DeliveryError for any message that failed."""

    def __init__(self, bootstrap_servers: str, client_id: str = "valueloop", compression: str = "zstd",
                 delivery_timeout_ms: int = 120_000, **config):
        self._failures: Counter = Counter()
        self._first_failure: dict[str, str] = {}
        self._producer = Producer({
            "bootstrap.servers": bootstrap_servers, "client.id": client_id, "acks": "all",
            "enable.idempotence": True, "compression.type": compression, "linger.ms": 50,
            "batch.size": 1 << 20, "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1 << 20, "partitioner": "murmur2_random",
            "message.timeout.ms": delivery_timeout_ms, "log_level": 3,
            "on_delivery": self._delivered, **config})
        self._unpolled = 0

    def _delivered(self, error, message) -> None:
        if error is not None:
            topic = message.topic()
            self._failures[topic] += 1
            self._first_failure.setdefault(topic, _cause(error))

    def send(self, topic: str, value: bytes | None, key: bytes | None, timestamp_ms: int | None = None) -> None:
        produce = self._producer.produce
        while True:
            try:
                if timestamp_ms is None:
                    produce(topic, value, key)
                else:
                    produce(topic, value, key, timestamp=timestamp_ms)
                break
            except BufferError:  # the local queue is full: let librdkafka deliver some
                self._producer.poll(0.05)
            except KafkaException as error:
                raise DeliveryError(f"{topic}: {error.args[0].str()}") from None
        self._unpolled += 1
        if self._unpolled >= 10_000:  # delivery reports are served by poll
            self._producer.poll(0)
            self._unpolled = 0

    def flush(self, timeout_s: float | None = None) -> None:
        """Waits until every message sent is delivered or has failed; raises DeliveryError if any failed."""
        left = self._producer.flush(-1 if timeout_s is None else timeout_s)
        if left:
            raise DeliveryError(f"{left} messages still undelivered after {timeout_s:.0f}s")
        if self._failures:
            failures, self._failures = self._failures, Counter()
            causes, self._first_failure = self._first_failure, {}
            raise DeliveryError("; ".join(f"{count} messages to {topic} failed ({causes[topic]})"
                                          for topic, count in sorted(failures.items())))

    def close(self) -> None:
        """Flushes, then lets librdkafka's client go (it closes its connections when its last reference does)."""
        try:
            self.flush()
        finally:
            self._producer = _Closed()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self._producer.flush(10)  # what can still go, without hiding the error that stopped the sender


def _cause(error) -> str:
    said = f"{error.name()}: {error.str()}"
    if error.code() in (KafkaError._MSG_TIMED_OUT, KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART):
        return f"{said}; is the broker up, and does the topic exist? `valueloop kafka topics` creates valueloop's"
    return said


class _Closed:
    """What a closed producer holds: flushing it again has nothing to wait for; sending is an error."""

    def flush(self, _timeout=None) -> int:
        return 0

    def poll(self, _timeout=None) -> int:
        return 0

    def produce(self, *_args, **_kwargs):
        raise DeliveryError("the producer is closed")


__all__ = ["DeliveryError", "EventProducer"]
