"""The `valueloop` command: `valueloop --help` is the manual."""
from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

import valueloop  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)

import typer

from valueloop.config import ConfigError, Settings, load_settings

app = typer.Typer(help="valueloop: a feedback-loop training pipeline that ranks by what users value, not by clicks.",
                  no_args_is_help=True, add_completion=False)
kafka_app = typer.Typer(help="The local Kafka node (KRaft, one broker+controller on 127.0.0.1).", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks; each writes JSON under bench/results/.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(bench_app, name="bench")

ConfigOption = typer.Option(None, "--config", "-c", help="Settings file (YAML or JSON); embedded defaults otherwise.",
                            exists=True, dir_okay=False)


def _settings(config: Optional[Path], **kafka_overrides) -> Settings:
    try:
        settings = load_settings(config)
    except ConfigError as error:
        _fail(str(error))
    overrides = {k: v for k, v in kafka_overrides.items() if v is not None}
    if overrides:
        settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update=overrides)})
    return settings


def _fail(message: str, code: int = 1):
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _log_to_stderr(name: str) -> None:
    """INFO lines of one logger on stderr, stamped with the time, whatever the libraries do with the root logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _broker(settings: Settings):
    from infra.kafka import KafkaBroker

    return KafkaBroker(settings.kafka)


def _unreachable(settings: Settings, error: Exception) -> str:
    """What a Kafka error means for the user: a broker that cannot be reached, or what the broker refused."""
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError

    said = f"Kafka at {settings.kafka.bootstrap_servers}: {type(error).__name__}: {error}"
    if isinstance(error, (KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError)):
        return f"{said}. Is the broker up? `valueloop kafka up` starts the local node"
    return said


def _broker_up(settings: Settings):
    """Starts (or finds) the local node; exits with its error when it cannot."""
    from infra.kafka import BrokerError

    try:
        return _broker(settings).up()
    except BrokerError as error:
        _fail(str(error))


def _record(result: dict, out: Path) -> None:
    """Writes a benchmark's JSON and prints its summary."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    typer.echo(json.dumps(result["summary"], indent=2))
    typer.echo(f"written to {out}")


@kafka_app.command("up")
def kafka_up(config: Optional[Path] = ConfigOption,
             port: Optional[int] = typer.Option(None, help="Client port (default 19092)."),
             controller_port: Optional[int] = typer.Option(None, help="Controller port (default 19093)."),
             run_dir: Optional[Path] = typer.Option(None, help="Where data, logs and the pid file live.")):
    """Start the node (formatting its storage the first time), wait until it answers, create the topics."""
    typer.echo(_broker_up(_settings(config, port=port, controller_port=controller_port, run_dir=run_dir)).describe())


@kafka_app.command("down")
def kafka_down(config: Optional[Path] = ConfigOption, run_dir: Optional[Path] = typer.Option(None)):
    """Stop the node cleanly; its data stays for the next `up`."""
    broker = _broker(_settings(config, run_dir=run_dir))
    broker.down()
    typer.echo(broker.status().describe())


@kafka_app.command("status")
def kafka_status(config: Optional[Path] = ConfigOption, run_dir: Optional[Path] = typer.Option(None)):
    """Say whether the node runs and how many messages each topic holds; exit 1 when it is down."""
    status = _broker(_settings(config, run_dir=run_dir)).status()
    typer.echo(status.describe())
    if not status.running:
        raise typer.Exit(1)


@kafka_app.command("topics")
def kafka_topics(config: Optional[Path] = ConfigOption, port: Optional[int] = typer.Option(None, help="Client port.")):
    """Create any missing valueloop topics on a broker that runs already (one started by Docker, say)."""
    from kafka.errors import KafkaError

    broker = _broker(_settings(config, port=port, run_dir=Path("/nonexistent/valueloop")))
    try:
        broker.create_topics()
    except KafkaError as error:
        _fail(f"cannot create topics on {broker.bootstrap_servers}: {error}")
    typer.echo("\n".join(f"{broker.bootstrap_servers} {topic}" for topic in broker.settings.topics))


