"""`valueloop ab run` and `valueloop ab analyse`: a split test by user on the simulated world, and its analysis."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Optional

import typer

from ab.analysis import SRM_P
from schemas.units import epoch_ms
from valueloop.ab import analyse_logs, run_split_test
from valueloop.cli.common import ConfigOption, broker_up, fail, running_job, settings_from

app = typer.Typer(help="A/B tests: run a split by user on the simulated world; analyse two arms' logs.",
                  no_args_is_help=True)


@app.command()
def run(config: Optional[Path] = ConfigOption,
        control: str = typer.Option("logging", help="`logging` (the world's click-trained policy), `production` or "
                                                    "`candidate` (the registry's), or a SavedModel directory."),
        treatment: str = typer.Option(..., help="As --control; a model ranks by its value score."),
        requests: int = typer.Option(20_000, min=100, help="Requests per simulated day."),
        days: int = typer.Option(1, min=1, help="Test days, after one pre-period day served by the logging policy."),
        treatment_share: float = typer.Option(0.5, min=0.01, max=0.99, help="Share of users in the treatment."),
        seed: int = typer.Option(7, help="World, traffic and assignment seed."),
        out: Path = typer.Option(Path("out/ab"), help="Examples and the analysis go here.")):
    """Serve a split test through Kafka and the join, then analyse it (as `valueloop ab analyse`)."""
    settings = settings_from(config)
    broker_up(settings)
    with running_job(settings, "the split test stopped; run it again"):
        test = run_split_test(settings, out, control, treatment, requests, days, treatment_share, seed,
                              echo=typer.echo)
    (out / "test.json").write_text(json.dumps(test, indent=2) + "\n")
    _analyse(Path(test["examples"]), tuple(test["test"]), test["control"], test["treatment"],
             tuple(test["pre_period"]), treatment_share, out / "analysis.json")


def _ms(text: str) -> int:
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        fail(f"{text!r}: not an ISO date or time", code=2)
    return epoch_ms(stamp)


@app.command()
def analyse(examples: Path = typer.Option(..., exists=True, file_okay=False, help="The join's example partitions."),
            control: str = typer.Option(..., help="The control arm's logged policy name."),
            treatment: str = typer.Option(..., help="The treatment arm's logged policy name."),
            start: str = typer.Option(..., "--from", help="Test window start (ISO, UTC)."),
            end: str = typer.Option(..., "--to", help="Test window end (ISO, UTC)."),
            pre_from: Optional[str] = typer.Option(None, help="Pre-period start, for CUPED."),
            pre_to: Optional[str] = typer.Option(None, help="Pre-period end, for CUPED."),
            treatment_share: float = typer.Option(0.5, min=0.01, max=0.99, help="The designed treatment share."),
            out: Optional[Path] = typer.Option(None, help="Write the analysis here as JSON.")):
    """Lifts in purchases and clicks per impression and per user, with delta-method intervals over users,
    CUPED with a pre-period, and the sample-ratio check. Exits 3 when the split is invalid (mismatch)."""
    pre = (_ms(pre_from), _ms(pre_to)) if pre_from and pre_to else None
    _analyse(examples, (_ms(start), _ms(end)), control, treatment, pre, treatment_share, out)


def _analyse(examples, test, control, treatment, pre, share, out: Optional[Path]) -> None:
    try:
        result = analyse_logs(examples, test, control, treatment, pre, share)
    except (ValueError, FileNotFoundError) as error:
        fail(str(error))
    srm = result.sample_ratio
    typer.echo(f"users: {', '.join(f'{k} {v:,}' for k, v in srm.users.items())}; sample-ratio chi-square "
               f"{srm.chi_square:.2f}, p = {srm.p_value:.2g}")
    typer.echo(f"\n{'metric':<26}{'cuped':>6}{'control':>10}{'treatment':>11}{'lift':>8}{'95% interval':>20}"
               f"{'p':>10}{'power':>7}{'var. cut':>9}")
    for lift in result.lifts:
        low, high = lift.relative_interval
        typer.echo(f"{lift.metric:<26}{'yes' if lift.cuped else 'no':>6}{lift.control:>10.4f}{lift.treatment:>11.4f}"
                   f"{lift.relative:>+8.1%}{f'[{low:+.1%}, {high:+.1%}]':>20}{lift.p_value:>10.2g}{lift.power:>7.2f}"
                   f"{lift.variance_reduction:>9.0%}")
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    if not result.valid:
        typer.secho(f"\nINVALID TEST: sample-ratio mismatch (p = {srm.p_value:.2g} < {SRM_P}): the arms' user "
                    "counts are unlikely under the designed split; the assignment or the logging is broken, so "
                    "none of the lifts above is to be believed", fg=typer.colors.RED, err=True)
        raise typer.Exit(3)
