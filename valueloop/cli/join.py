"""`valueloop join` (Kafka topics to labeled partitions, bounded or streaming), `valueloop join status` (where a
streaming join stands) and `valueloop label` (the simulator's Avro files to the same partitions, in one
process)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

import typer

from config.join import JoinMode, JoinSettings, LabelStrategy, LatenessReference, Runner
from pipelines.flink import MissingJobServerError, require_job_server
from pipelines.label_files import label_files
from pipelines.partitions import describe_partition, resume_hour_ms
from pipelines.run import run_bounded_join, run_streaming_join
from promotion.alerts import sinks_from_environment
from schemas.units import hour_text, utc
from valueloop.cli.common import ConfigOption, fail, log_to_stderr, parse_hour, running_job, settings_from
from valueloop.stream_lag import LagWatch, lag_of, warn_if_behind

app = typer.Typer(help="Join the event topics into labeled tf.Example partitions by event hour, with manifests; "
                       "`valueloop join status` says where a streaming join stands.")


@app.callback(invoke_without_command=True)
def join(
    context: typer.Context,
    config: Optional[Path] = ConfigOption,
    runner: Optional[Runner] = typer.Option(None, help="direct (FnApiRunner when bounded, Prism when streaming) or "
                                                       "flink; by default direct when bounded, flink when streaming."),
    mode: JoinMode = typer.Option(JoinMode.BOUNDED, help="bounded: fixed offset ranges, then exit; streaming: "
                                                         "follow the topics, writing each hour once settled."),
    start: Optional[str] = typer.Option(None, "--from", help="Label impressions from this hour (ISO, UTC)."),
    end: Optional[str] = typer.Option(None, "--to", help="... up to this hour, exclusive."),
    out: Optional[Path] = typer.Option(None, help="Output directory for the TFRecord partitions."),
    strategy: Optional[LabelStrategy] = typer.Option(None, help="How labels are released."),
    workers: Optional[int] = typer.Option(None, min=1, help="Worker processes for the direct runner."),
    resume: bool = typer.Option(False, "--resume", help="Streaming: start at the first hour missing from the "
                                                          "output (after a stop or a crash)."),
    lateness: Optional[LatenessReference] = typer.Option(None, help="What lateness is measured against: "
                                                                    "record_time, or event_time for replays."),
    accept_late: bool = typer.Option(False, "--accept-late", help="Exit 0 even when most events are late."),
):
    """Join the event topics into labeled tf.Example partitions by event hour, with manifests."""
    if context.invoked_subcommand is not None:
        return
    settings = settings_from(config)
    join_settings = _join_settings(settings.join, out, workers, strategy, lateness, accept_late)
    runner = runner or (Runner.FLINK if mode is JoinMode.STREAMING else Runner.DIRECT)
    _check_runner(runner, mode, join_settings)
    if resume and mode is not JoinMode.STREAMING:
        fail("--resume is for --mode streaming: a bounded run over the same offsets replaces its files anyway")
    if resume and start is not None:
        fail("--resume finds the hour to start at; give it or --from, not both")
    if mode is JoinMode.STREAMING:
        _follow(settings, join_settings, runner, parse_hour(start, "--from"), resume)
    else:
        _bounded(settings, join_settings, runner, parse_hour(start, "--from"), parse_hour(end, "--to"))


def _join_settings(base: JoinSettings, out, workers, strategy, lateness, accept_late) -> JoinSettings:
    updates = {k: v for k, v in {"output_dir": out, "direct_num_workers": workers,
                                  "lateness_reference": lateness}.items() if v is not None}
    if accept_late:
        updates["max_late_share"] = 1.0
    if strategy is not None:
        updates["labels"] = base.labels.model_copy(update={"strategy": strategy})
    return base.model_copy(update=updates)


def _check_runner(runner: Runner, mode: JoinMode, settings: JoinSettings) -> None:
    if runner is Runner.FLINK:
        try:
            require_job_server()
        except MissingJobServerError as error:
            fail(str(error))
    elif mode is JoinMode.STREAMING and not settings.prism_location.exists():
        fail(f"no Prism runner at {settings.prism_location}: run `make prism` (see infra/prism/README.md)")


def _bounded(settings, join_settings: JoinSettings, runner: Runner, from_ms, to_ms) -> None:
    with running_job(settings, "partitions written so far stand; running the same join again replaces them"):
        result = run_bounded_join(settings.kafka, join_settings, runner=runner.value, from_ms=from_ms, to_ms=to_ms)
    for manifest in result.manifests:
        typer.echo(describe_partition(manifest))
    typer.echo(json.dumps({"partitions": len(result.manifests), "counters": result.counters}, indent=2))


def _follow(settings, join_settings: JoinSettings, runner: Runner, from_ms, resume: bool) -> None:
    if resume:
        from_ms = resume_hour_ms(join_settings.output_dir)
        where = "the start of the topics" if from_ms is None else hour_text(from_ms)
        typer.echo(f"resuming at {where}", err=True)
    typer.echo(f"following {', '.join(settings.kafka.event_topics.values())}; writing settled hours to "
               f"{join_settings.output_dir}; stop with Ctrl-C or SIGTERM", err=True)
    log_to_stderr("valueloop.join")  # a line per hour written
    watched = settings.model_copy(update={"join": join_settings})
    with running_job(settings, "the hours written so far stand; `--resume` carries on at the first one missing"), \
            LagWatch(watched, sinks_from_environment()):
        run_streaming_join(settings.kafka, join_settings, runner=runner.value, from_ms=from_ms)


@app.command("status")
def status(
    config: Optional[Path] = ConfigOption,
    out: Optional[Path] = typer.Option(None, help="The streaming join's output directory."),
    alert: bool = typer.Option(False, "--alert", help="Also warn through the alert sinks that do not page when it "
                                                      "is falling behind (once a day), and resolve the warning when "
                                                      "it keeps up."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
):
    """Where the streaming join writing to the output directory stands: each partition's position against its
    end, the newest event time read, the watermark, and whether it is falling behind (exit 1) or has written no
    status (exit 2)."""
    settings = settings_from(config)
    if out is not None:
        settings = settings.model_copy(update={"join": settings.join.model_copy(update={"output_dir": out})})
    try:
        lag = lag_of(settings)
    except ValueError as error:
        fail(str(error), 2)
    if as_json:
        typer.echo(json.dumps({"falling_behind": lag.falling_behind, "reason": lag.reason,
                               "behind_for_s": lag.behind_for_ms / 1000,
                               "silent_for_s": None if lag.silent_for_ms is None else lag.silent_for_ms / 1000,
                               "status": None if lag.status is None else lag.status.as_dict()}, indent=2))
    elif lag.status is not None:
        typer.echo(f"status written {utc(lag.status.updated_ms).isoformat(timespec='seconds')} "
                   f"({lag.silent_for_ms / 1000:.0f} s ago)")
        typer.echo(f"{'topic':<28} {'partition':>9} {'position':>12} {'end':>12} {'behind':>10}")
        for topic, partition, position, end in lag.status.partitions:
            typer.echo(f"{topic:<28} {partition:>9} {position:>12,} {end:>12,} {max(end - position, 0):>10,}")
    if alert:
        warn_if_behind(settings, lag, sinks_from_environment())
    if lag.status is None:
        fail(f"{lag.reason} under {settings.join.output_dir}", 2)
    if lag.falling_behind:
        fail(lag.reason, 1)
    if not as_json:
        typer.echo(lag.reason)


def label(
    config: Optional[Path] = ConfigOption,
    events: Path = typer.Option(Path("out/simulation"), help="The simulator's Avro files (`simulate --to files`)."),
    out: Optional[Path] = typer.Option(None, help="Output directory for the TFRecord partitions."),
    strategy: Optional[LabelStrategy] = typer.Option(None, help="How labels are released."),
    purchase_window_s: Optional[float] = typer.Option(None, help="Purchase attribution window, seconds."),
):
    """Label the simulator's Avro files into the join's partitions in one process (no Kafka, no Beam).

    The same labeling function and partition writer as `valueloop join`; the watermark is the files' last event.
    """
    settings = settings_from(config)
    updates = {k: v for k, v in {"purchase_window_s": purchase_window_s, "strategy": strategy}.items()
               if v is not None}
    try:
        manifests = label_files(events, out or settings.join.output_dir, settings.join.labels.model_copy(update=updates))
    except (FileNotFoundError, ValueError) as error:
        fail(str(error))
    totals = Counter()
    for manifest in manifests:
        totals.update(manifest["labels"])
        totals["examples"] += manifest["examples"]
    typer.echo(json.dumps({"partitions": len(manifests), **totals}, indent=2))