@app.command()
def simulate(
    config: Optional[Path] = ConfigOption,
    to: str = typer.Option("kafka", help="kafka: the event topics; files: Avro container files under --out."),
    out: Path = typer.Option(Path("out/simulation"), help="Directory for Avro files and the ground truth."),
    requests: Optional[int] = typer.Option(None, help="Ranking requests to simulate (about 11 events each)."),
    days: Optional[float] = typer.Option(None, help="Simulated days the requests spread over."),
    seed: Optional[int] = typer.Option(None, help="World and traffic seed."),
):
    """Simulate the clickbait world: events to Kafka or Avro files, hidden ground truth to a separate file."""
    settings = _settings(config)
    summary = _simulate(settings, to, out, requests=requests, days=days, seed=seed)
    typer.echo(json.dumps(summary.as_dict(), indent=2))


def _simulate(settings: Settings, to: str, out: Path, **overrides):
    from tqdm import tqdm

    from simulator import Simulation
    from simulator.sinks import AvroFileSink, KafkaSink

    if to not in ("kafka", "files"):
        _fail(f"--to is kafka or files, not {to!r}")
    sim_config = settings.simulator.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    simulation = Simulation(sim_config)
    truth = simulation.world.save(out / "ground_truth.npz")
    sink = KafkaSink(settings.kafka) if to == "kafka" else AvroFileSink(out)
    events = tqdm(simulation.events(), desc=f"simulating to {to}", unit=" events", mininterval=1.0,
                  disable=not sys.stderr.isatty())
    with sink:
        sink.write(events)
    typer.echo(f"ground truth (evaluation only): {truth}", err=True)
    return simulation.summary


@contextlib.contextmanager
def _running_join(settings: Settings, after_stop: str):
    """A join's errors as the command reports them; a stop by Ctrl-C or SIGTERM exits with 128 + the signal."""
    from kafka.errors import KafkaError

    from pipelines.dead_letters import DeadLetterError
    from pipelines.run import JobStopped, stopped_by_signals

    try:
        with stopped_by_signals():
            yield
    except JobStopped as stop:
        _fail(f"{stop}: {after_stop}", 128 + stop.signum)
    except (ValueError, DeadLetterError) as error:
        _fail(str(error))
    except KafkaError as error:
        _fail(_unreachable(settings, error))


def _parse_hour(value: Optional[str], option: str) -> Optional[int]:
    import datetime as dt

    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{option} {value!r} is not an ISO time such as 2026-11-01T05:00Z")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp() * 1000)


