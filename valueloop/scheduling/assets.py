"""The loop's Airflow assets and where the DAGs find the project's settings.

`LABELED_HOURS` is updated once per labeled hour, its partition key the hour (`%Y-%m-%dT%H:00:00`) and its
event's extra the partition's URI and counts; the retraining DAG rolls 24 of them up into a day. Settings come
from the file that the Airflow Variable `valueloop_config`, or else the environment's `VALUELOOP_CONFIG`, names
(embedded defaults without either); nothing is read at parse time.
"""
from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import Asset

from config import load_settings

LABELED_HOURS = Asset(name="valueloop_labeled_hours", uri="file:///valueloop/labeled-hours",
                      group="valueloop", extra={"what": "one partition of labeled examples per event hour"})
PROMOTED_MODELS = Asset(name="valueloop_production_model", uri="file:///valueloop/production-model",
                        group="valueloop", extra={"what": "the registry's production alias, moved by a promotion"})
HOUR_KEY = "%Y-%m-%dT%H:00:00"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(PROJECT_ROOT / ".venv" / "bin" / "python")


def config_path() -> str | None:
    """The settings file the DAGs' tasks use: the Variable `valueloop_config`, else $VALUELOOP_CONFIG."""
    from airflow.sdk import Variable

    try:
        named = Variable.get("valueloop_config", default=None)
    except Exception:  # no metadata database to ask (a bare parse): the environment decides
        named = None
    return named or os.environ.get("VALUELOOP_CONFIG") or None


def settings():
    """The project's settings, as the DAG's tasks see them."""
    path = config_path()
    return load_settings(Path(path) if path else None)
