"""`valueloop bench audit`: examples/s of a whole drift audit (two windows read from the join's partitions, every
check, the verdict written) beside reading the same examples alone.

One simulated world, two windows of its traffic labeled into partitions as the join writes them. Reading alone
is `load_window` of both windows; the audit is `run_audit` on them. The goal: the audit at least half the
reading speed.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.environment import describe

GOAL_SHARE_OF_READING = 0.5


def _write_windows(scratch: Path, requests: int) -> tuple[Path, tuple, tuple]:
    from pipelines.label_files import label_events, write_examples
    from config.join import LabelConfig
    from simulator import Simulation, SimulatorConfig

    labels = LabelConfig(click_window_s=1800, cart_window_s=3600, purchase_window_s=2 * 86400)
    config = SimulatorConfig.model_validate({"requests": requests, "days": 4.0, "seed": 3,
                                             "catalogue": {"users": 20_000, "items": 2_000}})
    events = [(e.name, e.datum) for e in Simulation(config).events()]
    examples = label_events(events, labels, watermark_ms=config.end_ms + 10 * 86_400_000)
    write_examples(examples, scratch, {"benchmark": "audit"})
    day = 86_400_000
    return scratch, (config.start_ms, config.start_ms + day), (config.start_ms + day, config.start_ms + 2 * day)


def run_audit_benchmark(requests: int, repeats: int = 3) -> dict:
    from config.audit import AuditConfig
    from valueloop.audit import run_audit
    from audit.windows import load_window

    with tempfile.TemporaryDirectory(prefix="valueloop-bench-audit-") as scratch:
        examples, reference, current = _write_windows(Path(scratch), requests)
        runs = {"reading": [], "audit": []}
        n = 0
        load_window(examples, *reference)  # TensorFlow's first read traces its graphs: not the reading measured
        for _ in range(repeats):
            start = time.perf_counter()
            windows = [load_window(examples, *reference), load_window(examples, *current)]
            runs["reading"].append(time.perf_counter() - start)
            n = sum(w.size for w in windows)
            del windows
            start = time.perf_counter()
            verdict = run_audit(examples, reference, current, None, AuditConfig(), Path(scratch) / "audit")
            runs["audit"].append(time.perf_counter() - start)
    median = {path: sorted(seconds)[len(seconds) // 2] for path, seconds in runs.items()}
    rate = {path: round(n / s) for path, s in median.items()}
    share = rate["audit"] / rate["reading"]
    return {"benchmark": "audit", "environment": describe(("numpy", "scipy", "tensorflow")),
            "settings": {"requests": requests, "repeats": repeats, "reported": "median run per path"},
            "results": {path: {"examples": n, "seconds_of_each_run": [round(s, 3) for s in runs[path]],
                               "examples_per_s": rate[path]} for path in runs},
            "summary": {"examples": n, "reading_examples_per_s": rate["reading"],
                        "audit_examples_per_s": rate["audit"], "audit_vs_reading": round(share, 3),
                        "verdict": verdict.status.value, "goal_audit_vs_reading_at_least": GOAL_SHARE_OF_READING,
                        "goal_met": share >= GOAL_SHARE_OF_READING}}
