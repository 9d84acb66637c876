"""`python -m bench.ingest_codes --before REV`: `bench ingest`'s ratios of two codes, measured in turns in one run.

A restructuring is held to "no slower than before", but the ingest ratios of one code move by more than 10%
between runs on this shared machine. So the two codes take turns here: worktrees at REV and at `--after`
(HEAD by default) each run the harness of `--after` (`bench/ingest.py`, copied into REV's worktree so the two
are measured alike) in a child process, alternately, `--turns` times each, each code first in every other
turn. Reported: each code's ratios per turn, their medians, and
the current code's medians over REV's.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from bench.environment import describe

ROOT = Path(__file__).resolve().parent.parent
RATIOS = ("vs_kafka_python_send_per_message", "vs_confluent_kafka_callback_per_message", "vs_encoding_alone",
          "end_to_end_vs_simulator_alone")
BUILT = ("schemas/_native.cpython-311-x86_64-linux-gnu.so", "pipelines/_tf_example.cpython-311-x86_64-linux-gnu.so")
CHILD = ("import json, sys; from config import load_settings; from bench.ingest import run_ingest_benchmark; "
         "print(json.dumps(run_ingest_benchmark(load_settings(None), int(sys.argv[1]), 2, int(sys.argv[2]))))")


def worktree(rev: str, where: Path, harness: str) -> Path:
    """A checkout of `rev` with the current harness and the built extensions (their C sources must be unchanged)."""
    if where.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=ROOT, check=False)
        shutil.rmtree(where, ignore_errors=True)
    subprocess.run(["git", "worktree", "add", "--force", "--detach", str(where), rev], cwd=ROOT, check=True,
                   capture_output=True)
    for built in BUILT:
        source = built.split(".cpython")[0] + ".c"
        changed = subprocess.run(["git", "diff", "--quiet", rev, "HEAD", "--", source], cwd=ROOT).returncode
        if changed:
            raise SystemExit(f"{source} differs between {rev} and HEAD: build {rev}'s extensions first")
        shutil.copy(ROOT / built, where / built)
    (where / "bench/ingest.py").write_bytes(subprocess.run(["git", "show", f"{harness}:bench/ingest.py"], cwd=ROOT,
                                                           check=True, capture_output=True).stdout)
    return where


def one_run(tree: Path, requests: int, rounds: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(requests), str(rounds)], cwd=tree, check=True,
                          capture_output=True, text=True, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})
    return json.loads(done.stdout.strip().splitlines()[-1])["summary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the code to compare with (a commit)")
    parser.add_argument("--after", default="HEAD", help="the code compared (a commit)")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of `bench ingest` per turn")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/ingest_codes.json")
    options = parser.parse_args()
    after = subprocess.run(["git", "rev-parse", "--short", options.after], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.strip()
    trees = {"before": worktree(options.before, Path("/tmp/valueloop-ingest-before"), after),
             "after": worktree(after, Path("/tmp/valueloop-ingest-after"), after)}
    turns = {"before": [], "after": []}
    for turn in range(options.turns):
        order = ("before", "after") if turn % 2 == 0 else ("after", "before")  # neither always runs first
        for name, tree in ((name, trees[name]) for name in order):
            turns[name].append(one_run(tree, options.requests, options.rounds))
            print(name, json.dumps({r: turns[name][-1][r] for r in RATIOS}), flush=True)
    medians = {name: {r: statistics.median(t[r] for t in runs) for r in RATIOS} for name, runs in turns.items()}
    result = {
        "benchmark": "ingest_codes",
        "environment": describe(("kafka-python", "confluent-kafka", "fastavro")),
        "settings": {"before": options.before, "after": after, "turns": options.turns, "rounds_per_turn": options.rounds,
                     "requests": options.requests, "order": "in turns, before first in even turns, after first in odd"},
        "turns": {name: [{r: t[r] for r in RATIOS} for t in runs] for name, runs in turns.items()},
        "medians": medians,
        "after_over_before": {r: round(medians["after"][r] / medians["before"][r], 3) for r in RATIOS},
    }
    options.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["after_over_before"]))


if __name__ == "__main__":
    main()
