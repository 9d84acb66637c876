"""`valueloop census`: the MMoE paper's real-data check on UCI census-income, against baselines."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from bench.census import KINDS
from valueloop.cli.common import record


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
    from bench.census import run_census
    from trainer.census import TASKS

    table, recorded = run_census(seed, epochs, experts, ensemble, batch_size, dropout, tuple(kinds), inner,
                                 verbose=1 if sys.stderr.isatty() else 0)
    digits = 5 if inner else 4
    typer.echo(f"{'model (inner split)' if inner else 'model':<32}" + "".join(f"{t + ' AUC':>22}" for t in TASKS))
    for name, aucs in table.items():
        typer.echo(f"{name:<32}" + "".join(f"{aucs[t]:>22.{digits}f}" for t in TASKS))
    if recorded is not None:
        record(recorded, out)
