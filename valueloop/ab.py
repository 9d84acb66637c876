"""A split test on the simulated world, through Kafka and the join, and its analysis from the logged examples.

`run_split_test` serves a pre-period day with the logging policy (every user), then the test days with users
split between two policies by a seeded hash (`serving.policies.SplitPolicy`); every event goes through the
topics and the bounded join, so the analysis reads the same labeled examples training reads, with each
impression's `policy` naming its arm. `analyse_logs` turns them into `ab.analysis.analyse`'s inputs.
"""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Callable

from ab.analysis import analyse, load_impressions
from config import Settings
from pipelines.kafka_source import PartitionRange, snapshot_ranges
from pipelines.run import run_bounded_join
from serving.policies import SplitPolicy
from serving.log import FeatureStore
from simulator import Simulation
from simulator.sinks import KafkaSink
from simulator.world import World
from valueloop.closed_loop import drain_s
from valueloop.demo import loop_settings
from valueloop.policies import policy_from


def run_split_test(settings: Settings, out: Path, control: str, treatment: str, requests_per_day: int,
                   days: int, treatment_share: float = 0.5, seed: int = 7,
                   echo: Callable[[str], None] = print) -> dict:
    """Serves a pre-period day and `days` test days into Kafka, joins them under `out/examples`; returns the
    event-time windows of the pre-period and the test, and the arms' policy names."""
    names = {"control": f"control:{Path(control).name}", "treatment": f"treatment:{Path(treatment).name}"}
    split = SplitPolicy([policy_from(settings, control, names["control"]),  # from the settings' own registry
                         policy_from(settings, treatment, names["treatment"])],
                        [1 - treatment_share, treatment_share], seed=seed)
    shutil.rmtree(out, ignore_errors=True)
    settings = loop_settings(settings, Path(out))
    base = settings.simulator.model_copy(update={"seed": seed})
    world = World.create(base)
    topics = list(settings.kafka.event_topics.values())
    before = {(r.topic, r.partition): r.stop for r in snapshot_ranges(settings.kafka.bootstrap_servers, topics)}
    pre = base.model_copy(update={"days": 1.0, "requests": requests_per_day, "drain_s": drain_s(settings)})
    test = base.model_copy(update={"start": base.start + dt.timedelta(days=1), "days": float(days),
                                   "requests": requests_per_day * days, "seed": seed + 1,
                                   "drain_s": drain_s(settings)})
    echo(f"serving a pre-period day ({requests_per_day:,} requests) with the logging policy, then {days} test "
         f"day(s) split {1 - treatment_share:.0%}/{treatment_share:.0%} by user: {control} | {treatment}")
    with KafkaSink(settings.kafka) as sink:
        for simulation in (Simulation(pre, world=world), Simulation(test, world=world, policy=split)):
            FeatureStore(settings.loop.feature_store).put(simulation.feature_tables)
            sink.write(simulation.traffic())
    ranges = [PartitionRange(r.topic, r.partition, before.get((r.topic, r.partition), r.start), r.stop)
              for r in snapshot_ranges(settings.kafka.bootstrap_servers, topics)]
    result = run_bounded_join(settings.kafka, settings.join, runner="direct", ranges=ranges, from_ms=pre.start_ms,
                              to_ms=test.end_ms)
    echo(f"joined {len(result.manifests)} hours into {settings.join.output_dir}")
    return {"examples": str(settings.join.output_dir), "pre_period": [pre.start_ms, pre.end_ms],
            "test": [test.start_ms, test.end_ms], **names, "treatment_share": treatment_share}


def analyse_logs(examples: Path, test: tuple[int, int], control: str, treatment: str,
                 pre_period: tuple[int, int] | None = None, treatment_share: float = 0.5):
    """The A/B analysis (`ab.analysis.analyse`) of the test window's logged impressions, CUPED on the pre-period's."""
    impressions = load_impressions(examples, *test)
    pre = load_impressions(examples, *pre_period) if pre_period is not None else None
    return analyse(impressions, control, treatment, pre, {control: 1 - treatment_share, treatment: treatment_share})
