"""`valueloop bench gate`: the gate's decisions scored against the simulator's truth, as a confusion matrix.

The closed loop (`valueloop.closed_loop`) runs under the value objective from several seeds, in `record` mode
so that production moves every round as a heeded gate's would when it passes. On every audited day the gate
then judges, against that day's production, the loop's own candidate and candidates made good or bad on
purpose from it:
- **retrains**: production's own training run again with two other seeds (the gate's A/A), and the CTR preset
  trained on the candidate's days;
- **re-weighted**: the candidate's heads ranked by other value weights (leaning to clicks, or to long dwell),
  or with a bonus on the headline score, exactly as a model exported with those weights would rank;
- **broken**: the candidate served with a feature zeroed (the user's category affinity), and a stale model
  (the first model the loop promoted).

Each candidate goes through the whole gate as the retraining DAG runs it (the drift audit and the model gate on
the day's examples, the served check and the off-policy check on production's serving log, `loop.decide`),
and its truth comes from the world (`simulator.truth`): healthy, harmful or neither against production's.
Recorded: every decision beside its truth, the false-block rate on healthy candidates and the miss rate on
harmful ones with Wilson 95% intervals, which check decided each wrong call, how often the A/A passes, and the
served check's bait proxy at several headline cuts (to size its cut again).

Goals: at most 5% false blocks, at most 5% misses, the A/A passing at least 95% of the time, over at least 60
healthy and 60 harmful candidates.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from bench.environment import describe
from bench.topics import fresh_topics
from pipelines.reference_labeler import reference_labels
from config import Settings
from config.trainer import TrainConfig, preset
from gate.served import served_check
from promotion.registry import Registry
from schemas.units import DAY_MS
from serving.log import ServingLog, candidate_scores
from serving.policies import SplitPolicy
from serving.propensities import Sampling
from simulator.truth import Bounds, ranker_marginals, served_truth
from trainer.exported import ExportedModel, Predictor
from simulator.traffic import Simulation
from simulator.world import World
from valueloop import loop
from valueloop.audit import run_audit
from valueloop.canary import Canary, decision_on
from valueloop.closed_loop import GateMode, Objective, drain_s, run_closed_loop, run_settings, truth_of_marginals
from valueloop.policies import LOGGING, model_policy, policy_from

GOAL_FALSE_BLOCKS = 0.05
GOAL_MISSES = 0.05
GOAL_AA_PASSES = 0.95
GOAL_CANDIDATES = 60
GOAL_COVERAGE = 0.90  # of the loop's candidates, the paired off-policy interval holding the true difference
DEFAULT_VALUE = {"purchase": 1.0, "add_to_cart": 0.3, "long_dwell": 0.1, "bounce": -0.1}
REWEIGHTED = {
    "click-only": {"click": 1.0},
    "click-leaning": {"click": 1.0, "purchase": 0.2},
    "click-and-purchase": {"click": 0.3, "purchase": 1.0, "add_to_cart": 0.3},
    "plus-a-little-click": {**DEFAULT_VALUE, "click": 0.15},
    "purchase-and-dwell": {"purchase": 1.0, "long_dwell": 1.0},
    "purchase-only": {"purchase": 1.0},
}
HEADLINE_BONUS = {"headline-bonus-small": 0.002, "headline-bonus-large": 0.01}
ZEROED = {"affinity-zeroed": ("user_category_affinity",)}
SIZING_CUTS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75)  # headline scores the bait proxy is recorded at, for its sizing
AA_NAMES = ("a/a", "a/a-2")  # production's training run again, with the seed + 1000 and + 2000


@dataclass
class Variant:
    """A candidate model served otherwise: its ranking score recomputed from its heads with other value weights,
    plus a bonus on the headline score, or some of its served features zeroed. A `Predictor`, as a model
    exported with those weights, or fed those features, would predict."""

    base: ExportedModel
    name: str
    value_weights: dict[str, float] | None = None
    headline_bonus: float = 0.0
    zeroed: tuple[str, ...] = ()

    def __post_init__(self):
        self.path = f"{self.base.path}~{self.name}"
        model = dict(self.base.metadata["config"]["model"])
        if self.value_weights is not None:
            model["value_weights"] = self.value_weights
        self.metadata = {**self.base.metadata, "config": {**self.base.metadata["config"], "model": model}}

    def predict(self, columns: dict) -> dict:
        if self.zeroed:
            columns = {**columns, **{name: np.zeros_like(np.asarray(columns[name])) for name in self.zeroed}}
        out = self.base.predict(columns)
        if self.value_weights is not None:
            out["value"] = sum(weight * out[term] for term, weight in self.value_weights.items())
        if self.headline_bonus:
            out["value"] = out["value"] + self.headline_bonus * np.asarray(columns["headline_score"], np.float32)
        return out


def judge(settings: Settings, world: World, day: str, candidate: Path | Predictor,
          production: Path | Predictor | None, out: Path, logged: loop.Ranker | None = None) -> dict:
    """The gate's decision on `candidate` for `day` against `production` (None: the logging policy), as the
    retraining DAG decides it, beside the candidate's truth and the off-policy estimate's; `logged` is how the
    day's log was served (`loop.logged_ranker`), when the caller has it already."""
    start, end = loop.day_range(day)
    verdict = run_audit(settings.join.output_dir, (start - DAY_MS, start), (start, end), None, settings.audit, out,
                        candidate=candidate, production=production,
                        long_dwell_ms=settings.trainer.model.long_dwell_ms, report_html=False)
    log = loop.serving_log(settings, day)
    logged = logged or loop.logged_ranker(settings, log)
    judged = loop.ranker_of(settings, log, candidate)
    against = loop.ranker_of(settings, log, production) if production is not None else logged
    served = loop.served_check_of(settings, log, judged, against)
    offpolicy = loop.offpolicy_check(settings, log, judged, against, logged)
    status, reasons, promotable = loop.decide(verdict, served, offpolicy)
    truth = truth_of_marginals(world, log, judged.marginals, against.marginals)
    audit = settings.audit
    # the bait proxy's upper bound at other headline cuts, so that its cut can be sized again from this record
    by_cut = {str(cut): served_check(log, judged.served, against.served, audit.served_purchase_drop,
                                     audit.served_bait_points, cut, 200).bait_proxy.interval[1] for cut in SIZING_CUTS}
    estimate = offpolicy.estimate
    # the truth of the paired estimate: the candidate's expected purchases per request in the slots, minus
    # production's, on the same requests
    true_difference = (truth["candidate"]["purchases_per_1000"] - truth["production"]["purchases_per_1000"]) \
        * offpolicy.slots / 1000
    return {"status": status, "promotable": promotable, "reasons": reasons[:3], "truth": truth,
            "served": {"purchases": served.purchases.change, "purchases_interval": served.purchases.interval,
                       "bait_points": served.bait_proxy.change, "bait_interval": served.bait_proxy.interval,
                       "bait_upper_by_cut": by_cut},
            "offpolicy": {"judged": offpolicy.judged, "passed": offpolicy.passed,
                          "effective_sample_size": estimate.effective_sample_size,
                          "relative": estimate.relative, "relative_interval": estimate.relative_interval,
                          "difference": estimate.difference, "interval": estimate.interval,
                          "true_difference": true_difference,
                          "covers_truth": estimate.interval[0] <= true_difference <= estimate.interval[1],
                          "requests_to_decide": offpolicy.requests_to_decide},
            "decided_by": [] if promotable else [loop.cause_of(reasons[0])]}


