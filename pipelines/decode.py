"""Messages to events: decode single-object Avro, validate, attach event time; route the rest to dead letters."""
from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from pipelines.records import DeadLetter, DecodedEvent, KafkaRecord
from schemas import BadEventError, EventDecoder

EVENTS = "events"
DEAD_LETTERS = "dead_letters"


class DecodedStreams(NamedTuple):
    events: beam.PCollection  # DecodedEvent, timestamped with its event time
    dead_letters: beam.PCollection  # DeadLetter


class _Decode(beam.DoFn):
    def __init__(self, topic_records: dict[str, str]):
        self._topic_records = topic_records  # topic -> the record name it carries
        self._decoders: dict[str, EventDecoder] = {}
        self._counters: dict[str, object] = {}

    def setup(self):
        self._decoders = {topic: EventDecoder(expected={name}) for topic, name in self._topic_records.items()}
        self._unknown_topic = EventDecoder(expected=set())
        self._decoded = Metrics.counter("decode", "events")

    def _count(self, reason: str) -> None:
        if reason not in self._counters:
            self._counters[reason] = Metrics.counter("dead_letters", reason)
        self._counters[reason].inc()

    def process(self, record: KafkaRecord):
        decoder = self._decoders.get(record.topic, self._unknown_topic)
        try:
            event = decoder.decode(record.value, record.topic, record.partition, record.offset, record.timestamp_ms)
        except BadEventError as error:
            self._count(error.reason.value)
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(
                record.topic, record.partition, record.offset, record.timestamp_ms, record.key, record.value,
                error.reason.value, error.detail))
            return
        self._decoded.inc()
        yield TimestampedValue(DecodedEvent(event.name, event.datum, record.timestamp_ms),
                               event.datum["event_time_ms"] / 1000.0)


class DecodeEvents(beam.PTransform):
    """KafkaRecords to DecodedEvents stamped with event time; undecodable or invalid messages to dead letters."""

    def __init__(self, event_topics: dict[str, str]):
        super().__init__()
        self._topic_records = {topic: name for name, topic in event_topics.items()}

    def expand(self, records):
        outputs = records | "Decode, validate, attach event time" >> beam.ParDo(
            _Decode(self._topic_records)).with_output_types(DecodedEvent).with_outputs(DEAD_LETTERS, main=EVENTS)
        return DecodedStreams(outputs[EVENTS], outputs[DEAD_LETTERS])


class _SendDeadLetters(beam.DoFn):
    def __init__(self, bootstrap_servers: str, topic: str):
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._producer = None

    def setup(self):
        from kafka import KafkaProducer

        self._producer = KafkaProducer(bootstrap_servers=self._bootstrap, acks="all", client_id="valueloop-dead-letters")

    def process(self, letter: DeadLetter):
        headers = [("source.topic", letter.topic.encode()), ("source.partition", str(letter.partition).encode()),
                   ("source.offset", str(letter.offset).encode()), ("reason", letter.reason.encode()),
                   ("detail", letter.detail.encode()[:4096])]
        self._producer.send(self._topic, value=letter.value, key=letter.key, headers=headers,
                            timestamp_ms=letter.timestamp_ms or None)

    def finish_bundle(self):
        self._producer.flush()

    def teardown(self):
        if self._producer is not None:
            self._producer.close()


class WriteDeadLetters(beam.PTransform):
    """Each dead letter to the dead-letter topic: the original key and bytes, the origin and reason in headers."""

    def __init__(self, bootstrap_servers: str, topic: str):
        super().__init__()
        self._bootstrap = bootstrap_servers
        self._topic = topic

    def expand(self, letters):
        return letters | "Send to the dead-letter topic" >> beam.ParDo(_SendDeadLetters(self._bootstrap, self._topic))
