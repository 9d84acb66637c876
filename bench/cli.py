"""`valueloop bench ingest | join | stream | train | ...` and `valueloop census`: the benchmarks and the census
check, each writing JSON under bench/results/.

The product never imports this package: `valueloop` finds these commands through the `valueloop.commands` entry
points that setup.py declares."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer

from config.join import Runner
from bench.census import KINDS, run_census
from valueloop.cli.common import ConfigOption, broker_up, record, settings_from

app = typer.Typer(help="Benchmarks; each writes JSON under bench/results/ (bench/README.md).", no_args_is_help=True)


@app.command("ingest")
def ingest(
    config: Optional[Path] = ConfigOption,
    requests: int = typer.Option(20_000, min=1, help="Ranking requests to simulate (about 13 events each)."),
    workers: int = typer.Option(2, min=1, help="Worker processes per path; events are split between them by key."),
    repeats: int = typer.Option(5, min=1, help="Rounds; each runs every path once, in turns, and the median of "
                                               "the rounds' ratios is reported."),
    out: Path = typer.Option(Path("bench/results/ingest.json"), help="Where the JSON result goes."),
):
    """Events/s into the broker through valueloop's producer (librdkafka), beside kafka-python and encoding alone."""
    from bench.ingest import run_ingest_benchmark

    settings = settings_from(config)
    broker_up(settings)
    record(run_ingest_benchmark(settings, requests=requests, workers=workers, repeats=repeats), out)


@app.command("train")
def train(
    config: Optional[Path] = ConfigOption,
    requests: int = typer.Option(60_000, min=1, help="Ranking requests to simulate (10 impressions each)."),
    repeats: int = typer.Option(2, min=1, help="Timed training runs per path; the median is reported."),
    out: Path = typer.Option(Path("bench/results/train.json"), help="Where the JSON result goes."),
):
    """Training examples/s of the value model from TFRecord partitions beside the same examples in memory."""
    from bench.train import run_train_benchmark

    record(run_train_benchmark(settings_from(config).trainer, requests=requests, repeats=repeats), out)


@app.command("join")
def join(
    config: Optional[Path] = ConfigOption,
    requests: int = typer.Option(20_000, min=1, help="Ranking requests to simulate (about 13 events each)."),
    days: float = typer.Option(10.0, help="Simulated days: the join labels only hours its windows have settled."),
    repeats: int = typer.Option(3, min=1, help="Runs of each path; the median run is reported."),
    out: Path = typer.Option(Path("bench/results/join.json"), help="Where the JSON result goes."),
):
    """Events/s and peak memory of the bounded join (Kafka to TFRecords) beside the plain reference labeler."""
    from bench.join import run_join_benchmark

    settings = settings_from(config)
    broker_up(settings)
    with tempfile.TemporaryDirectory(prefix="valueloop-bench-join-") as scratch:
        record(run_join_benchmark(settings, requests=requests, days=days, output_dir=Path(scratch),
                                  repeats=repeats), out)


@app.command("stream")
def stream(
    config: Optional[Path] = ConfigOption,
    requests: int = typer.Option(1_000, min=1, help="Ranking requests to simulate (about 13 events each)."),
    days: float = typer.Option(3.0, help="Simulated days in the backlog."),
    users: int = typer.Option(80, min=1, help="Users: fewer users, longer histories in each user's state."),
    items: int = typer.Option(40, min=1, help="Items in the catalogue."),
    runner: list[Runner] = typer.Option([Runner.FLINK, Runner.DIRECT], help="Runners to measure (direct streams "
                                                                            "on Prism)."),
    out: Path = typer.Option(Path("bench/results/stream.json"), help="Where the JSON result goes."),
):
    """Seconds for the streaming join to catch up with a backlog, on each runner beside its bounded join."""
    from bench.stream import run_stream_benchmark

    settings = settings_from(config)
    broker_up(settings)
    with tempfile.TemporaryDirectory(prefix="valueloop-bench-stream-") as scratch:
        record(run_stream_benchmark(settings, requests=requests, days=days, users=users, items=items,
                                    scratch=Path(scratch), runners=tuple(r.value for r in runner)), out)