def canary_of(settings: Settings, day: str, candidate: Path | Predictor, production: int | None,
              requests: int, seed: int) -> dict:
    """The canary the closed loop runs for a candidate its audit of `day` left inconclusive: the next day's
    traffic (`requests`, seeded by `seed`) served split by user between production (the logging policy before
    any promotion) and the candidate, at `loop.canary_share`; its events labeled as the join labels them (the
    reference labeler, which the join's tests and `bench join` hold it to), and decided by the split test as
    `valueloop.canary` decides it. Each candidate is tested as if no other canary were in flight."""
    base = settings.simulator
    start = base.start + dt.timedelta(days=(dt.date.fromisoformat(day) - base.start.date()).days + 1)
    config = base.model_copy(update={"start": start, "days": 1.0, "requests": requests, "seed": seed,
                                     "drain_s": drain_s(settings)})
    registry = Registry(settings.registry)
    control = policy_from(settings, LOGGING) if production is None else \
        model_policy(settings, registry.version(production).model_dir, f"{registry.name}/v{production}")
    treatment = model_policy(settings, candidate, "canary-candidate")
    share = settings.loop.canary_share
    events = [(e.name, e.datum) for e in Simulation(config, policy=SplitPolicy([control, treatment],
                                                                                [1 - share, share], seed)).events()]
    labels = settings.join.labels
    labeled = reference_labels(events, labels.click_window_ms, labels.cart_window_ms, labels.purchase_window_ms,
                               max(datum["event_time_ms"] for _, datum in events))
    shown = {datum["event_id"]: datum for name, datum in events if name == "Impression"}
    ids = [i for i in labeled if start.timestamp() * 1000 <= shown[i]["event_time_ms"]]
    impressions = {"user_id": np.array([shown[i]["user_id"] for i in ids]),
                   "arm": np.array([shown[i]["policy"] for i in ids]),
                   "clicked": np.array([labeled[i]["clicked"] for i in ids]),
                   "purchased": np.array([labeled[i]["purchased"] for i in ids])}
    canary = Canary(day, 0, production, control.names[0], treatment.names[0], share, seed,
                    start.strftime("%Y-%m-%d"))
    decision = decision_on(settings, canary, impressions)
    return {"promote": decision.promote, "status": decision.status, "reason": decision.reason,
            "impressions": len(ids)}


