"""`valueloop bench loop`: the closed loop (`valueloop.closed_loop`) for ten rounds under each objective from
several seeds: where each round's seconds go (serving, Kafka, join, train, audit) and whether the loop shows
what it should.

Every round serves a simulated day of `requests` requests with production, sends it through the local Kafka
node, joins it with Beam (FnApiRunner), and runs the retraining DAG's tasks. The gate runs in `record` mode by
default: its verdict is recorded on every candidate but production moves regardless, so both objectives' loops
play out and the rounds show what the gate is there to stop.

Goals: a round of at least 20,000 requests within 300 s; for every seed, the bait share higher in the last
round than in the first under the CTR objective and not under the value objective, and the value loop's last
round at least 25% more purchases per 1000 impressions than the CTR loop's.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from bench.environment import describe
from bench.topics import fresh_topics

GOAL_ROUND_S = 300.0
GOAL_LIFT = 0.25
STEPS = ("serving", "kafka", "join", "train", "audit")


def run_loop_benchmark(settings, seeds: list[int], rounds: int, requests: int, scratch: Path, figure: Path,
                       gate: str = "record") -> dict:
    from valueloop.closed_loop import GateMode, Objective, plot_rounds, round_line, run_closed_loop, summarise

    runs = []
    for seed in seeds:
        for objective in (Objective.CTR, Objective.VALUE):
            with fresh_topics(settings.kafka, f"loop.{seed}.{objective.value}") as kafka:
                runs.append(run_closed_loop(settings.model_copy(update={"kafka": kafka}), objective, rounds,
                                            requests, seed, scratch / f"seed-{seed}", gate=GateMode(gate),
                                            echo=lambda line: print(line, flush=True)))
    plot_rounds(runs, figure)
    round_s = [sum(o["seconds"].values()) for run in runs for o in run["rounds"]]
    retraining = [o for run in runs for o in run["rounds"] if "train" in o["seconds"]]
    steps = {step: statistics.median(o["seconds"][step] for o in retraining) for step in STEPS}
    checks = summarise(runs)
    for line in checks.values():
        line["goal_met"] = (line["bait_climbs_under_ctr"] and line["bait_does_not_climb_under_value"]
                            and line["final_purchase_lift"] >= GOAL_LIFT)
    return {
        "benchmark": "loop",
        "environment": describe(("apache-beam", "tensorflow", "mlflow")),
        "settings": {"seeds": seeds, "rounds": rounds, "requests_per_round": requests, "gate": gate,
                     "figure": str(figure)},
        "results": {"runs": [{**{k: v for k, v in run.items() if k != "rounds"},
                              "rounds": [{k: v for k, v in o.items()} for o in run["rounds"]],
                              "printed": [round_line(Objective(run["objective"]), o) for o in run["rounds"]]}
                             for run in runs]},
        "summary": {
            "round_s": {"median": round(statistics.median(round_s), 1), "max": round(max(round_s), 1)},
            "retraining_round_step_s_median": steps,
            "retraining_round_step_share": {k: round(v / sum(steps.values()), 3) for k, v in steps.items()},
            "goal_round_s_at_most": GOAL_ROUND_S,
            "round_goal_met": max(round_s) <= GOAL_ROUND_S and requests >= 20_000,
            "seeds": checks,
            "goal_lift_at_least": GOAL_LIFT,
            "goal_met": max(round_s) <= GOAL_ROUND_S and requests >= 20_000
            and all(line["goal_met"] for line in checks.values()),
        },
    }
