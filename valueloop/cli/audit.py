"""`valueloop audit`: the drift audit of a window of labeled examples against a reference window; `valueloop
audit history`: one page of every day the loop audited."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from audit.windows import WindowError
from config import alert_book
from valueloop.audit import run_audit
from valueloop.cli.common import ConfigOption, fail, hour_option, parse_hour, settings_from
from valueloop.history import write_history

app = typer.Typer(invoke_without_command=True, add_completion=False)


@app.callback()
def audit(
    context: typer.Context,
    config: Optional[Path] = ConfigOption,
    examples: Path = typer.Option(Path("out/examples"), help="The join's partitions (dt=.../hour=.../)."),
    reference_from: Optional[str] = hour_option("--reference-from", "The reference window's first hour (ISO, UTC)."),
    reference_to: Optional[str] = hour_option("--reference-to", "... up to this hour, exclusive."),
    start: Optional[str] = hour_option("--from", "The audited window's first hour (ISO, UTC)."),
    end: Optional[str] = hour_option("--to", "... up to this hour, exclusive."),
    now: Optional[str] = hour_option("--now", "When the window is audited, if its conversions are still coming: "
                                              "conversion is then compared at equal age after the click."),
    candidate: Optional[Path] = typer.Option(None, help="The candidate SavedModel: scored on the audited window "
                                                        "against --production, and put through the model gate."),
    production: Optional[Path] = typer.Option(None, help="Production's SavedModel; without it the candidate is "
                                                         "the first model, judged on the gate's absolute bounds."),
    out: Path = typer.Option(Path("out/audit"), help="Directory for verdict.json and report.html."),
    alerts: bool = typer.Option(True, help="Alert the sinks the environment names (and the log) when blocked; "
                                           "open alerts are kept in loop.alerts_file."),
):
    """Compare a window's engagement and conversion with a reference's (and, given models, the candidate's
    predictions and metrics with production's on that window); exit 0 when promotion may go ahead,
    1 when the clickbait signature blocks it, 2 when there is too little data to say. `valueloop audit history`
    writes one page of every day the loop audited."""
    if context.invoked_subcommand is not None:
        return
    settings = settings_from(config)
    if production is not None and candidate is None:
        fail("--production needs --candidate: the gate compares a candidate with it", code=2)
    book = alert_book(settings) if alerts else None
    try:
        verdict = run_audit(examples, (parse_hour(reference_from, "--reference-from"),
                                       parse_hour(reference_to, "--reference-to")),
                            (parse_hour(start, "--from"), parse_hour(end, "--to")), parse_hour(now, "--now"),
                            settings.audit, out, book, candidate, production,
                            settings.trainer.model.long_dwell_ms)
    except (WindowError, ValueError, FileNotFoundError) as error:
        fail(str(error))
    for reason in verdict.reasons:
        typer.echo(f"  {reason}")
    typer.echo(f"written: {out / 'verdict.json'}, {out / 'report.html'}")
    said = {0: "promotion may go ahead", 1: "promotion blocked", 2: "inconclusive: promotion blocked"}
    typer.echo(f"audit {verdict.status.value}: {said[verdict.status.exit_code]}")
    raise typer.Exit(verdict.status.exit_code)


@app.command("history")
def history(
    config: Optional[Path] = ConfigOption,
    out: Path = typer.Option(Path("out/audit-history.html"), help="Where the page goes."),
):
    """One HTML page of every day under loop.work_dir the loop audited: the verdicts and what fired, CTR and
    purchases at equal age, the served and off-policy estimates, the truth where known, the promotions (the
    canaries' among them) and the open alerts, with their trends."""
    settings = settings_from(config)
    if not Path(settings.loop.work_dir).is_dir():
        fail(f"{settings.loop.work_dir} (loop.work_dir) holds no audited days yet", code=2)
    typer.echo(f"written: {write_history(settings, out)}")
