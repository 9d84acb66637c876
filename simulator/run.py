"""One simulation into a sink: the world's events to the Kafka topics or to Avro files, its truth to a file."""
from __future__ import annotations

import enum
import sys
from pathlib import Path

from tqdm import tqdm

from config.kafka import KafkaSettings
from config.simulator import SimulatorConfig
from serving.log import FeatureStore
from simulator.sinks import AvroFileSink, KafkaSink
from simulator.traffic import Simulation, SimulationSummary


class Destination(str, enum.Enum):
    KAFKA = "kafka"
    FILES = "files"


def simulate(config: SimulatorConfig, to: Destination, out: Path, kafka: KafkaSettings,
             policy=None, feature_store: Path | None = None) -> tuple[SimulationSummary, Path]:
    """Writes the simulation's events to `to` (the topics of `kafka`, or Avro files under `out`) and its hidden
    truth to `out/ground_truth.npz`, for evaluation only; returns the traffic summary and where the truth is.
    `policy` (`serving.policies`) ranks the requests; the world's logging policy by default. To Kafka the serving
    log goes too, and the feature tables its requests name to `feature_store` (`serving.log.FeatureStore`; by
    default `out/features`)."""
    simulation = Simulation(config, policy=policy)
    truth = simulation.world.save(Path(out) / "ground_truth.npz")
    if to is Destination.KAFKA:  # with the serving log, whose requests name the feature tables
        FeatureStore(feature_store or Path(out) / "features").put(simulation.feature_tables)
    sink = KafkaSink(kafka) if to is Destination.KAFKA else AvroFileSink(Path(out))
    events = tqdm(simulation.traffic() if to is Destination.KAFKA else simulation.events(), desc=f"simulating to {to.value}", unit=" events", mininterval=1.0,
                  disable=not sys.stderr.isatty())
    with sink:
        sink.write(events)
    return simulation.summary, truth
