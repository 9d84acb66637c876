"""`valueloop bench ingest`: simulated events into the broker with acks=all, valueloop's producer beside its peers.

Every path carries the same pre-generated events into fresh topics, in one run, with the same number of
worker processes (events split by key, so each key keeps its order). valueloop's producer is
`kafka_io.producer.EventProducer` (librdkafka with idempotence, one delivery callback for the producer). Peers:
kafka-python's own KafkaProducer.send, confluent-kafka's Producer with a callback per message as its
documentation shows it, and Avro encoding alone; the simulator's own
speed and the single-process path from simulator to broker are recorded beside them. The paths take turns:
each round runs every path once, each ratio is taken within a round, and the median of the rounds' ratios is
reported with their range; figures are ratios against the peers, since the machine is shared and absolute
numbers drift. The broker runs on the same two cores as the producers.
"""
from __future__ import annotations

import multiprocessing
import time
from typing import Callable

from infra.kafka import KafkaBroker

from config.kafka import KafkaSettings
from kafka_io.producer import EventProducer
from schemas import EventEncoder
from simulator import Simulation, SimulatorConfig
from simulator.sinks import KafkaSink
from config import Settings

from bench.environment import describe, median_run
from bench.topics import fresh_topics

GOAL_EVENTS_PER_S = 100_000
COMPRESSION = "zstd"

SIMULATOR = "simulator alone (events in memory)"
ENCODING = "Avro single-object encoding alone"
OURS = "valueloop's producer (librdkafka, idempotent)"
KAFKA_PYTHON = "kafka-python, KafkaProducer.send per message"
CONFLUENT = "confluent-kafka Producer, a callback per message"
END_TO_END = "simulate, encode and send in one process (valueloop simulate)"

_events: list = []  # the run's events; worker processes inherit them through fork, nothing is pickled


def _shard(shard: int, shards: int) -> list:
    return [e for e in _events if hash(e.key) % shards == shard] if shards > 1 else _events


def encode_only(_settings, events) -> None:
    encode = EventEncoder().encode
    for event in events:
        encode(event.name, event.datum)


def valueloop_producer(settings: KafkaSettings, events) -> None:
    with EventProducer(settings.bootstrap_servers, compression=COMPRESSION) as producer:
        encode, topics = EventEncoder().encode, settings.event_topics
        for event in events:
            producer.send(topics[event.name], encode(event.name, event.datum), event.key, event.delivery_ms)


def kafka_python_send(settings: KafkaSettings, events) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=50,
                             batch_size=1 << 20, compression_type=COMPRESSION)
    failures: list = []
    encode, topics = EventEncoder().encode, settings.event_topics
    for event in events:
        producer.send(topics[event.name], encode(event.name, event.datum), key=event.key,
                      timestamp_ms=event.delivery_ms).add_errback(failures.append)
    producer.flush()
    producer.close()
    if failures:
        raise RuntimeError(f"kafka-python: {len(failures)} messages failed; first: {failures[0]!r}")


def confluent(settings: KafkaSettings, events) -> None:
    from confluent_kafka import Producer

    client = Producer({"bootstrap.servers": settings.bootstrap_servers, "acks": "all", "linger.ms": 50,
                       "batch.size": 1 << 20, "compression.type": COMPRESSION,
                       "queue.buffering.max.messages": 1_000_000})
    failures: list = []
    encode, topics = EventEncoder().encode, settings.event_topics

    def on_delivery(error, _message):
        if error is not None:
            failures.append(error)

    for i, event in enumerate(events):
        client.produce(topics[event.name], encode(event.name, event.datum), key=event.key,
                       timestamp=event.delivery_ms, on_delivery=on_delivery)
        if i % 10_000 == 0:
            client.poll(0)
    client.flush()
    if failures:
        raise RuntimeError(f"confluent-kafka: {len(failures)} messages failed; first: {failures[0]}")


SENDERS = ((OURS, valueloop_producer), (KAFKA_PYTHON, kafka_python_send), (CONFLUENT, confluent))
PATHS = (SIMULATOR, ENCODING, OURS, KAFKA_PYTHON, CONFLUENT, END_TO_END)


def _worker(path: Callable, settings, shard: int, shards: int, errors) -> None:
    try:
        path(settings, _shard(shard, shards))
    except BaseException as error:  # reported to the parent, which fails the benchmark
        errors.put(f"{path.__name__} worker {shard}: {error!r}")


