"""An Airflow home with a migrated metadata database (SQLite, for `dag.test`), and a loop's worth of data: three
simulated days through the real broker and the bounded join, the third served by a policy that shows more bait."""
import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from schemas.units import DAY_MS, HOUR_MS
from valueloop.scheduling.dag_test import environment, migrate, run

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> tuple[Path, dict]:
    home = tmp_path_factory.mktemp("airflow")
    env = environment(home)
    migrate(env)
    return home, env


def _malformed_serving_records(kafka, at_ms: int) -> None:
    """A message that is not single-object Avro and a ServedRequest whose slate shows one candidate twice, into
    the serving log topic in their place in time."""
    from confluent_kafka import Producer

    from schemas import EventEncoder

    unweighable = EventEncoder().encode("ServedRequest", {
        "request_id": "req-unweighable", "user_id": "u0000001", "surface": "home_feed", "event_time_ms": at_ms,
        "policy": "logging", "candidates": ["i000001", "i000002"], "shown": [0, 0], "propensities": [0.5, 0.5],
        "feature_snapshot": "any"})
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for value in (b"\xc3\x01not a served request", unweighable):
        producer.produce(kafka.serving_log_topic, value, key=b"u0000001", timestamp=at_ms)
    assert producer.flush(30) == 0


@pytest.fixture(scope="session")
def loop_data(kafka_broker, tmp_path_factory) -> dict:
    """Settings file and days: day 0 and day 1 served by the logging policy, day 2 by one that shows more bait;
    all of it through the broker and the bounded join, with the serving log beside it on its topic (two records
    in day 1's hour 05 that are no served request)."""
    from pipelines.run import run_bounded_join
    from serving.log import FeatureStore
    from simulator import Simulation, SimulatorConfig, World
    from simulator.sinks import KafkaSink
    from tests.conftest import _own_topics

    from config import Settings

    root = tmp_path_factory.mktemp("loop")
    kafka = _own_topics(kafka_broker).model_copy(update={"run_dir": root / "run" / "kafka"})
    base = {"requests": 16_000, "days": 2.0, "seed": 5, "catalogue": {"users": 2_500, "items": 350}}
    world = World.create(SimulatorConfig.model_validate(base))
    first = SimulatorConfig.model_validate(base)
    bait = SimulatorConfig.model_validate({**base, "requests": 14_000, "days": 2.0, "seed": 6,
                                           "logging_policy": {"headline_weight": 6.0}})
    bait = bait.model_copy(update={"start": first.start + dt.timedelta(days=2)})
    bad_at = first.start_ms + DAY_MS + 5 * HOUR_MS + 60_000  # day 1, 05:01: two records no ServedRequest reads as one
    with KafkaSink(kafka) as sink:
        for config in (first, bait):
            simulation = Simulation(config, world=world)
            FeatureStore(root / "features").put(simulation.feature_tables)
            traffic = list(simulation.traffic())
            sink.write(e for e in traffic if e.delivery_ms < bad_at)
            if config is first:
                _malformed_serving_records(kafka, bad_at)
            sink.write(e for e in traffic if e.delivery_ms >= bad_at)
    settings = Settings.model_validate({
        "kafka": kafka.model_dump(mode="json"),
        "join": {"output_dir": str(root / "examples"), "serving_log_dir": str(root / "serving_log"),
                 "allowed_lateness_s": 3600,
                 "labels": {"click_window_s": 1800, "cart_window_s": 3600, "purchase_window_s": 6 * 3600}},
        "trainer": {"batch_size": 1024, "epochs": 2, "learning_rate": 0.01, "shuffle_buffer": 20_000},
        "registry": {"directory": str(root / "registry")},
        "loop": {"work_dir": str(root / "work"), "train_days": 1, "feature_store": str(root / "features")},
        "audit": {"gate_bootstrap_draws": 40},
    })
    path = root / "settings.yaml"
    path.write_text(yaml.safe_dump(json.loads(settings.model_dump_json())))
    days = [(first.start + dt.timedelta(days=d)).strftime("%Y-%m-%d") for d in range(3)]
    run_bounded_join(settings.kafka, settings.join, from_ms=first.start_ms, to_ms=first.start_ms + 3 * DAY_MS)
    return {"config": path, "settings": settings, "days": days, "root": root}


def own_config(loop_data: dict, directory: Path, **sections) -> Path:
    """The loop's settings file with a serving log directory, work directory and registry of its own under
    `directory` (and the `sections` changed), for a test whose runs must not meet another test's."""
    settings = yaml.safe_load(loop_data["config"].read_text())
    settings["join"]["serving_log_dir"] = str(directory / "serving_log")
    settings["loop"]["work_dir"] = str(directory / "work")
    settings["registry"]["directory"] = str(directory / "registry")
    for section, values in sections.items():
        settings[section].update(values)
    path = directory / "settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def run_dag(env: dict, dag_id: str, conf: dict, extra_env: dict | None = None) -> dict:
    """`dag.test()` of one DAG in its own process; what happened, as `valueloop.scheduling.dag_test` reports it."""
    return run({**env, **(extra_env or {})}, dag_id, conf)
