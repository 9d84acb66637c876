"""Fresh topics for one benchmark run, so that no run reads another's events."""
from __future__ import annotations

import uuid

from infra.kafka import KafkaBroker

from config.kafka import KafkaSettings


def fresh_topics(settings: KafkaSettings, label: str) -> KafkaSettings:
    """The settings with every topic renamed under `bench.<label>.<random>`; the topics are created."""
    prefix = f"bench.{label}.{uuid.uuid4().hex[:6]}"
    fresh = settings.model_copy(update={
        "event_topics": {name: f"{prefix}.{name.lower()}" for name in settings.event_topics},
        "dead_letter_topic": f"{prefix}.dead_letter",
        "serving_log_topic": f"{prefix}.serving_log",
    })
    KafkaBroker(fresh).create_topics()
    return fresh
