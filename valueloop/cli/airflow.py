"""`valueloop airflow up | down | status`: a local Airflow on PostgreSQL running the loop's DAGs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from valueloop.cli.common import ConfigOption, fail, settings_from
from valueloop.scheduling.local import AirflowError, LocalAirflow

app = typer.Typer(help="A local Airflow (api-server, scheduler, dag-processor, triggerer; LocalExecutor) on "
                       "PostgreSQL, running the DAGs of dags/ with this project's settings.", no_args_is_help=True)


def _local(config: Optional[Path]):
    return LocalAirflow(settings_from(config).airflow, config)


def _run(config: Optional[Path], action: str) -> None:
    try:
        status = getattr(_local(config), action)()
    except AirflowError as error:
        fail(str(error))
    for line in status.lines():
        typer.echo(line)


@app.command()
def up(config: Optional[Path] = ConfigOption):
    """Start PostgreSQL and Airflow (or find them running); prints the UI's address."""
    _run(config, "up")


@app.command()
def down(config: Optional[Path] = ConfigOption):
    """Stop Airflow and its database, keeping their data."""
    _run(config, "down")


@app.command()
def status(config: Optional[Path] = ConfigOption):
    """What is running, and the api-server's health."""
    _run(config, "status")
