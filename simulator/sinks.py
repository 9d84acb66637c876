"""Where simulated events go: the Kafka topics (through kafka-python) or Avro container files."""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Iterable

from fastavro.write import Writer

from infra.kafka import KafkaSettings
from schemas import EventEncoder, default_registry
from simulator.traffic import SimEvent


class DeliveryError(RuntimeError):
    """Some messages were not acknowledged by the broker."""


@dataclasses.dataclass(frozen=True)
class ProducerSettings:
    """kafka-python producer settings for the event topics: durable (acks=all), batched and compressed."""

    acks: str = "all"
    linger_ms: int = 50
    batch_size: int = 1 << 20
    compression_type: str = "zstd"
    max_request_size: int = 8 << 20

    def kafka_python(self, bootstrap_servers: str) -> dict:
        return dict(bootstrap_servers=bootstrap_servers, acks=self.acks, linger_ms=self.linger_ms,
                    batch_size=self.batch_size, compression_type=self.compression_type,
                    max_request_size=self.max_request_size, client_id="valueloop-simulator")


class KafkaSink:
    """Sends each event to its topic, keyed by user id, with the delivery time as the record timestamp."""

    def __init__(self, settings: KafkaSettings, producer: ProducerSettings = ProducerSettings(),
                 encoder: EventEncoder | None = None):
        from kafka import KafkaProducer

        self.settings = settings
        self._encoder = encoder or EventEncoder()
        self._producer = KafkaProducer(**producer.kafka_python(settings.bootstrap_servers))
        self._failures: list[Exception] = []

    def write(self, events: Iterable[SimEvent]) -> Counter:
        topics = self.settings.event_topics
        encode, send = self._encoder.encode, self._producer.send
        record_failure = self._failures.append
        sent: Counter = Counter()
        for event in events:
            future = send(topics[event.name], value=encode(event.name, event.datum), key=event.key,
                          timestamp_ms=event.delivery_ms)
            future.add_errback(record_failure)
            sent[event.name] += 1
        self.flush()
        return sent

    def flush(self) -> None:
        self._producer.flush()
        if self._failures:
            raise DeliveryError(f"{len(self._failures)} messages were not acknowledged; first: {self._failures[0]!r}")

    def close(self) -> None:
        self._producer.close()

    def __enter__(self) -> KafkaSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _file_stem(name: str) -> str:
    return default_registry().latest(name).path.name.split(".")[0]


class AvroFileSink:
    """Writes one Avro container file per event type under `directory`, in delivery order."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files: dict = {}
        self._writers: dict[str, Writer] = {}

    def path(self, name: str) -> Path:
        return self.directory / f"{_file_stem(name)}.avro"

    def write(self, events: Iterable[SimEvent]) -> Counter:
        written: Counter = Counter()
        for event in events:
            writer = self._writers.get(event.name)
            if writer is None:
                self._files[event.name] = open(self.path(event.name), "wb")
                schema = default_registry().latest(event.name).parsed
                writer = self._writers[event.name] = Writer(self._files[event.name], schema, codec="deflate")
            writer.write(event.datum)
            written[event.name] += 1
        return written

    def close(self) -> None:
        for name, writer in self._writers.items():
            writer.flush()
            self._files[name].close()
        self._writers.clear()

    def __enter__(self) -> AvroFileSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
