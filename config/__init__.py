"""The one settings file: each section is the typed config of the package it drives (kafka, simulator, join,
trainer, audit, registry, loop, airflow), each in a module here. This package is the ground the rest stands on:
it imports no logic of valueloop's, only the event contract's topic names.

Defaults are embedded, so nothing needs a file to run locally; `--config FILE` (YAML or JSON) overrides any part.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from config.airflow import AirflowSettings
from config.audit import AuditConfig
from config.join import JoinSettings
from config.kafka import KafkaSettings
from config.loop import LoopSettings
from config.registry import RegistrySettings
from config.simulator import SimulatorConfig
from config.trainer import TrainConfig


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kafka: KafkaSettings = KafkaSettings()
    simulator: SimulatorConfig = SimulatorConfig()
    join: JoinSettings = JoinSettings()
    trainer: TrainConfig = TrainConfig()
    audit: AuditConfig = AuditConfig()
    registry: RegistrySettings = RegistrySettings()
    loop: LoopSettings = LoopSettings()
    airflow: AirflowSettings = AirflowSettings()


class ConfigError(ValueError):
    """The settings file is unreadable or says something invalid; the message names the file and field."""


def alert_book(settings: Settings) -> Path:
    """The file of open alerts (`promotion.alerts.AlertBook`): `loop.alerts_file`, or `alerts.json` beside the
    Kafka run directory."""
    return Path(settings.loop.alerts_file or Path(settings.kafka.run_dir).parent / "alerts.json")


def load_settings(path: Path | None = None) -> Settings:
    if path is None:
        return Settings()
    path = Path(path)
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read settings: {error}") from error
    try:
        return Settings.model_validate(data or {})
    except ValidationError as error:
        problems = "\n".join(f"  {describe_problem(problem)}" for problem in error.errors())
        raise ConfigError(f"{path}: {error.error_count()} invalid setting(s):\n{problems}") from None


def setting_paths(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Every setting's dotted path, sections first: `join`, `join.labels`, `join.labels.purchase_window_s`, ..."""
    paths = []
    for name, field in model.model_fields.items():
        paths.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            paths += setting_paths(field.annotation, f"{prefix}{name}.")
    return paths


def describe_problem(problem: dict) -> str:
    """One of pydantic's errors as a line naming the setting; a field unknown where it stands, but known
    elsewhere, is pointed to where it belongs."""
    where = ".".join(str(part) for part in problem["loc"])
    if problem["type"] == "extra_forbidden":
        name = str(problem["loc"][-1])
        homes = [p for p in setting_paths() if p.rsplit(".", 1)[-1] == name]
        if homes:
            return f"{where}: no such setting here; did you mean {' or '.join(homes)}?"
        return f"{where}: no such setting"
    return f"{where}: {problem['msg']} (got {problem.get('input')!r})"