@app.command()
def join(
    config: Optional[Path] = ConfigOption,
    runner: Optional[str] = typer.Option(None, help="direct (FnApiRunner when bounded, Prism when streaming) or flink; "
                                                    "by default direct when bounded, flink when streaming."),
    mode: str = typer.Option("bounded", help="bounded: fixed offset ranges, then exit; streaming: follow the "
                                             "topics, writing each hour once settled, until stopped."),
    start: Optional[str] = typer.Option(None, "--from", help="Label impressions from this hour (ISO, UTC)."),
    end: Optional[str] = typer.Option(None, "--to", help="... up to this hour, exclusive."),
    out: Optional[Path] = typer.Option(None, help="Output directory for the TFRecord partitions."),
    strategy: Optional[str] = typer.Option(None, help="wait_for_window or fake_negative."),
    workers: Optional[int] = typer.Option(None, help="Worker processes for the direct runner."),
    resume: bool = typer.Option(False, "--resume", help="Streaming: start at the first hour missing from the "
                                                          "output (after a stop or a crash)."),
    lateness: Optional[str] = typer.Option(None, help="What lateness is measured against: record_time (when the "
                                                      "producer delivered it) or event_time (for replayed topics)."),
    accept_late: bool = typer.Option(False, "--accept-late", help="Exit 0 even when most events are late."),
):
    """Join the event topics into labeled tf.Example partitions by event hour, with manifests."""
    from pipelines.labeling import LabelStrategy
    from pipelines.examples import describe_partition
    from pipelines.run import run_bounded_join, run_streaming_join
    from pipelines.settings import LatenessReference

    settings = _settings(config)
    if mode not in ("bounded", "streaming"):
        _fail(f"--mode is bounded or streaming, not {mode!r}")
    join_settings = settings.join
    updates = {k: v for k, v in {"output_dir": out, "direct_num_workers": workers}.items() if v is not None}
    if lateness is not None:
        try:
            updates["lateness_reference"] = LatenessReference(lateness)
        except ValueError:
            _fail(f"--lateness is record_time or event_time, not {lateness!r}")
    if accept_late:
        updates["max_late_share"] = 1.0
    if strategy is not None:
        try:
            labels = join_settings.labels.model_copy(update={"strategy": LabelStrategy(strategy)})
        except ValueError:
            _fail(f"--strategy is wait_for_window or fake_negative, not {strategy!r}")
        updates["labels"] = labels
    join_settings = join_settings.model_copy(update=updates)
    runner = runner or ("flink" if mode == "streaming" else "direct")
    if runner not in ("direct", "flink"):
        _fail(f"--runner is direct or flink, not {runner!r}")
    if runner == "flink":
        from pipelines.flink import MissingJobServerError, require_job_server

        try:
            require_job_server()
        except MissingJobServerError as error:
            _fail(str(error))
    if resume and mode != "streaming":
        _fail("--resume is for --mode streaming: a bounded run over the same offsets replaces its files anyway")
    if mode == "streaming":
        if runner == "direct":
            if not join_settings.prism_location.exists():
                _fail(f"no Prism runner at {join_settings.prism_location}: run `make prism` "
                      "(see infra/prism/README.md)")
        from_ms = _parse_hour(start, "--from")
        if resume:
            import datetime as dt

            from pipelines.examples import resume_hour_ms

            if start is not None:
                _fail("--resume finds the hour to start at; give it or --from, not both")
            from_ms = resume_hour_ms(join_settings.output_dir)
            where = "the start of the topics" if from_ms is None else \
                dt.datetime.fromtimestamp(from_ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:00Z")
            typer.echo(f"resuming at {where}", err=True)
        typer.echo(f"following {', '.join(settings.kafka.event_topics.values())}; writing settled hours to "
                   f"{join_settings.output_dir}; stop with Ctrl-C or SIGTERM", err=True)
        _log_to_stderr("valueloop.join")  # a line per hour written
        with _running_join(settings, "the hours written so far stand; `--resume` carries on at the first one missing"):
            run_streaming_join(settings.kafka, join_settings, runner=runner, from_ms=from_ms)
        return
    with _running_join(settings, "partitions written so far stand; running the same join again replaces them"):
        result = run_bounded_join(settings.kafka, join_settings, runner=runner,
                                  from_ms=_parse_hour(start, "--from"), to_ms=_parse_hour(end, "--to"))
    for manifest in result.manifests:
        typer.echo(describe_partition(manifest))
    typer.echo(json.dumps({"partitions": len(result.manifests), "counters": result.counters}, indent=2))


@app.command()
def label(
    config: Optional[Path] = ConfigOption,
    events: Path = typer.Option(Path("out/simulation"), help="The simulator's Avro files (`simulate --to files`)."),
    out: Optional[Path] = typer.Option(None, help="Output directory for the TFRecord partitions."),
    strategy: Optional[str] = typer.Option(None, help="wait_for_window or fake_negative."),
    purchase_window_s: Optional[float] = typer.Option(None, help="Purchase attribution window, seconds."),
):
    """Label the simulator's Avro files into the join's partitions in one process (no Kafka, no Beam).

    The same labeling function and partition writer as `valueloop join`; the watermark is the files' last event.
    """
    from pipelines.label_files import label_files
    from pipelines.labeling import LabelStrategy

    settings = _settings(config)
    updates = {k: v for k, v in {"purchase_window_s": purchase_window_s}.items() if v is not None}
    if strategy is not None:
        try:
            updates["strategy"] = LabelStrategy(strategy)
        except ValueError:
            _fail(f"--strategy is wait_for_window or fake_negative, not {strategy!r}")
    labels = settings.join.labels.model_copy(update=updates)
    try:
        manifests = label_files(events, out or settings.join.output_dir, labels)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    totals = Counter()
    for manifest in manifests:
        totals.update(manifest["labels"])
        totals["examples"] += manifest["examples"]
    typer.echo(json.dumps({"partitions": len(manifests), **totals}, indent=2))


def _range_option(flag: str, help: str):
    return typer.Option(None, flag, help=help)


@app.command()
def train(
    config: Optional[Path] = ConfigOption,
    examples: Path = typer.Option(Path("out/examples"), help="The join's partitions (dt=.../hour=.../)."),
    start: Optional[str] = _range_option("--from", "Train on impressions from this hour (ISO, UTC)."),
    end: Optional[str] = _range_option("--to", "... up to this hour, exclusive."),
    preset: str = typer.Option("value", help="value: multi-task, ranked by expected value; ctr: clicks only."),
    epochs: Optional[int] = typer.Option(None, help="Passes over the training range."),
    out: Path = typer.Option(Path("out/models/value"), help="SavedModel directory to write."),
):
    """Train the multi-task ranker (or the CTR-only baseline) on a range of the join's output and export it."""
    from trainer.config import preset as choose
    from trainer.train import train as run_training

    settings = _settings(config)
    try:
        train_config = choose(settings.trainer, preset)
    except ValueError as error:
        _fail(str(error))
    if epochs is not None:
        train_config = train_config.model_copy(update={"epochs": epochs})
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Keras' progress goes beside the log; stdout holds the result
            metadata = run_training(train_config, examples, _parse_hour(start, "--from"), _parse_hour(end, "--to"),
                                    out, verbose=1 if sys.stderr.isatty() else 2)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    typer.echo(json.dumps({"model": str(out), "examples": metadata["data"]["examples"],
                           "label_strategy": metadata["data"]["label_strategy"], **metadata["training"]}, indent=2))


@app.command()
def evaluate(
    models: list[Path] = typer.Option(..., "--model", help="A SavedModel from `valueloop train`; repeat to compare."),
    examples: Path = typer.Option(Path("out/examples"), help="The join's partitions."),
    start: Optional[str] = _range_option("--from", "Evaluate on impressions from this hour: after training's range."),
    end: Optional[str] = _range_option("--to", "... up to this hour, exclusive."),
    ground_truth: Optional[Path] = typer.Option(None, help="The simulator's ground_truth.npz, for true outcomes."),
    k: int = typer.Option(3, min=1, help="Top k of each re-ranked request."),
    baseline: Optional[str] = typer.Option(None, help="Name (directory) of the baseline model; the first --model is "
                                                      "checked against it for the clickbait trap."),
    min_purchase_lift: float = typer.Option(0.25, help="Least lift in true purchases per 1000 over the baseline."),
    out: Path = typer.Option(Path("out/evaluation"), help="Directory for evaluation.json and the plots."),
):
    """Score models on a later range: task AUC, log loss, calibration; re-ranked requests; the hidden truth.

    Exits 1 when --baseline is given and the first model does not escape the trap it shows.
    """
    from pipelines.labeling import LabelStrategy
    from trainer import evaluate as ev
    from trainer.data import find_partitions, label_strategy, load_columns
    from trainer.train import ExportedModel

    try:
        partitions = find_partitions(examples, _parse_hour(start, "--from"), _parse_hour(end, "--to"))
        if label_strategy(partitions) != LabelStrategy.WAIT_FOR_WINDOW.value:
            _fail("evaluation needs final labels: label the evaluation range with --strategy wait_for_window")
        loaded = [ExportedModel(path) for path in models]
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    world = None
    if ground_truth is not None:
        from simulator.world import World

        world = World.load(ground_truth)
    try:
        columns = load_columns(partitions)
    except ValueError as error:
        _fail(str(error))
    report = ev.evaluate(loaded, columns, k=k, world=world)
    report["data"] = {"examples_dir": str(examples), "partitions": [p.manifest["partition"] for p in partitions]}
    verdict = None
    if baseline is not None:
        if baseline not in report["models"] or world is None:
            _fail(f"--baseline {baseline!r} needs --ground-truth and one --model named so ({list(report['models'])})")
        verdict = report["verdict"] = ev.compare(report, loaded[0].name, baseline, k, min_purchase_lift)
    _report_evaluation(report, verdict, out)


def _report_evaluation(report: dict, verdict: Optional[dict], out: Path) -> None:
    """Writes the evaluation's JSON and plots, prints its table and the trap verdict; exits 1 if the verdict fails."""
    from trainer import evaluate as ev

    path = ev.write_report(report, out)
    plots = ev.plot(report, out)
    typer.echo(ev.table(report))
    if verdict is not None:
        typer.echo(f"\n{verdict['candidate']} vs {verdict['baseline']}: true purchases per 1000 "
                   f"{verdict['purchase_lift']:+.1%}, true clicks per 1000 {verdict['click_change']:+.1%}")
        for check, passed in verdict["checks"].items():
            typer.echo(f"  [{'pass' if passed else 'FAIL'}] {check}")
    typer.echo(f"written: {path}, {', '.join(str(p) for p in plots)}")
    if verdict is not None and not verdict["passed"]:
        raise typer.Exit(1)


CENSUS_KINDS = ("mmoe", "shared_bottom", "single_task")  # trainer.census.KINDS, without importing TensorFlow


@app.command()
def census(
    seed: int = typer.Option(0, help="Seed of the 80/20 split."),
    epochs: int = typer.Option(30, help="Most passes per model; a tenth of the training split stops it early."),
    experts: int = typer.Option(16, help="MMoE experts (the shared-bottom network gets the same units in one)."),
    ensemble: int = typer.Option(10, help="Networks per model kind, one per seed and held-out tenth; each kind "
                                          "scores their mean."),
    batch_size: int = typer.Option(512, help="Examples per training step."),
    dropout: float = typer.Option(0.2, help="Dropout after each expert (or shared-bottom) layer, the same for every "
                                            "kind; chosen on the inner split (README)."),
    kinds: list[str] = typer.Option(list(CENSUS_KINDS), help="Model kinds to train (with --inner; a recorded run "
                                                               "trains all)."),
    inner: bool = typer.Option(False, help="Train and score on a seeded 80/20 split of the training rows alone, "
                                           "never the test split: for choosing settings."),
    out: Path = typer.Option(Path("bench/results/census.json"), help="Where the JSON result goes."),
):
    """The MMoE paper's real-data check: income and never-married on UCI census-income, against baselines."""
    unknown = set(kinds) - set(CENSUS_KINDS)
    if unknown:
        raise typer.BadParameter(f"unknown kinds {sorted(unknown)}; the kinds are {list(CENSUS_KINDS)}",
                                 param_hint="--kinds")
    if not 0.0 <= dropout < 1.0:
        raise typer.BadParameter(f"{dropout} is not a dropout rate: it lies in [0, 1)", param_hint="--dropout")
    if set(kinds) != set(CENSUS_KINDS) and not inner:
        raise typer.BadParameter("a recorded run trains every kind; choose kinds with --inner", param_hint="--kinds")
    from bench.environment import describe
    from trainer import census as run
    from trainer.config import ModelConfig

    rows = run.read_rows()
    if inner:
        rows, _test = run.split_rows(rows, seed=seed)
    data = run.split(rows, seed=seed + 1 if inner else seed)
    base = ModelConfig(experts=experts, expert_units=[64], tower_units=[32], dropout=dropout)
    seeds = tuple(range(7, 7 + ensemble))
    results = run.run(data, base, epochs=epochs, batch_size=batch_size, seeds=seeds,
                      verbose=1 if sys.stderr.isatty() else 0, kinds=tuple(kinds))

    def echo_table(title: str, table: dict[str, dict[str, float]], digits: int) -> None:
        typer.echo(f"{title:<32}" + "".join(f"{t + ' AUC':>22}" for t in run.TASKS))
        for name, aucs in table.items():
            typer.echo(f"{name:<32}" + "".join(f"{aucs[t]:>22.{digits}f}" for t in run.TASKS))

    if inner:
        echo_table("model (inner split)", results, 5)
        return
    same_split = run.gradient_boosting(data, seed=seed)
    echo_table("model", {**results, "gradient boosting, this split": same_split,
                         "gradient boosting, published": run.REFERENCE_AUC}, 4)
    summary = {"mmoe": results["mmoe"], "reference": run.REFERENCE_AUC, "reference_this_split": same_split,
               "goal_met": all(results["mmoe"][t] >= run.REFERENCE_AUC[t] for t in run.TASKS),
               "beats_reference_this_split": all(results["mmoe"][t] >= same_split[t] for t in run.TASKS)}
    _record({"benchmark": "census", "environment": describe(("tensorflow", "tensorflow-recommenders")),
             "settings": {"seed": seed, "test_share": 0.2, "rows": len(data.x_train) + len(data.x_test),
                          "features": data.features, "epochs_at_most": epochs, "ensemble_seeds": list(seeds),
                          "batch_size": batch_size,
                          "model": base.model_dump()},
             "results": {**results, "gradient_boosting_this_split": same_split}, "summary": summary}, out)


DEMO_DIR = Path("out/demo")


@app.command()
def demo(config: Optional[Path] = ConfigOption,
         requests: int = typer.Option(30_000, help="Ranking requests; 30,000 make about 400,000 events."),
         days: float = typer.Option(8.0, help="Simulated days of traffic."),
         train_days: float = typer.Option(4.0, help="Days the models train on; the days after them, up to the last "
                                                    "the purchase window settles, evaluate."),
         purchase_window_days: float = typer.Option(2.0, help="Purchase attribution window; the hours before the "
                                                              "last such window are labeled.")):
    """The loop on a small world: Kafka, the Beam join, the value model and the CTR-only baseline, the trap.

    Starts a local Kafka node and simulates traffic into it; joins this run's events into labeled examples with
    Beam (FnApiRunner); trains the multi-task value model and the CTR-only baseline on the first days; re-ranks
    the later days' requests with each and scores them against the world's hidden truth. Exits 1 if the value
    model does not escape the trap the baseline falls into. Everything it writes goes under out/demo/.
    """
    import shutil

    from pipelines.kafka_source import PartitionRange, snapshot_ranges

    if not 0 < train_days < days - purchase_window_days:
        _fail("--train-days must leave days to evaluate before the last purchase window")
    settings = _settings(config)
    broker = _broker(settings)
    before = _broker_up(settings).topic_messages
    topics = list(settings.kafka.event_topics.values())
    ends_before = {(r.topic, r.partition): r.stop for r in snapshot_ranges(settings.kafka.bootstrap_servers, topics)}
    typer.echo(f"kafka up on {settings.kafka.bootstrap_servers}; simulating {requests:,} requests over {days:g} "
               "days ...")
    summary = _simulate(settings, "kafka", DEMO_DIR, requests=requests, days=days)
    after = broker.status().topic_messages
    typer.echo(f"\n{'topic':<28}{'this run':>12}{'in topic':>12}")
    for topic in topics:
        typer.echo(f"{topic:<28}{after.get(topic, 0) - before.get(topic, 0):>12,}{after.get(topic, 0):>12,}")
    added = sum(after.values()) - sum(before.values())
    typer.echo(f"{'all event topics':<28}{added:>12,}")
    typer.echo("\nthe world's rates (hidden truth; bait items are written as clickbait):")
    typer.echo(f"{'items':<10}{'impressions':>13}{'CTR':>9}{'carts/click':>13}{'buys/click':>12}{'mean dwell':>12}")
    for label, tally in (("bait", summary.bait), ("non-bait", summary.non_bait)):
        r = tally.rates()
        typer.echo(f"{label:<10}{r['impressions']:>13,}{r['ctr']:>9.3f}{r['carts_per_click']:>13.3f}"
                   f"{r['purchases_per_click']:>12.3f}{r['mean_dwell_s']:>11.1f}s")
    typer.echo(f"\nlate deliveries {sum(summary.late.values()):,}, duplicates {sum(summary.duplicates.values()):,}, "
               f"conversions still to come after the simulated horizon {sum(summary.beyond_horizon.values()):,}")

    # Only this run's offsets: the topics may hold earlier runs' traffic, of other worlds.
    ranges = [PartitionRange(r.topic, r.partition, max(r.start, ends_before.get((r.topic, r.partition), r.start)),
                             r.stop) for r in snapshot_ranges(settings.kafka.bootstrap_servers, topics)]
    for step in ("examples", "models", "evaluation"):
        shutil.rmtree(DEMO_DIR / step, ignore_errors=True)  # what an earlier demo wrote is not this world's
    try:
        examples = _demo_join(settings, ranges, purchase_window_days)
        split_ms = settings.simulator.start_ms + int(train_days * 86_400_000)
        models = [_demo_train(settings, preset, examples, split_ms) for preset in ("value", "ctr")]
        _demo_evaluate(models, examples, split_ms)
    finally:
        typer.echo(f"\nkafka stays up for a look (kcat -b {settings.kafka.bootstrap_servers} -L); "
                   "`valueloop kafka down` stops it")


def _demo_join(settings: Settings, ranges, purchase_window_days: float) -> Path:
    from pipelines.run import run_bounded_join

    labels = settings.join.labels.model_copy(update={"purchase_window_s": purchase_window_days * 86_400})
    join_settings = settings.join.model_copy(update={"output_dir": DEMO_DIR / "examples", "labels": labels})
    events = sum(r.stop - r.start for r in ranges)
    typer.echo(f"\njoining this run's {events:,} events into labeled examples with Beam (FnApiRunner) ...")
    with _running_join(settings, "the demo stopped"):
        result = run_bounded_join(settings.kafka, join_settings, runner="direct", ranges=ranges)
    counters = Counter(result.counters)
    dead = sum(n for name, n in counters.items() if name.startswith("dead_letters."))
    typer.echo(f"{len(result.manifests)} settled hours, {counters['join.examples']:,} examples in "
               f"{join_settings.output_dir}; repeated deliveries dropped {counters['join.duplicate_deliveries']:,}, "
               f"late {counters['join.late_events']:,}, dead letters {dead:,}")
    return Path(join_settings.output_dir)


def _demo_train(settings: Settings, preset: str, examples: Path, split_ms: int) -> Path:
    from trainer.config import preset as choose
    from trainer.train import train as run_training

    out = DEMO_DIR / "models" / preset
    typer.echo(f"training the {preset} model on the hours before {_hour_text(split_ms)} ...")
    with contextlib.redirect_stdout(sys.stderr):
        metadata = run_training(choose(settings.trainer, preset), examples, None, split_ms, out, verbose=0)
    typer.echo(f"  {metadata['data']['examples']:,} examples, {metadata['training']['seconds']:.0f} s: {out}")
    return out


def _demo_evaluate(models: list[Path], examples: Path, split_ms: int) -> None:
    from simulator.world import World
    from trainer import evaluate as ev
    from trainer.data import find_partitions, load_columns
    from trainer.train import ExportedModel

    typer.echo(f"\nre-ranking the requests from {_hour_text(split_ms)} on with each model, scored by the hidden "
               "truth:\n")
    loaded = [ExportedModel(path) for path in models]
    columns = load_columns(find_partitions(examples, split_ms, None))
    report = ev.evaluate(loaded, columns, k=3, world=World.load(DEMO_DIR / "ground_truth.npz"))
    verdict = report["verdict"] = ev.compare(report, loaded[0].name, loaded[1].name, 3, 0.25)
    _report_evaluation(report, verdict, DEMO_DIR / "evaluation")


def _hour_text(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@bench_app.command("ingest")
def bench_ingest(
    config: Optional[Path] = ConfigOption,
    requests: int = typer.Option(20_000, help="Ranking requests to simulate (about 13 events each)."),
    workers: int = typer.Option(2, help="Worker processes per path; events are split between them by key."),
    repeats: int = typer.Option(5, help="Runs per path; the median run is reported."),
    out: Path = typer.Option(Path("bench/results/ingest.json"), help="Where the JSON result goes."),
):
    """Events/s into the broker through kafka-python (acks=all), beside confluent-kafka and Avro encoding alone."""
    from bench.ingest import run_ingest_benchmark

    settings = _settings(config)
    _broker_up(settings)
    _record(run_ingest_benchmark(settings, requests=requests, workers=workers, repeats=repeats), out)


@bench_app.command("train")
def bench_train(
    config: Optional[Path] = ConfigOption,
    requests: int = typer.Option(60_000, help="Ranking requests to simulate (10 impressions each)."),
    repeats: int = typer.Option(2, help="Timed training runs per path; the median is reported."),
    out: Path = typer.Option(Path("bench/results/train.json"), help="Where the JSON result goes."),
):
    """Training examples/s of the value model from TFRecord partitions beside the same examples in memory."""
    from bench.train import run_train_benchmark

    _record(run_train_benchmark(_settings(config).trainer, requests=requests, repeats=repeats), out)


@bench_app.command("join")
def bench_join(
    config: Optional[Path] = ConfigOption,
    requests: int = typer.Option(20_000, help="Ranking requests to simulate (about 13 events each)."),
    days: float = typer.Option(10.0, help="Simulated days: the join labels only hours its windows have settled."),
    repeats: int = typer.Option(3, min=1, help="Runs of each path; the median run is reported."),
    out: Path = typer.Option(Path("bench/results/join.json"), help="Where the JSON result goes."),
):
    """Events/s and peak memory of the bounded join (Kafka to TFRecords) beside the plain reference labeler."""
    import tempfile

    from bench.join import run_join_benchmark

    settings = _settings(config)
    _broker_up(settings)
    with tempfile.TemporaryDirectory(prefix="valueloop-bench-join-") as scratch:
        _record(run_join_benchmark(settings, requests=requests, days=days, output_dir=Path(scratch),
                                   repeats=repeats), out)


@bench_app.command("stream")
def bench_stream(
    config: Optional[Path] = ConfigOption,
    requests: int = typer.Option(1_000, help="Ranking requests to simulate (about 13 events each)."),
    days: float = typer.Option(3.0, help="Simulated days in the backlog."),
    users: int = typer.Option(80, help="Users: fewer users, longer histories in each user's state."),
    items: int = typer.Option(40, help="Items in the catalogue."),
    runner: list[str] = typer.Option(["flink", "direct"], help="Runners to measure (direct streams on Prism)."),
    out: Path = typer.Option(Path("bench/results/stream.json"), help="Where the JSON result goes."),
):
    """Seconds for the streaming join to catch up with a backlog, on each runner beside its bounded join."""
    import tempfile

    from bench.stream import RUNNERS, run_stream_benchmark

    unknown = [r for r in runner if r not in RUNNERS]
    if unknown:
        _fail(f"--runner is one of {list(RUNNERS)}, not {unknown}")
    settings = _settings(config)
    _broker_up(settings)
    with tempfile.TemporaryDirectory(prefix="valueloop-bench-stream-") as scratch:
        _record(run_stream_benchmark(settings, requests=requests, days=days, users=users, items=items,
                                     scratch=Path(scratch), runners=tuple(runner)), out)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