@app.command("stream-profile")
def stream_profile(
    config: Optional[Path] = ConfigOption,
    requests: int = typer.Option(90_000, min=1, help="Ranking requests to simulate (about 11 events each)."),
    days: float = typer.Option(7.0, help="Simulated days in the backlog."),
    users: int = typer.Option(20_000, min=1, help="Users in the world."),
    items: int = typer.Option(2_000, min=1, help="Items in the catalogue."),
    seconds: float = typer.Option(300.0, min=10, help="How long each runner's stream runs."),
    runner: list[Runner] = typer.Option([Runner.FLINK, Runner.DIRECT], help="Runners to profile (direct streams "
                                                                            "on Prism)."),
    out: Path = typer.Option(Path("bench/results/stream_profile.json"), help="Where the JSON result goes."),
):
    """Where the streaming join's time goes on a large backlog, under the settings' label windows: each runner's
    progress lines (records a source call, bundles, firings, labeling work, state read) over a fixed time."""
    from bench.stream import run_stream_profile

    settings = settings_from(config)
    broker_up(settings)
    with tempfile.TemporaryDirectory(prefix="valueloop-bench-stream-profile-") as scratch:
        record(run_stream_profile(settings, requests=requests, days=days, users=users, items=items, seconds=seconds,
                                  scratch=Path(scratch), runners=tuple(r.value for r in runner)), out)


@app.command("audit-calibration")
def audit_calibration(
    pairs: int = typer.Option(100, min=1, help="No-drift window pairs to audit."),
    out: Path = typer.Option(Path("bench/results/audit_calibration.json"), help="Where the JSON result goes."),
):
    """How often the drift audit blocks pairs of windows between which nothing drifted (goal: at most 5%)."""
    from bench.audit_calibration import calibrate

    record(calibrate(pairs), out)


@app.command("audit")
def audit(
    requests: int = typer.Option(220_000, min=1, help="Ranking requests over four days; the two audited days hold "
                                                       "about half of their impressions (a million)."),
    repeats: int = typer.Option(3, min=1, help="Runs of each path; the median is reported."),
    out: Path = typer.Option(Path("bench/results/audit.json"), help="Where the JSON result goes."),
):
    """Examples/s of a whole drift audit beside reading the same examples alone (goal: at least half)."""
    from bench.audit import run_audit_benchmark

    record(run_audit_benchmark(requests, repeats), out)


@app.command("dags")
def dags(
    requests: int = typer.Option(30_000, min=1, help="Ranking requests over 2.5 simulated days; the retraining "
                                                      "trains on the first day and audits the second."),
    repeats: int = typer.Option(3, min=1, help="Runs of each path; the median is reported."),
    scheduler: bool = typer.Option(True, help="Also through the real scheduler (valueloop airflow up)."),
    out: Path = typer.Option(Path("bench/results/dags.json"), help="Where the JSON result goes."),
):
    """Each DAG file's parse time, and the retraining DAG end to end beside its tasks run directly (goal: at most
    20% more)."""
    from bench.dags import run_dags_benchmark

    record(run_dags_benchmark(requests, repeats, scheduler), out)


@app.command("loop")
def loop(
    config: Optional[Path] = ConfigOption,
    seed: list[int] = typer.Option([7, 8, 9], help="World and traffic seeds; each runs both objectives."),
    rounds: int = typer.Option(10, min=3, help="Rounds (simulated days) per loop."),
    requests: int = typer.Option(20_000, min=100, help="Requests per round."),
    gate: str = typer.Option("record", help="record (production moves whatever the verdict) or enforce."),
    out: Path = typer.Option(Path("bench/results/loop.json"), help="Where the JSON result goes; the figure beside "
                                                                   "it (.png)."),
):
    """Seconds per closed-loop round and where they go; the bait share and purchases of each objective's loop
    (goals: a round of 20,000 requests within 5 minutes; bait climbs under CTR only; value +25% purchases)."""
    from bench.loop import run_loop_benchmark

    settings = settings_from(config)
    broker_up(settings)
    with tempfile.TemporaryDirectory(prefix="valueloop-bench-loop-") as scratch:
        record(run_loop_benchmark(settings, seed, rounds, requests, Path(scratch), out.with_suffix(".png"), gate),
               out)


