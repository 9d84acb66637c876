"""The loop run as a loop: round after round, the simulated world is served by whatever production holds, and
its traffic becomes the next candidate's training data.

Round r serves simulated day r with the registry's production model (the world's click-trained logging policy
until a first model is promoted), sampling each slate with exploration and logging propensities. Its events go
through Kafka and the bounded join, which also settles the last hours of day r-1 (their conversion windows
end in day r). Then the retraining DAG's tasks run for day r-1, now complete: check the manifests, train a
candidate on day r-2 (the day before the one it is audited on, as the DAG trains), register it, audit it on day
r-1 against production, and promote it or hold it and alert. Round r+1 serves with what that left in
production: as in production, a model serves two days after the traffic it learned from.

Each round's truth comes from the simulator (`simulator.served.ServedLog`): CTR, purchases per 1000
impressions, bait share, mean true utility, regret against the oracle slate and homogenisation, beside what the
gate decided and where the round's seconds went.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import enum
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import matplotlib
import numpy as np
import matplotlib.pyplot as plt

from config import Settings
from infra.kafka import KafkaBroker
from pipelines.kafka_source import PartitionRange, snapshot_ranges
from pipelines.partitions import MANIFEST_FILE
from pipelines.run import run_bounded_join
from promotion.registry import Registry
from schemas.units import DAY_MS, HOUR_MS, seconds, utc
from simulator import Simulation
from simulator.served import ServedLog
from serving.log import FeatureStore, ServingLog, candidate_scores
from serving.propensities import Sampling
from serving.policies import LoggingPolicy
from simulator.sinks import KafkaSink
from simulator.truth import health, logging_marginals, ranker_marginals, served_truth
from simulator.world import World
from trainer.exported import Predictor
from valueloop import canary as canaries
from valueloop import loop
from valueloop.demo import loop_settings
from valueloop.loop import labeling_lag_ms
from valueloop.policies import LOGGING, policy_from


class GateMode(str, enum.Enum):
    """`enforce`: a candidate the audit does not pass stays out of production, as the DAG runs it. `record`:
    the verdict is recorded on the version but the candidate is promoted all the same (a logged override): the
    loop as it runs when nobody heeds the audit, to see what the gate is there to stop."""

    ENFORCE = "enforce"
    RECORD = "record"


class Objective(str, enum.Enum):
    """What the retrained ranker optimises and serves by: `value` (the multi-task expected value) or `ctr`
    (p(click), the baseline that falls into the trap)."""

    VALUE = "value"
    CTR = "ctr"

    @property
    def output(self) -> str:
        return "value" if self is Objective.VALUE else "click"


def round_settings(settings: Settings, directory: Path, objective: Objective) -> Settings:
    """The loop's settings with its examples, registry, work and alerts under `directory`, trained by
    `objective`; purchases attributed within 6 hours, so a simulated day settles soon after it ends. How
    production samples its slates is `loop.serving_*`."""
    settings = loop_settings(settings, directory)
    return settings.model_copy(update={"loop": settings.loop.model_copy(update={"preset": objective.value})})


def drain_s(settings: Settings) -> float:
    """How long after a simulated day its conversions keep arriving: long enough for the join's watermark to
    settle every hour of the day."""
    return seconds(labeling_lag_ms(settings)) + settings.join.out_of_orderness_s + seconds(HOUR_MS)


def serving_policy(settings: Settings, objective: Objective):
    """The policy production serves with: the registry's production model ranked by the objective's output,
    sampled as `loop.serving_exploration` says, or the world's logging policy before any model is promoted.
    Returns it with the production version (None for the logging policy)."""
    version = Registry(settings.registry).production()
    return policy_from(settings, LOGGING if version is None else "production", output=objective.output), version


def truth_of(settings: Settings, world: World, log: ServingLog, candidate: Path | Predictor,
             production: Path | Predictor | None) -> dict:
    """What the candidate, and production (None: the world's logging policy), would truly earn serving the
    audited day's logged requests, and whether the candidate is healthy or harmful (`simulator.truth`): the
    yardstick the gate's decision is scored against."""
    serving, slots = settings.loop, settings.audit.offpolicy_slots

    def of_model(model: Path | Predictor) -> np.ndarray:
        return ranker_marginals(candidate_scores(log, model), slots, Sampling.of(serving))

    if production is None:
        logging = LoggingPolicy(settings.simulator.logging_policy, list(settings.simulator.surfaces))
        baseline = logging_marginals(logging, log, slots)
    else:
        baseline = of_model(production)
    return truth_of_marginals(world, log, of_model(candidate), baseline)


def truth_of_marginals(world: World, log: ServingLog, candidate: np.ndarray, production: np.ndarray) -> dict:
    """`truth_of` from how each would fill the top slots, P(candidate at slot) (requests, candidates, slots)."""
    truth_of_candidate, baseline = served_truth(world, log, candidate), served_truth(world, log, production)
    return {"candidate": truth_of_candidate.as_dict(), "production": baseline.as_dict(),
            "health": health(truth_of_candidate, baseline).value}


def unsettled_from(settings: Settings, start_ms: int) -> int:
    """The first hour of the day starting at `start_ms` that has no complete partition yet (the day's end when
    every hour has one)."""
    examples = Path(settings.join.output_dir)
    for hour_ms in range(start_ms, start_ms + DAY_MS, HOUR_MS):
        stamp = utc(hour_ms)
        if not (examples / stamp.strftime("dt=%Y-%m-%d/hour=%H") / MANIFEST_FILE).exists():
            return hour_ms
    return start_ms + DAY_MS


def run_round(settings: Settings, world, day_index: int, requests: int, objective: Objective, seed: int,
              gate: GateMode = GateMode.ENFORCE, previous_ranges: list | None = None) -> tuple[dict, list]:
    """One round: serve day `day_index` with production and send its events to Kafka; join them with the
    previous round's (whose last hours only this day's traffic settles); then the retraining tasks for the
    previous day, now complete. Returns the round's truth, the gate's decision and the seconds each step took,
    with this round's Kafka offset ranges for the next round's join."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[step] = round(seconds.get(step, 0.0) + now - clock, 2)
        clock = now

    base = settings.simulator
    config = base.model_copy(update={"start": base.start + dt.timedelta(days=day_index), "days": 1.0,
                                     "requests": requests, "seed": seed * 1000 + day_index,
                                     "drain_s": drain_s(settings)})
    today = config.start.strftime("%Y-%m-%d")
    canary = canaries.in_flight(settings) if gate is GateMode.ENFORCE else None
    if canary is not None and canaries.superseded(settings, canary):
        canary = None
    policy, serving = serving_policy(settings, objective)
    if canary is not None and canary.served_day is None:
        policy = canaries.serve(settings, canary, today, objective.output)
    served = ServedLog()
    simulation = Simulation(config, world=world, policy=policy, served=served)
    FeatureStore(settings.loop.feature_store).put(simulation.feature_tables)
    events = list(simulation.traffic())
    # production's own requests: a canary's split logs the control arm, which production served
    served.serving_log(policy.names[0], world, list(base.surfaces), list(base.devices), arm=0).save(
        loop.serving_log_path(settings.loop, today))
    lap("serving")
    topics = list(settings.kafka.event_topics.values())
    before = {(r.topic, r.partition): r.stop for r in snapshot_ranges(settings.kafka.bootstrap_servers, topics)}
    with KafkaSink(settings.kafka) as sink:
        sink.write(events)
    ranges = [PartitionRange(r.topic, r.partition, before.get((r.topic, r.partition), r.start), r.stop)
              for r in snapshot_ranges(settings.kafka.bootstrap_servers, topics)]
    lap("kafka")
    start_ms = config.start_ms
    from_ms = unsettled_from(settings, start_ms - DAY_MS) if day_index else start_ms
    run_bounded_join(settings.kafka, settings.join, runner="direct", ranges=(previous_ranges or []) + ranges,
                     from_ms=from_ms, to_ms=start_ms + DAY_MS)
    lap("join")
    outcome = {"round": day_index, "day": today, "served_by": " | ".join(policy.names),
               "production": serving, "events": len(events), **served.metrics(world, seed=seed), "gate": None,
               "canary": None}
    if day_index >= 2:  # the previous day is complete, and the day before it is there to train on
        day = (config.start - dt.timedelta(days=1)).strftime("%Y-%m-%d")
        loop.check_manifests(settings, settings.loop, day)
        canary = canaries.in_flight(settings)
        if canary is not None and canary.served_day == day:  # its split day is complete: the test decides it
            decision = canaries.decide(settings, canary)
            outcome["canary"] = {**decision.as_dict(), **canaries.act(settings, decision)}
        with contextlib.redirect_stdout(sys.stderr):
            model = loop.train_candidate(settings, settings.loop, day)
        version = loop.register_candidate(settings, day, model)
        lap("train")
        audited = loop.audit_candidate(settings, settings.loop, day, version)
        production = None if audited.production is None else \
            Registry(settings.registry).version(audited.production).model_dir
        truth = truth_of(settings, world, loop.serving_log(settings, day), model, production)
        (loop.day_dir(settings.loop, day) / "audit" / "truth.json").write_text(json.dumps(truth, indent=2) + "\n")
        promoted = audited.promotable or gate is GateMode.RECORD
        canaried = None
        if audited.promotable:
            loop.promote_candidate(settings, day, audited)
        elif gate is GateMode.RECORD:
            Registry(settings.registry).promote(version, audited.production, f"{day}: audit {audited.status} "
                                                "recorded, not enforced (closed loop, --gate record)", override=True)
        else:  # an inconclusive candidate is split-tested from tomorrow, if no other canary is in flight
            canaried = canaries.open_canary(settings, day, audited, seed * 1000 + day_index)
            if canaried is None:
                loop.hold_candidate(settings, day, audited)  # alerts on-call through the environment's sinks
        loop.send_digest(settings, day)  # what the day held without a page, the canary's hold included
        lap("audit")
        outcome["gate"] = {"day": day, "candidate": version, "status": audited.status, "mode": gate.value,
                           "promoted": promoted, "canary": canaried is not None, "reasons": audited.reasons,
                           "offpolicy": audited.offpolicy,
                           "served": audited.served, "truth": truth}
    return {**outcome, "seconds": seconds}, ranges


def run_settings(settings: Settings, out: Path, objective: Objective, seed: int) -> Settings:
    """The settings a run of the closed loop under `out` works with: its directories, objective and seed."""
    settings = round_settings(settings, Path(out) / objective.value, objective)
    return settings.model_copy(update={"simulator": settings.simulator.model_copy(update={"seed": seed})})


def run_closed_loop(settings: Settings, objective: Objective, rounds: int, requests: int, seed: int, out: Path,
                    gate: GateMode = GateMode.ENFORCE, echo: Callable[[str], None] = print) -> dict:
    """`rounds` rounds from a fresh world of `seed` under `objective`, everything under `out/<objective>`
    (examples, registry, models, audits); returns every round's outcome and writes it to `rounds.json` there."""
    directory = Path(out) / objective.value
    shutil.rmtree(directory, ignore_errors=True)
    settings = run_settings(settings, out, objective, seed)
    KafkaBroker(settings.kafka).up()
    world = World.create(settings.simulator)
    outcomes, ranges = [], None
    for r in range(rounds):
        outcome, ranges = run_round(settings, world, r, requests, objective, seed, gate, ranges)
        outcomes.append(outcome)
        echo(round_line(objective, outcome))
    result = {"objective": objective.value, "seed": seed, "requests_per_round": requests,
              "serving": {"exploration": settings.loop.serving_exploration,
                          "temperature": settings.loop.serving_temperature, "epsilon": settings.loop.serving_epsilon,
                          "floor": settings.loop.serving_floor},
              "gate": gate.value, "rounds": outcomes}
    (directory / "rounds.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


ROUND_HEADER = (f"{'objective':<10}{'round':>6}{'served by':>22}{'CTR':>8}{'buys/1k':>9}{'bait':>7}{'utility':>9}"
                f"{'regret':>8}{'jaccard':>9}  gate")


def round_line(objective: Objective, o: dict) -> str:
    gate = "-" if o["gate"] is None else \
        f"{o['gate']['status']} v{o['gate']['candidate']}: " + \
        ("promoted" if o["gate"]["status"] in ("pass", "warn") else "overridden" if o["gate"]["promoted"]
         else "canary from tomorrow" if o["gate"].get("canary") else "held")
    if o.get("canary"):
        gate += f"; canary v{o['canary']['canary']['candidate']} {o['canary']['status']}: " + \
            ("promoted" if o["canary"]["promote"] else "held")
    return (f"{objective.value:<10}{o['round']:>6}{o['served_by']:>22}{o['ctr']:>8.3f}{o['purchases_per_1000']:>9.2f}"
            f"{o['bait_share']:>7.3f}{o['mean_true_utility']:>9.4f}{o['regret']:>8.3f}{o['homogenisation']:>9.4f}"
            f"  {gate}")


def summarise(results: list[dict]) -> dict:
    """Per seed: whether bait climbed under CTR and not under value, and the value loop's final lift in
    purchases per 1000 impressions over the CTR loop's."""
    by = {(r["seed"], r["objective"]): r["rounds"] for r in results}
    out = {}
    for seed in sorted({r["seed"] for r in results}):
        ctr, value = by.get((seed, "ctr")), by.get((seed, "value"))
        if not ctr or not value:
            continue
        out[str(seed)] = {
            "ctr_bait_share": [ctr[0]["bait_share"], ctr[-1]["bait_share"]],
            "value_bait_share": [value[0]["bait_share"], value[-1]["bait_share"]],
            "bait_climbs_under_ctr": ctr[-1]["bait_share"] > ctr[0]["bait_share"],
            "bait_does_not_climb_under_value": value[-1]["bait_share"] <= value[0]["bait_share"],
            "final_purchases_per_1000": {"ctr": ctr[-1]["purchases_per_1000"],
                                         "value": value[-1]["purchases_per_1000"]},
            "final_purchase_lift": value[-1]["purchases_per_1000"] / max(ctr[-1]["purchases_per_1000"], 1e-9) - 1,
        }
    return out


PLOTTED = (("ctr", "CTR"), ("purchases_per_1000", "purchases per 1000 impressions"), ("bait_share", "bait share"),
           ("mean_true_utility", "mean true utility"), ("regret", "regret per request"),
           ("homogenisation", "homogenisation (Jaccard)"))


def plot_rounds(results: list[dict], path: Path) -> Path:
    """One figure: a panel per metric, every round on the x axis, a line per objective and seed; a hollow marker
    on the round whose retraining the gate did not pass."""
    matplotlib.use("Agg")

    colours = {"ctr": "#d62728", "value": "#1f77b4"}
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), constrained_layout=True)
    for ax, (metric, title) in zip(axes.ravel(), PLOTTED):
        for result in results:
            rounds = result["rounds"]
            x = [o["round"] for o in rounds]
            y = [o[metric] for o in rounds]
            style = "-" if result["seed"] == results[0]["seed"] else ":"
            ax.plot(x, y, style, color=colours[result["objective"]], marker="o", markersize=3,
                    label=f"{result['objective']} (seed {result['seed']})")
            held = [(o["round"], o[metric]) for o in rounds
                    if o["gate"] is not None and o["gate"]["status"] not in ("pass", "warn")]
            if held:
                ax.scatter(*zip(*held), s=40, facecolors="none", edgecolors=colours[result["objective"]])
        ax.set_title(title)
        ax.set_xlabel("round (simulated day)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("The loop round by round: what each objective's production served (hollow: the gate did not pass "
                 "that round's candidate)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