def floor_cost(settings: Settings, world: World, log: ServingLog, production: Path | Predictor) -> dict:
    """What the support floor costs production on the day: its true purchases per 1000 served with the floor
    and without it."""
    scores = candidate_scores(log, production)
    slots = min(settings.audit.offpolicy_slots, log.order.shape[1])
    sampling = Sampling.of(settings.loop)
    with_floor, without = (served_truth(world, log, ranker_marginals(scores, slots, s)).purchases_per_1000
                           for s in (sampling, dataclasses.replace(sampling, floor=0.0)))
    return {"floor": sampling.floor, "purchases_per_1000": with_floor, "without_floor": without,
            "cost": 1 - with_floor / without}


def _retrained(settings: Settings, config: TrainConfig, start_ms: int, end_ms: int, out: Path) -> Path:
    from trainer.train import train

    if not (out / "saved_model.pb").exists():
        train(config, settings.join.output_dir, start_ms, end_ms, out, verbose=0)
    return out


def candidates_of_day(settings: Settings, day: str, candidate_dir: Path, production: int | None,
                      scratch: Path) -> list[tuple[str, str, Path | Predictor]]:
    """(name, kind, model) of every candidate judged on `day`: the loop's own and those made from it."""
    registry = Registry(settings.registry)
    base = ExportedModel(candidate_dir)
    made: list[tuple[str, str, Path | Predictor]] = [("loop", "loop", base)]
    made += [(name, "reweighted", Variant(base, name, value_weights=weights)) for name, weights in REWEIGHTED.items()]
    made += [(name, "headline", Variant(base, name, headline_bonus=bonus)) for name, bonus in HEADLINE_BONUS.items()]
    made += [(name, "broken", Variant(base, name, zeroed=features)) for name, features in ZEROED.items()]
    data = base.metadata["data"]
    config = TrainConfig.model_validate(base.metadata["config"])
    made.append(("ctr-preset", "retrain", ExportedModel(_retrained(settings, preset(config, "ctr"), data["start_ms"],
                                                                   data["end_ms"], scratch / day / "ctr-preset"))))
    if production is not None:
        produced = ExportedModel(registry.version(production).model_dir).metadata
        config = TrainConfig.model_validate(produced["config"])
        for n, name in enumerate(AA_NAMES, start=1):  # the same training run with other seeds
            again = config.model_copy(update={"seed": config.seed + 1000 * n})
            made.append((name, "retrain", ExportedModel(_retrained(
                settings, again, produced["data"]["start_ms"], produced["data"]["end_ms"],
                scratch / day / name.replace("/", "-")))))
        first = min(v.version for v in registry.versions())
        if first != production:
            made.append(("stale", "broken", ExportedModel(registry.version(first).model_dir)))
    return made


