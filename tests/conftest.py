"""Shared fixtures: one real Kafka node for the session, fresh topics per test; an HTTP server on 127.0.0.1 that
receives alerts; two labeled days whose second shows the clickbait signature."""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before anything imports TensorFlow

import datetime as dt
import json
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from infra.kafka import KafkaBroker

from config.kafka import KafkaSettings


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held together while chosen, so no two are the same)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory) -> KafkaBroker:
    """A real single-node Kafka cluster on free loopback ports, for the whole test session."""
    port, controller_port = free_ports(2)
    settings = KafkaSettings(port=port, controller_port=controller_port, run_dir=tmp_path_factory.mktemp("kafka"),
                             partitions=3, heap_mb=512)
    broker = KafkaBroker(settings)
    broker.up()
    yield broker
    broker.down()


def _own_topics(kafka_broker) -> KafkaSettings:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    settings = kafka_broker.settings.model_copy(update={
        "event_topics": {name: f"{prefix}.{topic.split('.', 1)[1]}" for name, topic in kafka_broker.settings.event_topics.items()},
        "dead_letter_topic": f"{prefix}.dead_letter",
        "serving_log_topic": f"{prefix}.serving_log",
    })
    KafkaBroker(settings).create_topics()
    return settings


def small_loop_settings(kafka_broker, root: Path, **audit) -> Path:
    """A settings file for a small, fast closed loop on topics of its own: a world of 3,000 users and 400 items,
    two epochs, a light bootstrap, an empty registry under `root`; `audit` overrides audit settings."""
    path = root / "settings.yaml"
    path.write_text(yaml.safe_dump({
        "kafka": json.loads(_own_topics(kafka_broker).model_dump_json()),
        "simulator": {"catalogue": {"users": 3_000, "items": 400}},
        "trainer": {"epochs": 2, "learning_rate": 0.01, "shuffle_buffer": 20_000},
        "audit": {"gate_bootstrap_draws": 40, **audit},
        "registry": {"directory": str(root / "registry")},
    }))
    return path


@pytest.fixture
def kafka_settings(kafka_broker) -> KafkaSettings:
    """Settings naming topics of this test's own, created on the session's broker."""
    return _own_topics(kafka_broker)


@pytest.fixture(scope="module")
def kafka_settings_module(kafka_broker) -> KafkaSettings:
    """Topics of the test module's own, for module-scoped fixtures."""
    return _own_topics(kafka_broker)


def read_topic(settings: KafkaSettings, topic: str, deadline_s: float = 120.0) -> dict[int, list]:
    """Every message in `topic`, by partition, as kafka-python's consumer reads it: up to each partition's end
    offset as the broker reports it now, so that a slow fetch cannot end the read early."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        by_partition: dict[int, list] = {tp.partition: [] for tp in partitions}
        give_up = time.monotonic() + deadline_s
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < give_up, \
                f"{topic}: read {sum(map(len, by_partition.values()))} of {sum(ends.values())} messages in {deadline_s:.0f}s"
            for tp, batch in consumer.poll(timeout_ms=1_000).items():
                by_partition[tp.partition].extend(batch)
        return by_partition
    finally:
        consumer.close()


def read_dead_letters(settings: KafkaSettings) -> list:
    """Every message in the settings' dead-letter topic."""
    return [m for messages in read_topic(settings, settings.dead_letter_topic).values() for m in messages]


@pytest.fixture(scope="session")
def clickbait_days(tmp_path_factory):
    """Partitions of two simulated days: the first served by the logging policy, the second by one that shows
    more bait. Returns the directory and the two days' event-time ranges."""
    from pipelines.label_files import label_events, write_examples
    from simulator import Simulation, SimulatorConfig
    from tests.audit.test_audit_scenarios import BASE, DAY_MS, LABELS, WORLD

    examples = tmp_path_factory.mktemp("clickbait_days")
    for day, changes in ((0, {}), (1, {"logging_policy": {"headline_weight": 6.0}})):
        config = SimulatorConfig.model_validate({**BASE, "seed": 1 + 2 * day, **changes})
        config = config.model_copy(update={"start": config.start + dt.timedelta(days=day)})
        events = [(e.name, e.datum) for e in Simulation(config, world=WORLD).events()]
        write_examples(label_events(events, LABELS, watermark_ms=config.end_ms + 10 * DAY_MS), examples,
                       {"day": day})
    start = SimulatorConfig.model_validate(BASE).start_ms
    return examples, (start, start + DAY_MS), (start + DAY_MS, start + 2 * DAY_MS)


class Receiver:
    """An HTTP server on a free loopback port that keeps every JSON body posted to it, by path; a path listed in
    `failing` answers 500 that many times before it takes a post."""

    def __init__(self):
        self.received: list[tuple[str, dict]] = []
        self.failing: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.failing.get(self.path, 0) > 0:
                    receiver.failing[self.path] -= 1
                    receiver.received.append((f"refused {self.path}", body))
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"down for maintenance")
                    return
                receiver.received.append((self.path, body))
                self.send_response(202 if self.path == "/v2/enqueue" else 200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self, path: str) -> list[dict]:
        return [body for where, body in self.received if where == path]


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.server.shutdown()
    server.server.server_close()
