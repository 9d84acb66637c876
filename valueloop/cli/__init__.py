"""The `valueloop` command: `valueloop --help` is the manual.

One module per area (kafka, simulate, join and label, train and evaluate, audit, the registry, the loop, split
tests, Airflow, the demo); each command parses typed options and calls one function of the package that does the
work. The benchmarks and the census check join as entry points (`bench/cli.py`).
"""
from __future__ import annotations

import valueloop  # noqa: F401  (quiets TensorFlow and sets TF_USE_LEGACY_KERAS before anything imports it)

import importlib.metadata

import typer

from valueloop.cli import ab, airflow, audit, demo, join, kafka, loop, model, registry, simulate

app = typer.Typer(help="valueloop: a feedback-loop training pipeline that ranks by what users value, not by clicks.",
                  no_args_is_help=True, add_completion=False)
app.add_typer(kafka.app, name="kafka")
app.add_typer(airflow.app, name="airflow")
app.add_typer(ab.app, name="ab")
app.add_typer(audit.app, name="audit")
app.add_typer(join.app, name="join")
for command in (simulate.simulate, join.label, model.train, model.evaluate, registry.models,
                registry.register, registry.promote, registry.rollback, loop.loop, demo.demo):
    app.command()(command)
# Commands of other packages, declared as `valueloop.commands` entry points: the benchmarks and the census check
# (`bench/cli.py`), which import the product and so are never imported by it.
for entry in importlib.metadata.entry_points(group="valueloop.commands"):
    command = entry.load()
    if isinstance(command, typer.Typer):
        app.add_typer(command, name=entry.name)
    else:
        app.command(name=entry.name)(command)


def main() -> None:
    app()