def wilson(k: int, n: int) -> list[float] | None:
    if n == 0:
        return None
    interval = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    return [round(interval.low, 4), round(interval.high, 4)]


def summarise(rows: list[dict], bait_points: float) -> dict:
    """The confusion matrix of `rows` (judged candidates) against their truth; `bait_points` is the served check's
    bait margin, at which the bait proxy's record at each headline cut is scored."""
    healthy = [r for r in rows if r["truth"]["health"] == "healthy"]
    harmful = [r for r in rows if r["truth"]["health"] == "harmful"]

    def final(r: dict) -> bool:
        """Promoted in the end: passed offline, or passed the canary its inconclusive audit opened."""
        return r.get("final_promotable", r["promotable"])

    false_blocks = [r for r in healthy if not final(r)]
    misses = [r for r in harmful if final(r)]
    offline_false_blocks = [r for r in healthy if not r["promotable"]]
    offline_misses = [r for r in harmful if r["promotable"]]
    canaried = [r for r in rows if "canary" in r]
    aa = [r for r in rows if r["name"] in AA_NAMES]
    aa_passed = sum(final(r) for r in aa)

    def decided_by(wrong: list[dict]) -> dict:
        """How many wrong calls each check had a part in (a block can have several; a canary is one)."""
        counts: dict[str, int] = {}
        for r in wrong:
            for key in r["decided_by"] + (["canary"] if "canary" in r else []) or ["passed every check"]:
                counts[key] = counts.get(key, 0) + 1
        return counts

    loop_rows = [r for r in rows if r["name"] == "loop"]
    # the bait proxy alone, at each headline cut and the configured margin: the healthy candidates it would block,
    # and the candidates harmful by their bait alone it would let through
    bounds = Bounds()
    by_bait = [r for r in harmful
               if r["truth"]["candidate"]["purchases_per_1000"] > bounds.harmful_purchases
               * r["truth"]["production"]["purchases_per_1000"]]  # harmful, so by bait when not by purchases
    cuts = sorted({cut for r in rows for cut in r["served"].get("bait_upper_by_cut", {})}, key=float)
    sizing = {cut: {"false_blocks": sum(r["served"]["bait_upper_by_cut"][cut] > bait_points for r in healthy),
                    "misses_of_bait": sum(r["served"]["bait_upper_by_cut"][cut] <= bait_points for r in by_bait)}
              for cut in cuts}
    covered = sum(r["offpolicy"]["covers_truth"] for r in loop_rows)
    costs = [r["floor_cost"]["cost"] for r in loop_rows if r.get("floor_cost")]
    by_name: dict[str, dict] = {}
    for r in rows:
        line = by_name.setdefault(r["name"], {"healthy": 0, "harmful": 0, "neither": 0, "blocked": 0})
        line[r["truth"]["health"]] += 1
        line["blocked"] += not r["promotable"]
    false_block_rate = len(false_blocks) / len(healthy) if healthy else None
    miss_rate = len(misses) / len(harmful) if harmful else None
    aa_rate = aa_passed / len(aa) if aa else None
    return {
        "candidates": len(rows), "healthy": len(healthy), "harmful": len(harmful),
        "neither": len(rows) - len(healthy) - len(harmful),
        "false_block_rate": false_block_rate, "false_block_interval": wilson(len(false_blocks), len(healthy)),
        "false_blocks_decided_by": decided_by(false_blocks),
        "miss_rate": miss_rate, "miss_interval": wilson(len(misses), len(harmful)),
        "misses_decided_by": decided_by(misses),
        # the audit alone, before any canary: an inconclusive candidate counts as held
        "offline": {"false_blocks": len(offline_false_blocks), "misses": len(offline_misses),
                    "aa_passed": sum(r["promotable"] for r in aa)},
        "canaries": {"opened": len(canaried),
                     **{f"{health}_{outcome}": sum(r["truth"]["health"] == health
                                                   and r["canary"]["promote"] == (outcome == "promoted")
                                                   for r in canaried)
                        for health in ("healthy", "harmful", "neither") for outcome in ("promoted", "held")}},
        "aa_pass_rate": aa_rate, "aa_interval": wilson(aa_passed, len(aa)), "aa_candidates": len(aa),
        "offpolicy_coverage": covered / len(loop_rows) if loop_rows else None,
        "offpolicy_coverage_of": len(loop_rows),
        "offpolicy_coverage_all": sum(r["offpolicy"]["covers_truth"] for r in rows) / len(rows) if rows else None,
        # an inconclusive candidate is held here; the closed loop would split-test it (a canary) instead
        "inconclusive": {health: sum(r["status"] == "inconclusive" for r in rows if r["truth"]["health"] == health)
                         for health in ("healthy", "harmful", "neither")},
        "blocked_healthy": sum(r["status"] == "block" for r in healthy),
        "floor_cost_median": float(np.median(costs)) if costs else None,
        "bait_proxy_by_cut": {"margin": bait_points, "healthy": len(healthy), "harmful_by_bait_alone": len(by_bait),
                              "cuts": sizing},
        "by_candidate": by_name,
        "goals": {"false_block_rate_at_most": GOAL_FALSE_BLOCKS, "miss_rate_at_most": GOAL_MISSES,
                  "aa_pass_rate_at_least": GOAL_AA_PASSES, "each_class_at_least": GOAL_CANDIDATES,
                  "offpolicy_coverage_at_least": GOAL_COVERAGE},
        "goal_met": (false_block_rate is not None and false_block_rate <= GOAL_FALSE_BLOCKS
                     and miss_rate is not None and miss_rate <= GOAL_MISSES
                     and aa_rate is not None and aa_rate >= GOAL_AA_PASSES
                     and min(len(healthy), len(harmful)) >= GOAL_CANDIDATES
                     and bool(loop_rows) and covered / len(loop_rows) >= GOAL_COVERAGE),
    }


