"""The demo: the loop on a small world, as `make demo` runs it.

Starts (or finds) the local Kafka node and simulates traffic into it; joins this run's events into labeled
examples with Beam (FnApiRunner); trains the multi-task value model and the CTR-only baseline on the first days;
re-ranks the later days' requests with each and scores them against the world's hidden truth. Everything it
writes goes under `out/demo/`. Each step tells what it did through `echo`.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Callable

from config import Settings
from config.trainer import preset as choose
from infra.kafka import KafkaBroker
from pipelines.kafka_source import PartitionRange, snapshot_ranges
from pipelines.run import run_bounded_join
from schemas.units import DAY_MS, utc
from serving.log import FeatureStore
from simulator import Simulation
from simulator.run import Destination, simulate
from simulator.sinks import KafkaSink
from simulator.world import World
from trainer.evaluate import evaluate_range
from valueloop import loop

DEMO_DIR = Path("out/demo")


def check_split(days: float, train_days: float, purchase_window_days: float) -> None:
    """Refuses a split of the simulated days that leaves nothing to evaluate."""
    if not 0 < train_days < days - purchase_window_days:
        raise ValueError("--train-days must leave days to evaluate before the last purchase window")


def run_demo(settings: Settings, requests: int, days: float, train_days: float, purchase_window_days: float,
             echo: Callable[[str], None] = print) -> dict:
    """Runs the loop; returns the evaluation report, whose `verdict` says whether the value model escaped the trap."""
    check_split(days, train_days, purchase_window_days)
    broker = KafkaBroker(settings.kafka)
    before = broker.up().topic_messages
    topics = list(settings.kafka.event_topics.values())
    ends_before = {(r.topic, r.partition): r.stop for r in snapshot_ranges(settings.kafka.bootstrap_servers, topics)}
    echo(f"kafka up on {settings.kafka.bootstrap_servers}; simulating {requests:,} requests over {days:g} days ...")
    config = settings.simulator.model_copy(update={"requests": requests, "days": days})
    summary, _truth = simulate(config, Destination.KAFKA, DEMO_DIR, settings.kafka,
                               feature_store=settings.loop.feature_store)
    _echo_traffic(echo, topics, before, broker.status().topic_messages, summary)
    # Only this run's offsets: the topics may hold earlier runs' traffic, of other worlds.
    ranges = [PartitionRange(r.topic, r.partition, max(r.start, ends_before.get((r.topic, r.partition), r.start)),
                             r.stop) for r in snapshot_ranges(settings.kafka.bootstrap_servers, topics)]
    for step in ("examples", "models", "evaluation"):
        shutil.rmtree(DEMO_DIR / step, ignore_errors=True)  # what an earlier demo wrote is not this world's
    examples = _join(settings, ranges, purchase_window_days, echo)
    split_ms = settings.simulator.start_ms + int(train_days * DAY_MS)
    models = [_train(settings, preset, examples, split_ms, echo) for preset in ("value", "ctr")]
    echo(f"\nre-ranking the requests from {_hour_text(split_ms)} on with each model, scored by the hidden truth:\n")

    return evaluate_range(models, examples, split_ms, None, World.load(DEMO_DIR / "ground_truth.npz"), 3,
                          models[1].name, 0.25)


def _echo_traffic(echo, topics: list[str], before: dict, after: dict, summary) -> None:
    echo(f"\n{'topic':<28}{'this run':>12}{'in topic':>12}")
    for topic in topics:
        echo(f"{topic:<28}{after.get(topic, 0) - before.get(topic, 0):>12,}{after.get(topic, 0):>12,}")
    echo(f"{'all event topics':<28}{sum(after.get(t, 0) - before.get(t, 0) for t in topics):>12,}")
    echo("\nthe world's rates (hidden truth; bait items are written as clickbait):")
    echo(f"{'items':<10}{'impressions':>13}{'CTR':>9}{'carts/click':>13}{'buys/click':>12}{'mean dwell':>12}")
    for label, tally in (("bait", summary.bait), ("non-bait", summary.non_bait)):
        r = tally.rates()
        echo(f"{label:<10}{r['impressions']:>13,}{r['ctr']:>9.3f}{r['carts_per_click']:>13.3f}"
             f"{r['purchases_per_click']:>12.3f}{r['mean_dwell_s']:>11.1f}s")
    echo(f"\nlate deliveries {sum(summary.late.values()):,}, duplicates {sum(summary.duplicates.values()):,}, "
         f"conversions still to come after the simulated horizon {sum(summary.beyond_horizon.values()):,}")


def _join(settings: Settings, ranges, purchase_window_days: float, echo) -> Path:
    labels = settings.join.labels.model_copy(update={"purchase_window_s": purchase_window_days * 86_400})
    join_settings = settings.join.model_copy(update={"output_dir": DEMO_DIR / "examples", "labels": labels})
    echo(f"\njoining this run's {sum(r.stop - r.start for r in ranges):,} events into labeled examples with Beam "
         "(FnApiRunner) ...")
    result = run_bounded_join(settings.kafka, join_settings, runner="direct", ranges=ranges)
    counters = Counter(result.counters)
    dead = sum(n for name, n in counters.items()
               if name.startswith("dead_letters.") and name not in ("dead_letters.written", "dead_letters.already_written"))
    echo(f"{len(result.manifests)} settled hours, {counters['join.examples']:,} examples in "
         f"{join_settings.output_dir}; repeated deliveries dropped {counters['join.duplicate_deliveries']:,}, "
         f"late {counters['join.late_events']:,}, dead letters {dead:,}")
    return Path(join_settings.output_dir)


def _train(settings: Settings, preset: str, examples: Path, split_ms: int, echo) -> Path:
    from trainer.train import train as run_training

    out = DEMO_DIR / "models" / preset
    echo(f"training the {preset} model on the hours before {_hour_text(split_ms)} ...")
    with contextlib.redirect_stdout(sys.stderr):
        metadata = run_training(choose(settings.trainer, preset), examples, None, split_ms, out, verbose=0)
    echo(f"  {metadata['data']['examples']:,} examples, {metadata['training']['seconds']:.0f} s: {out}")
    return out


def _hour_text(ms: int) -> str:
    return utc(ms).strftime("%Y-%m-%d %H:%M UTC")


LOOP_DIR = DEMO_DIR / "loop"


def loop_settings(settings: Settings, directory: Path = LOOP_DIR) -> Settings:
    """A loop's settings with its own examples, registry, work and alerts under `directory` (the demo's:
    out/demo/loop); purchases attributed within 6 hours, so that a simulated day settles soon after it ends."""
    labels = settings.join.labels.model_copy(update={"purchase_window_s": 6 * 3600})
    return settings.model_copy(update={
        "join": settings.join.model_copy(update={"output_dir": directory / "examples", "labels": labels,
                                                 "allowed_lateness_s": 3600}),
        "registry": settings.registry.model_copy(update={"directory": directory / "registry"}),
        "loop": settings.loop.model_copy(update={"work_dir": directory / "work", "train_days": 1,
                                                 "alerts_file": directory / "alerts.json"}),
        "trainer": settings.trainer.model_copy(update={"batch_size": 2048}),
    })


def run_loop(settings: Settings, requests_per_day: int,
             echo: Callable[[str], None] = print) -> dict[str, loop.Audited]:
    """The loop as the retraining DAG runs it, on a world of its own: two days served by the logging policy and
    two by one that shows more bait, through Kafka and the join; then the DAG's tasks for the second day (the
    first model: promoted) and for the third (the clickbait signature: production kept, on-call alerted).
    Returns each day's outcome."""
    shutil.rmtree(LOOP_DIR, ignore_errors=True)
    settings = loop_settings(settings)
    topics = list(settings.kafka.event_topics.values())
    ends_before = {(r.topic, r.partition): r.stop for r in snapshot_ranges(settings.kafka.bootstrap_servers, topics)}
    first = settings.simulator.model_copy(update={"requests": 2 * requests_per_day, "days": 2.0})
    bait = first.model_copy(update={"start": first.start + dt.timedelta(days=2), "seed": first.seed + 1,
                                    "logging_policy": first.logging_policy.model_copy(update={"headline_weight": 6.0})})
    world = World.create(first)
    echo(f"\nthe loop, as the retraining DAG runs it: {2 * requests_per_day:,} requests over two days, then "
         f"{2 * requests_per_day:,} over two days from a policy that shows more bait ...")
    with KafkaSink(settings.kafka) as sink:
        for config in (first, bait):
            simulation = Simulation(config, world=world)
            FeatureStore(settings.loop.feature_store).put(simulation.feature_tables)
            sink.write(simulation.traffic())
    ranges = [PartitionRange(r.topic, r.partition, max(r.start, ends_before.get((r.topic, r.partition), r.start)),
                             r.stop) for r in snapshot_ranges(settings.kafka.bootstrap_servers, topics)]
    result = run_bounded_join(settings.kafka, settings.join, runner="direct", ranges=ranges,
                              from_ms=first.start_ms, to_ms=first.start_ms + 3 * DAY_MS)
    echo(f"joined: {len(result.manifests)} hours in {settings.join.output_dir}")
    outcomes = {}
    for offset, what in ((1, "a day like the one before"), (2, "the first day of the bait-loving policy")):
        day = (first.start + dt.timedelta(days=offset)).strftime("%Y-%m-%d")
        echo(f"\nretraining for {day} ({what}):")
        checked = loop.check_manifests(settings, settings.loop, day)
        echo(f"  check_manifests: {checked.hours} hours, {checked.examples:,} examples")
        with contextlib.redirect_stdout(sys.stderr):
            model = loop.train_candidate(settings, settings.loop, day)
        echo(f"  train: {model}")
        version = loop.register_candidate(settings, day, model)
        echo(f"  register: {settings.registry.model_name} version {version}")
        audited = loop.audit_candidate(settings, settings.loop, day, version)
        echo(f"  audit: {audited.status} against production "
             f"{'(none yet)' if audited.production is None else 'v' + str(audited.production)}")
        for reason in audited.reasons[:3]:
            echo(f"    {reason}")
        if audited.promotable:
            entry = loop.promote_candidate(settings, day, audited)
            echo(f"  promote: production is version {entry['to']}")
        else:
            held = loop.hold_candidate(settings, day, audited)
            alerted = held.alerted or (loop.send_digest(settings, day) if held.digest else [])
            told = "the day's digest" if held.digest else "alert"
            echo(f"  hold: production stays {'unset' if held.production is None else 'v' + str(held.production)};"
                 f" {told} sent to {', '.join(alerted) or 'no sink'} (open alerts: {loop.alert_book(settings)})")
        echo(f"  report: {audited.report}")
        outcomes[day] = audited
    return outcomes
