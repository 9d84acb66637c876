"""`valueloop simulate`: the world's traffic into the topics or Avro files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from simulator.run import Destination
from simulator.run import simulate as run_simulation
from valueloop.canary import serving_policy
from valueloop.cli.common import ConfigOption, running_job, settings_from
from valueloop.policies import policy_from


def simulate(
    config: Optional[Path] = ConfigOption,
    to: Destination = typer.Option(Destination.KAFKA, help="kafka: the event topics; files: Avro container files "
                                                           "under --out."),
    out: Path = typer.Option(Path("out/simulation"), help="Directory for Avro files and the ground truth."),
    requests: Optional[int] = typer.Option(None, help="Ranking requests to simulate (about 11 events each)."),
    days: Optional[float] = typer.Option(None, help="Simulated days the requests spread over."),
    seed: Optional[int] = typer.Option(None, help="World and traffic seed."),
    policy: str = typer.Option("logging", help="Who ranks the requests: `logging` (the world's click-trained "
                                               "policy), `production` or `candidate` (the registry's), or a "
                                               "SavedModel directory (valueloop.policies). While a canary is in "
                                               "flight, its control serves beside its candidate, split by user."),
):
    """Simulate the clickbait world: events to Kafka or Avro files, hidden ground truth to a separate file."""
    settings = settings_from(config)
    overrides = {k: v for k, v in {"requests": requests, "days": days, "seed": seed}.items() if v is not None}
    simulator = settings.simulator.model_copy(update=overrides)
    with running_job(settings, "the events sent so far stay in the topics"):
        serving = serving_policy(settings, policy, simulator.start.strftime("%Y-%m-%d")) or \
            policy_from(settings, policy)
        if len(serving.names) > 1:
            typer.echo(f"canary in flight: served by {' | '.join(serving.names)}", err=True)
        summary, truth = run_simulation(simulator, to, out, settings.kafka, serving, settings.loop.feature_store)
    typer.echo(f"ground truth (evaluation only): {truth}", err=True)
    typer.echo(json.dumps(summary.as_dict(), indent=2))
