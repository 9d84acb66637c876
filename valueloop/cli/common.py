"""What every command shares: the settings file, errors as the user reads them, the broker, recorded results."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, NodeNotReadyError

from config import ConfigError, Settings, load_settings
from infra.kafka import BrokerError, KafkaBroker
from kafka_io.producer import DeliveryError
from pipelines.dead_letters import DeadLetterError
from pipelines.run import JobStopped, stopped_by_signals
from schemas.units import epoch_ms

ConfigOption = typer.Option(None, "--config", "-c", help="Settings file (YAML or JSON); embedded defaults otherwise.",
                            exists=True, dir_okay=False)


def settings_from(config: Optional[Path], **kafka_overrides) -> Settings:
    """The settings file's settings (defaults without one), with the given Kafka fields overridden."""
    try:
        settings = load_settings(config)
    except ConfigError as error:
        fail(str(error))
    overrides = {k: v for k, v in kafka_overrides.items() if v is not None}
    if overrides:
        settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update=overrides)})
    return settings


def fail(message: str, code: int = 1):
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def log_to_stderr(name: str) -> None:
    """INFO lines of one logger on stderr, stamped with the time, whatever the libraries do with the root logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def broker(settings: Settings):
    return KafkaBroker(settings.kafka)


def broker_up(settings: Settings):
    """Starts (or finds) the local node; exits with its error when it cannot."""
    try:
        return broker(settings).up()
    except BrokerError as error:
        fail(str(error))


def kafka_problem(settings: Settings, error: Exception) -> str:
    """What a Kafka error means for the user: a broker that cannot be reached, or what the broker refused."""
    said = f"Kafka at {settings.kafka.bootstrap_servers}: {type(error).__name__}: {error}"
    if isinstance(error, (KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError)):
        return f"{said}. Is the broker up? `valueloop kafka up` starts the local node"
    return said


@contextlib.contextmanager
def running_job(settings: Settings, after_stop: str):
    """A job's errors as the command reports them; a stop by Ctrl-C or SIGTERM exits with 128 + the signal."""
    try:
        with stopped_by_signals():
            yield
    except JobStopped as stop:
        fail(f"{stop}: {after_stop}", 128 + stop.signum)
    except (ValueError, DeadLetterError, DeliveryError) as error:
        fail(str(error))
    except KafkaError as error:
        fail(kafka_problem(settings, error))


def parse_hour(value: Optional[str], option: str) -> Optional[int]:
    """An ISO time (UTC unless it says otherwise) as epoch milliseconds; None stays None."""
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r} is not an ISO time such as 2026-11-01T05:00Z")
    return epoch_ms(moment)


def hour_option(flag: str, help: str):
    return typer.Option(None, flag, help=help)


def record(result: dict, out: Path) -> None:
    """Writes a benchmark's JSON and prints its summary."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    typer.echo(json.dumps(result["summary"], indent=2))
    typer.echo(f"written to {out}")
