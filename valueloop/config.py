"""The one settings file: each section is the typed config of the package it drives.

Defaults are embedded, so nothing needs a file to run locally; `--config FILE` (YAML or JSON) overrides any part.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from infra.kafka import KafkaSettings
from pipelines.settings import JoinSettings
from simulator.config import SimulatorConfig
from trainer.config import TrainConfig


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kafka: KafkaSettings = KafkaSettings()
    simulator: SimulatorConfig = SimulatorConfig()
    join: JoinSettings = JoinSettings()
    trainer: TrainConfig = TrainConfig()


class ConfigError(ValueError):
    """The settings file is unreadable or says something invalid; the message names the file and field."""


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
        raise ConfigError(f"{path}: {error}") from error