def judge_loop(settings: Settings, loop_out: Path, objective: Objective, seed: int, scratch: Path,
               echo=print) -> list[dict]:
    """Every candidate of every audited day of one closed-loop run under `loop_out`, judged."""
    run = run_settings(settings, loop_out, objective, seed)
    judged_under = gate_settings(settings)
    ran = json.loads((loop_out / objective.value / "rounds.json").read_text())
    rounds, requests = ran["rounds"], ran["rounds_asked"][1]
    world = World.create(run.simulator)
    registry = Registry(run.registry)
    rows = []
    for outcome in rounds:
        gate = outcome["gate"]
        if gate is None:
            continue
        day, version = gate["day"], gate["candidate"]
        production = json.loads((loop.day_dir(run.loop, day) / "audit" / "audited.json").read_text())["production"]
        production_model = ExportedModel(registry.version(production).model_dir) if production is not None else None
        log = loop.serving_log(run, day)
        cost = floor_cost(run, world, log, production_model) if production_model is not None else None
        logged = loop.logged_ranker(run, log)
        for name, kind, model in candidates_of_day(run, day, registry.version(version).model_dir, production,
                                                   scratch / f"seed-{seed}"):
            audits = scratch / f"seed-{seed}" / day / "audits" / name
            row = _judged_before(audits, judged_under)
            if row is None:
                row = {"seed": seed, "objective": objective.value, "day": day, "name": name, "kind": kind,
                       "production": production, **({"floor_cost": cost} if name == "loop" else {}),
                       **judge(run, world, day, model, production_model, audits, logged)}
            if row["status"] == "inconclusive" and "canary" not in row and run.loop.canary_share > 0:
                day_index = (dt.date.fromisoformat(day) - run.simulator.start.date()).days
                row["canary"] = canary_of(run, day, model, production, requests, seed * 1000 + day_index + 1)
            row["final_promotable"] = row["promotable"] or bool(row.get("canary", {}).get("promote"))
            audits.mkdir(parents=True, exist_ok=True)
            (audits / JUDGED).write_text(json.dumps({"under": judged_under, "row": row}) + "\n")
            canaried = f" canary: {row['canary']['status']}" if "canary" in row else ""
            echo(f"seed {seed} {day} {name:<22} {row['truth']['health']:<8} "
                 f"{'promoted' if row['promotable'] else row['status']:<12}{canaried} {row['reasons'][:1]}")
            rows.append(row)
    return rows


