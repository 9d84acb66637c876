"""Where simulated events go: the Kafka topics (through librdkafka, acks=all, idempotent, zstd) or Avro container
files."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

from fastavro.write import Writer

from config.kafka import KafkaSettings
from kafka_io.producer import EventProducer
from schemas import EventEncoder, default_registry
from simulator.traffic import SimEvent


class KafkaSink:
    """Sends each event to its topic (a served request to the serving log's), keyed by user id, with the delivery
    time as the record timestamp."""

    def __init__(self, settings: KafkaSettings, encoder: EventEncoder | None = None, **producer_options):
        self.settings = settings
        self._encoder = encoder or EventEncoder()
        self._producer = EventProducer(settings.bootstrap_servers, client_id="valueloop-simulator", **producer_options)

    def write(self, events: Iterable[SimEvent]) -> Counter:
        topics = {**self.settings.event_topics, "ServedRequest": self.settings.serving_log_topic}
        encode, send = self._encoder.encode, self._producer.send
        sent: Counter = Counter()
        for event in events:
            send(topics[event.name], encode(event.name, event.datum), event.key, event.delivery_ms)
            sent[event.name] += 1
        self._producer.flush()
        return sent

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
