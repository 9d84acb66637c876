"""One simulation into a sink: the world's events to the Kafka topics or to Avro files, its truth to a file."""
from __future__ import annotations

import enum
import sys
from pathlib import Path

from tqdm import tqdm

from config.kafka import KafkaSettings
from config.simulator import SimulatorConfig
from simulator.sinks import AvroFileSink, KafkaSink
from simulator.traffic import Simulation, SimulationSummary


class Destination(str, enum.Enum):
    KAFKA = "kafka"
    FILES = "files"


def simulate(config: SimulatorConfig, to: Destination, out: Path, kafka: KafkaSettings,
             policy=None) -> tuple[SimulationSummary, Path]:
    """Writes the simulation's events to `to` (the topics of `kafka`, or Avro files under `out`) and its hidden
    truth to `out/ground_truth.npz`, for evaluation only; returns the traffic summary and where the truth is.
    `policy` (`serving.policies`) ranks the requests; the world's logging policy by default."""
    simulation = Simulation(config, policy=policy)
    truth = simulation.world.save(Path(out) / "ground_truth.npz")
    sink = KafkaSink(kafka) if to is Destination.KAFKA else AvroFileSink(Path(out))
    events = tqdm(simulation.events(), desc=f"simulating to {to.value}", unit=" events", mininterval=1.0,
                  disable=not sys.stderr.isatty())
    with sink:
        sink.write(events)
    return simulation.summary, truth
