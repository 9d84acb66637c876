"""`valueloop bench audit-calibration`: how often the drift audit blocks when nothing drifted.

Pairs of windows from one simulated world, each window the first day of its own seeded traffic (settled: the
two days after it hold its conversions), audited against each other. The goal: at most 5% of no-drift pairs
block. Each pair's status is in the JSON, with the seeds that make it again.
"""
from __future__ import annotations

import time
from collections import Counter

from bench.environment import describe

WORLD_SEED = 1
BASE = {"requests": 12_000, "days": 3.0, "catalogue": {"users": 3_000, "items": 400}}
GOAL_BLOCK_SHARE = 0.05


def no_drift_window(world, seed: int, name: str):
    from audit.windows import window_of_examples
    from pipelines.label_files import label_events
    from config.join import LabelConfig
    from simulator import Simulation, SimulatorConfig

    config = SimulatorConfig.model_validate({**BASE, "seed": seed})
    labels = LabelConfig(click_window_s=1800, cart_window_s=3600, purchase_window_s=2 * 86400)
    events = [(e.name, e.datum) for e in Simulation(config, world=world).events()]
    day_end = config.start_ms + 86_400_000
    examples = [e for e in label_events(events, labels, watermark_ms=config.end_ms + 10 * 86_400_000)
                if e.event_time_ms < day_end]
    return window_of_examples(examples, name=name)


def calibrate(pairs: int, first_seed: int = 100) -> dict:
    from audit.drift import audit_windows
    from simulator import SimulatorConfig, World

    world = World.create(SimulatorConfig.model_validate({**BASE, "seed": WORLD_SEED}))
    runs = []
    start = time.perf_counter()
    for k in range(pairs):
        seeds = (first_seed + 2 * k, first_seed + 2 * k + 1)
        verdict = audit_windows(no_drift_window(world, seeds[0], "reference"), no_drift_window(world, seeds[1], "current"))
        runs.append({"seeds": seeds, "status": verdict.status.value, "reasons": verdict.reasons[:3]})
    statuses = Counter(r["status"] for r in runs)
    share = statuses["block"] / pairs
    return {"benchmark": "audit_calibration", "environment": describe(("numpy", "scipy")),
            "settings": {**BASE, "world_seed": WORLD_SEED, "pairs": pairs, "first_seed": first_seed},
            "results": runs,
            "summary": {"pairs": pairs, "statuses": dict(statuses), "block_share": share,
                        "goal_block_share_at_most": GOAL_BLOCK_SHARE, "goal_met": share <= GOAL_BLOCK_SHARE,
                        "seconds": round(time.perf_counter() - start, 1)}}