@app.command("gate")
def gate(
    config: Optional[Path] = ConfigOption,
    seed: list[int] = typer.Option([7, 8, 9], help="World and traffic seeds; each runs the value loop."),
    rounds: int = typer.Option(8, min=3, help="Rounds (simulated days) per loop; every round from the third is an "
                                              "audited day."),
    requests: int = typer.Option(4_000, min=100, help="Requests per round."),
    out: Path = typer.Option(Path("bench/results/gate.json"), help="Where the JSON result goes."),
    keep: Optional[Path] = typer.Option(None, help="Keep the loops' runs and judged candidates here. A run "
                                                   "there already is not run again, and a candidate judged there "
                                                   "under the same gate settings is not judged again, so a stopped "
                                                   "run resumes. Clear it when the gate's code changes."),
):
    """The gate's decisions against the simulator's truth: false blocks of healthy candidates, misses of harmful
    ones, the A/A, the off-policy intervals' coverage of the truth (goals: at most 5%, at most 5%, at least 95%
    passing, at least 90%)."""
    from bench.gate import run_gate_benchmark

    settings = settings_from(config)
    broker_up(settings)
    with tempfile.TemporaryDirectory(prefix="valueloop-bench-gate-") as scratch:
        record(run_gate_benchmark(settings, seed, rounds, requests, keep or Path(scratch),
                                  echo=lambda line: print(line, flush=True)), out)


@app.command("gate-merge")
def gate_merge(
    parts: list[Path] = typer.Argument(..., help="`bench gate` results (JSON), one per run, e.g. one per seed."),
    out: Path = typer.Option(Path("bench/results/gate.json"), help="Where the merged JSON result goes."),
):
    """Several `bench gate` runs judged under the same gate settings, as one result summarised again."""
    from bench.gate import merge_gate_results

    try:
        merged = merge_gate_results([json.loads(part.read_text()) for part in parts])
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    record(merged, out)


def census(
    seed: int = typer.Option(0, help="Seed of the 80/20 split."),
    epochs: int = typer.Option(30, min=1, help="Most passes per model; a tenth of the training split stops it early."),
    experts: int = typer.Option(16, min=1, help="MMoE experts (the shared-bottom network gets the same units in one)."),
    ensemble: int = typer.Option(10, min=1, help="Networks per model kind, one per seed and held-out tenth; each "
                                                 "kind scores their mean."),
    batch_size: int = typer.Option(512, min=1, help="Examples per training step."),
    dropout: float = typer.Option(0.2, help="Dropout after each expert (or shared-bottom) layer, the same for every "
                                            "kind; chosen on the inner split (docs/census.md)."),
    kinds: list[str] = typer.Option(list(KINDS), help="Model kinds to train (with --inner; a recorded run trains all)."),
    inner: bool = typer.Option(False, help="Train and score on a seeded 80/20 split of the training rows alone, "
                                           "never the test split: for choosing settings."),
    out: Path = typer.Option(Path("bench/results/census.json"), help="Where the JSON result goes."),
):
    """The MMoE paper's real-data check: income and never-married on UCI census-income, against baselines."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise typer.BadParameter(f"unknown kinds {sorted(unknown)}; the kinds are {list(KINDS)}", param_hint="--kinds")
    if not 0.0 <= dropout < 1.0:
        raise typer.BadParameter(f"{dropout} is not a dropout rate: it lies in [0, 1)", param_hint="--dropout")
    if set(kinds) != set(KINDS) and not inner:
        raise typer.BadParameter("a recorded run trains every kind; choose kinds with --inner", param_hint="--kinds")
    from trainer.census import TASKS  # TensorFlow: loaded by a census run, not by `valueloop --help`

    table, recorded = run_census(seed, epochs, experts, ensemble, batch_size, dropout, tuple(kinds), inner,
                                 verbose=1 if sys.stderr.isatty() else 0)
    digits = 5 if inner else 4
    typer.echo(f"{'model (inner split)' if inner else 'model':<32}" + "".join(f"{t + ' AUC':>22}" for t in TASKS))
    for name, aucs in table.items():
        typer.echo(f"{name:<32}" + "".join(f"{aucs[t]:>22.{digits}f}" for t in TASKS))
    if recorded is not None:
        record(recorded, out)
