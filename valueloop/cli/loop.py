"""`valueloop loop`: the closed loop, round after round, for each objective; a figure and JSON of every round."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from serving.propensities import Exploration
from valueloop.cli.common import ConfigOption, broker_up, running_job, settings_from
from valueloop.closed_loop import ROUND_HEADER, GateMode, Objective, plot_rounds, run_closed_loop, summarise


def with_serving(settings, exploration: Optional[Exploration], temperature: Optional[float],
                 epsilon: Optional[float]):
    """The settings with the serving options given on the command line; those not given keep the file's."""
    given = {"serving_exploration": exploration and exploration.value, "serving_temperature": temperature,
             "serving_epsilon": epsilon}
    given = {name: value for name, value in given.items() if value is not None}
    return settings.model_copy(update={"loop": settings.loop.model_copy(update=given)})


def loop(config: Optional[Path] = ConfigOption,
         rounds: int = typer.Option(10, min=2, help="Rounds (simulated days); the first is served by the logging "
                                                    "policy, retraining starts on the second."),
         objective: List[Objective] = typer.Option([Objective.CTR, Objective.VALUE],
                                                   help="What the retrained ranker optimises; give it twice for both."),
         requests: int = typer.Option(20_000, min=100, help="Requests per round."),
         seed: List[int] = typer.Option([7], help="World and traffic seed; give several to repeat the loop."),
         exploration: Optional[Exploration] = typer.Option(None, help="How production samples each slate from "
                                                                      "its model's scores [default: "
                                                                      "loop.serving_exploration, plackett-luce]."),
         temperature: Optional[float] = typer.Option(None, min=0.01, help="Plackett-Luce temperature, over the "
                                                     "model's scores standardised per request [default: "
                                                     "loop.serving_temperature, 0.5]."),
         epsilon: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Epsilon-greedy's share of uniform "
                                                 "picks [default: loop.serving_epsilon, 0.1]."),
         gate: GateMode = typer.Option(GateMode.ENFORCE, help="enforce: a candidate the audit does not pass stays out "
                                                              "of production; record: its verdict is recorded and it "
                                                              "is promoted anyway (a logged override)."),
         out: Path = typer.Option(Path("out/closed-loop"), help="Where every round's data, models and audits go.")):
    """Run the loop as a loop: each round serves a simulated day with production, retrains, audits, promotes.

    Prints every round's CTR, purchases per 1000 impressions, bait share, true utility, regret against the
    oracle and homogenisation (all from the simulator's hidden truth) and what the gate decided; writes
    rounds.json and rounds.png under --out.
    """
    settings = with_serving(settings_from(config), exploration, temperature, epsilon)
    broker_up(settings)
    typer.echo(ROUND_HEADER)
    results = []
    with running_job(settings, "the loop stopped; the rounds so far are under --out"):
        for s in seed:
            for o in objective:
                results.append(run_closed_loop(settings, o, rounds, requests, s, out / f"seed-{s}", gate,
                                               echo=typer.echo))
    summary = summarise(results)
    (out / "rounds.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=2) + "\n")
    figure = plot_rounds(results, out / "rounds.png")
    for s, line in summary.items():
        typer.echo(f"seed {s}: bait share under ctr {line['ctr_bait_share'][0]:.3f} -> "
                   f"{line['ctr_bait_share'][1]:.3f}, "
                   f"under value {line['value_bait_share'][0]:.3f} -> {line['value_bait_share'][1]:.3f}; "
                   f"last round purchases/1000 value {line['final_purchases_per_1000']['value']:.2f} vs ctr "
                   f"{line['final_purchases_per_1000']['ctr']:.2f} ({line['final_purchase_lift']:+.0%})")
    typer.echo(f"figure: {figure}; every round: {out / 'rounds.json'}")
