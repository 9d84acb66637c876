"""Fresh topics for one benchmark run, so that no run reads another's events."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from infra.kafka import KafkaBroker

from config.kafka import KafkaSettings


@contextmanager
def fresh_topics(settings: KafkaSettings, label: str) -> Iterator[KafkaSettings]:
    """The settings with every topic renamed under `bench.<label>.<random>`: the topics are created, and deleted
    when the block ends, so that runs do not pile up partitions that slow every later start of the broker."""
    prefix = f"bench.{label}.{uuid.uuid4().hex[:6]}"
    fresh = settings.model_copy(update={
        "event_topics": {name: f"{prefix}.{name.lower()}" for name in settings.event_topics},
        "dead_letter_topic": f"{prefix}.dead_letter",
        "serving_log_topic": f"{prefix}.serving_log",
    })
    broker = KafkaBroker(fresh)
    broker.create_topics()
    try:
        yield fresh
    finally:
        broker.delete_topics()