def _measure(label: str, path: Callable, settings, workers: int) -> dict:
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    start = time.perf_counter()
    processes = [context.Process(target=_worker, args=(path, settings, k, workers, errors)) for k in range(workers)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    seconds = time.perf_counter() - start
    if not errors.empty() or any(p.exitcode for p in processes):
        raise RuntimeError(f"{label}: {errors.get() if not errors.empty() else 'a worker died'}")
    n = len(_events)
    return {"path": label, "workers": workers, "events": n, "seconds": round(seconds, 3),
            "events_per_s": round(n / seconds)}


def _check_stored(settings: KafkaSettings, result: dict) -> None:
    stored = sum(KafkaBroker(settings).topic_message_counts().values())
    result["messages_in_broker"] = stored
    if stored != result["events"]:
        raise RuntimeError(f"{result['path']}: {stored} messages in the broker, {result['events']} sent")


def _timed_simulation(config: SimulatorConfig) -> dict:
    start = time.perf_counter()
    n = sum(1 for _ in Simulation(config).events())
    seconds = time.perf_counter() - start
    return {"path": SIMULATOR, "workers": 1, "events": n, "seconds": round(seconds, 3),
            "events_per_s": round(n / seconds)}


def _end_to_end(settings: Settings, config: SimulatorConfig) -> dict:
    with fresh_topics(settings.kafka, "end_to_end") as topics:
        start = time.perf_counter()
        with KafkaSink(topics) as sink:
            sink.write(Simulation(config).events())
        seconds = time.perf_counter() - start
        n = len(_events)
        result = {"path": END_TO_END, "workers": 1, "events": n, "seconds": round(seconds, 3),
                  "events_per_s": round(n / seconds)}
        _check_stored(topics, result)
        return result


def _round(settings: Settings, config: SimulatorConfig, workers: int) -> dict[str, dict]:
    """One run of every path, one after another: the ratios of one round share the machine's state."""
    runs = {SIMULATOR: _timed_simulation(config),
            ENCODING: _measure(ENCODING, encode_only, None, workers)}
    for label, path in SENDERS:
        with fresh_topics(settings.kafka, path.__name__) as topics:
            runs[label] = _measure(label, path, topics, workers)
            _check_stored(topics, runs[label])
    runs[END_TO_END] = _end_to_end(settings, config)
    return runs


def _ratios(runs: dict[str, dict]) -> dict[str, float]:
    rate = {label: run["events_per_s"] for label, run in runs.items()}
    ours = rate[OURS]
    return {"vs_kafka_python_send_per_message": ours / rate[KAFKA_PYTHON],
            "vs_confluent_kafka_callback_per_message": ours / rate[CONFLUENT],
            "vs_encoding_alone": ours / rate[ENCODING],
            "end_to_end_vs_simulator_alone": rate[END_TO_END] / rate[SIMULATOR]}


def run_ingest_benchmark(settings: Settings, requests: int, workers: int = 2, repeats: int = 5) -> dict:
    """Runs every path once per round, `repeats` rounds; each ratio is taken within a round and its median reported.

    Taking a ratio inside one round pairs the two paths it compares in time, so a slow spell of the shared
    machine slows both; the spread of the rounds' ratios is reported beside the median.
    """
    config: SimulatorConfig = settings.simulator.model_copy(update={"requests": requests})
    _events.clear()
    _events.extend(Simulation(config).events())
    rounds = [_round(settings, config, workers) for _ in range(repeats)]
    results = [median_run([r[label] for r in rounds]) for label in PATHS]
    per_round = [_ratios(r) for r in rounds]
    ratios = {name: sorted(r[name] for r in per_round) for name in per_round[0]}
    ours = median_run([r[OURS] for r in rounds])["events_per_s"]
    return {
        "benchmark": "ingest",
        "environment": describe(("kafka-python", "confluent-kafka", "fastavro")),
        "settings": {"acks": "all", "compression": COMPRESSION, "partitions_per_topic": settings.kafka.partitions,
                     "requests": requests, "workers": workers, "rounds": repeats,
                     "reported": "every path once per round, in turns; the median of the rounds' ratios, "
                                 "with their range; the median run per path"},
        "results": results,
        "summary": {
            "events": len(_events),
            "producer": "kafka_io.producer.EventProducer (librdkafka)",
            "producer_events_per_s": ours,
            **{name: round(values[len(values) // 2], 2) for name, values in ratios.items()},
            "ratio_ranges": {name: [round(values[0], 2), round(values[-1], 2)] for name, values in ratios.items()},
            "goal_events_per_s": GOAL_EVENTS_PER_S,
            "goal_met": ours >= GOAL_EVENTS_PER_S,
        },
        "rates": {r["path"]: r["events_per_s"] for r in results},
    }
