"""The `valueloop` command: `valueloop --help` is the manual.

One module per area (kafka, simulate, join and label, train and evaluate, audit, the registry, census, demo, bench); each command
parses typed options and calls one function of the package that does the work.
"""
from __future__ import annotations

import valueloop  # noqa: F401  (quiets TensorFlow and sets TF_USE_LEGACY_KERAS before anything imports it)

import typer

from valueloop.cli import ab, airflow, audit, bench, census, demo, join, kafka, loop, model, registry, simulate

app = typer.Typer(help="valueloop: a feedback-loop training pipeline that ranks by what users value, not by clicks.",
                  no_args_is_help=True, add_completion=False)
app.add_typer(kafka.app, name="kafka")
app.add_typer(bench.app, name="bench")
app.add_typer(airflow.app, name="airflow")
app.add_typer(ab.app, name="ab")
for command in (simulate.simulate, join.join, join.label, model.train, model.evaluate, audit.audit, registry.models,
                registry.register, registry.promote, registry.rollback, loop.loop, census.census, demo.demo):
    app.command()(command)


def main() -> None:
    app()
