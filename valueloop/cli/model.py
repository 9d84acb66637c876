"""`valueloop train` (the multi-task ranker or the CTR-only baseline) and `valueloop evaluate` (models on a later
range, against the world's hidden truth)."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from config.trainer import Preset
from config.trainer import preset as choose
from simulator.world import World
from trainer import evaluate as ev
from trainer.evaluate import evaluate_range
from valueloop.cli.common import ConfigOption, fail, hour_option, parse_hour, settings_from


def train(
    config: Optional[Path] = ConfigOption,
    examples: Path = typer.Option(Path("out/examples"), help="The join's partitions (dt=.../hour=.../)."),
    start: Optional[str] = hour_option("--from", "Train on impressions from this hour (ISO, UTC)."),
    end: Optional[str] = hour_option("--to", "... up to this hour, exclusive."),
    preset: Preset = typer.Option(Preset.VALUE, help="value: multi-task, ranked by expected value; ctr: clicks only."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Passes over the training range."),
    out: Path = typer.Option(Path("out/models/value"), help="SavedModel directory to write."),
):
    """Train the multi-task ranker (or the CTR-only baseline) on a range of the join's output and export it."""
    from trainer.train import train as run_training

    train_config = choose(settings_from(config).trainer, preset.value)
    if epochs is not None:
        train_config = train_config.model_copy(update={"epochs": epochs})
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Keras' progress goes beside the log; stdout holds the result
            metadata = run_training(train_config, examples, parse_hour(start, "--from"), parse_hour(end, "--to"),
                                    out, verbose=1 if sys.stderr.isatty() else 2)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    typer.echo(json.dumps({"model": str(out), "examples": metadata["data"]["examples"],
                           "label_strategy": metadata["data"]["label_strategy"], **metadata["training"]}, indent=2))


def evaluate(
    models: list[Path] = typer.Option(..., "--model", help="A SavedModel from `valueloop train`; repeat to compare."),
    examples: Path = typer.Option(Path("out/examples"), help="The join's partitions."),
    start: Optional[str] = hour_option("--from", "Evaluate on impressions from this hour: after training's range."),
    end: Optional[str] = hour_option("--to", "... up to this hour, exclusive."),
    ground_truth: Optional[Path] = typer.Option(None, help="The simulator's ground_truth.npz, for true outcomes."),
    k: int = typer.Option(3, min=1, help="Top k of each re-ranked request."),
    baseline: Optional[str] = typer.Option(None, help="Name (directory) of the baseline model; the first --model is "
                                                      "checked against it for the clickbait trap."),
    min_purchase_lift: float = typer.Option(0.25, help="Least lift in true purchases per 1000 over the baseline."),
    out: Path = typer.Option(Path("out/evaluation"), help="Directory for evaluation.json and the plots."),
):
    """Score models on a later range: task AUC, log loss, calibration; re-ranked requests; the hidden truth.

    Exits 1 when --baseline is given and the first model does not escape the trap it shows.
    """
    if baseline is not None and ground_truth is None:
        fail(f"--baseline {baseline!r} needs --ground-truth: the trap is judged by the world's truth")
    try:
        world = World.load(ground_truth) if ground_truth is not None else None
        report = evaluate_range(models, examples, parse_hour(start, "--from"), parse_hour(end, "--to"),
                                world, k, baseline, min_purchase_lift)
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    report_evaluation(report, out)


def report_evaluation(report: dict, out: Path) -> None:
    """Writes the evaluation's JSON and plots, prints its table and the trap verdict; exits 1 if the verdict fails."""
    path = ev.write_report(report, out)
    plots = ev.plot(report, out)
    typer.echo(ev.table(report))
    verdict = report.get("verdict")
    if verdict is not None:
        typer.echo("\n" + "\n".join(ev.verdict_lines(verdict)))
    typer.echo(f"written: {path}, {', '.join(str(p) for p in plots)}")
    if verdict is not None and not verdict["passed"]:
        raise typer.Exit(1)
