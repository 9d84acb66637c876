"""`valueloop demo`: what `make demo` runs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from valueloop.cli.common import ConfigOption, broker_up, fail, log_to_stderr, running_job, settings_from
from valueloop.cli.model import report_evaluation
from valueloop.demo import DEMO_DIR, check_split, run_demo, run_loop


def demo(config: Optional[Path] = ConfigOption,
         requests: int = typer.Option(30_000, min=1, help="Ranking requests; 30,000 make about 400,000 events."),
         days: float = typer.Option(8.0, help="Simulated days of traffic."),
         train_days: float = typer.Option(4.0, help="Days the models train on; the days after them, up to the last "
                                                    "the purchase window settles, evaluate."),
         purchase_window_days: float = typer.Option(2.0, help="Purchase attribution window; the hours before the "
                                                              "last such window are labeled."),
         loop_requests: int = typer.Option(6_000, min=100, help="Requests per simulated day of the loop's own "
                                                                "world (four days: two as before, two with bait).")):
    """The loop on a small world: Kafka, the Beam join, the value model and the CTR-only baseline, the trap.

    Starts a local Kafka node and simulates traffic into it; joins this run's events into labeled examples with
    Beam (FnApiRunner); trains the multi-task value model and the CTR-only baseline on the first days; re-ranks
    the later days' requests with each and scores them against the world's hidden truth. Exits 1 if the value
    model does not escape the trap the baseline falls into. Then the loop, as the retraining DAG runs it: a
    first retraining that promotes, then a clickbait-shifted day whose candidate is held back with an alert.
    Everything it writes goes under out/demo/.
    """
    settings = settings_from(config)
    try:
        check_split(days, train_days, purchase_window_days)
    except ValueError as error:
        fail(str(error))
    broker_up(settings)  # its errors as the command reports them
    try:
        with running_job(settings, "the demo stopped"):
            report = run_demo(settings, requests, days, train_days, purchase_window_days, echo=typer.echo)
        try:
            report_evaluation(report, DEMO_DIR / "evaluation")
        finally:
            log_to_stderr("valueloop.alerts")  # the log sink: on-call's alert, where the demo shows it
            with running_job(settings, "the demo stopped"):
                outcomes = run_loop(settings, loop_requests, echo=typer.echo)
        statuses = [o.status for o in outcomes.values()]
        if statuses[0] not in ("pass", "warn") or statuses[-1] != "block":
            fail(f"the loop did not promote and then block as it should: {statuses}")
    finally:
        typer.echo(f"\nkafka stays up for a look (kcat -b {settings.kafka.bootstrap_servers} -L); "
                   "`valueloop kafka down` stops it")