JUDGED = "judged.json"  # a candidate's row, beside its audit, with the gate settings it was judged under


def gate_settings(settings: Settings) -> dict:
    """The settings a judgement depends on beyond the loop's run: the checks' margins and serving's exploration."""
    return {"audit": settings.audit.model_dump(mode="json", include={
                "served_purchase_drop", "served_bait_points", "bait_headline_score", "offpolicy_slots",
                "offpolicy_purchase_drop", "offpolicy_min_ess", "offpolicy_switch", "offpolicy_clip"}),
            "serving": settings.loop.model_dump(mode="json", include={
                "serving_exploration", "serving_temperature", "serving_epsilon", "serving_floor"})}


def _judged_before(audits: Path, under: dict) -> dict | None:
    """The row judged into `audits` by an earlier run under the same gate settings (a run that stopped part way
    resumes where it stopped), or None."""
    try:
        judged = json.loads((audits / JUDGED).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return judged["row"] if judged.get("under") == under else None


def run_gate_benchmark(settings: Settings, seeds: list[int], rounds: int, requests: int, scratch: Path,
                       echo=print) -> dict:
    rows = []
    for seed in seeds:
        loop_out = scratch / f"seed-{seed}" / "loop"
        ran = loop_out / Objective.VALUE.value / "rounds.json"
        if ran.exists() and json.loads(ran.read_text()).get("rounds_asked") == [rounds, requests]:
            echo(f"seed {seed}: the closed loop already ran under {loop_out}; judging its candidates again")
        else:
            with fresh_topics(settings.kafka, f"gate.{seed}") as kafka:  # so that runs side by side keep apart
                run_closed_loop(settings.model_copy(update={"kafka": kafka}), Objective.VALUE, rounds, requests,
                                seed, loop_out, gate=GateMode.RECORD, echo=echo)
            recorded = json.loads(ran.read_text())
            ran.write_text(json.dumps({**recorded, "rounds_asked": [rounds, requests]}, indent=2) + "\n")
        rows += judge_loop(settings, loop_out, Objective.VALUE, seed, scratch, echo)
    return {
        "benchmark": "gate",
        "environment": describe(("apache-beam", "tensorflow", "scipy")),
        "settings": {"seeds": seeds, "rounds": rounds, "requests_per_round": requests, "objective": "value",
                     **gate_settings(settings)},
        "results": {"candidates": rows},
        "summary": summarise(rows, settings.audit.served_bait_points),
    }


def merge_gate_results(parts: list[dict]) -> dict:
    """One `bench gate` result of several runs' candidates (each run's seeds, judged under the same gate settings,
    rounds and requests), summarised again: a run per seed can be recorded as it ends and merged after."""
    if not parts:
        raise ValueError("bench gate merge: no results to merge")
    fixed = [{k: v for k, v in part["settings"].items() if k != "seeds"} for part in parts]
    for part, settings in zip(parts, fixed):
        if settings != fixed[0]:
            raise ValueError(f"bench gate merge: the run measured at {part['environment']['commit']} was judged "
                             f"under {settings}, not {fixed[0]}; judge them again under one setting")
    seeds = [seed for part in parts for seed in part["settings"]["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"bench gate merge: a seed is in more than one run ({sorted(seeds)})")
    rows = [row for part in parts for row in part["results"]["candidates"]]
    return {
        "benchmark": "gate",
        "environment": parts[-1]["environment"],
        "runs": [{"seeds": part["settings"]["seeds"], "environment": part["environment"]} for part in parts],
        "settings": {**fixed[0], "seeds": seeds},
        "results": {"candidates": rows},
        "summary": summarise(rows, fixed[0]["audit"]["served_bait_points"]),
    }

