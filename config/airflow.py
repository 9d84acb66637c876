"""The `airflow` section of the settings file: the local Airflow of `valueloop airflow up`."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class AirflowSettings(BaseModel):
    """The `airflow` section of the settings file: the local Airflow of `valueloop airflow up`."""

    model_config = ConfigDict(extra="forbid")

    run_dir: Path = Field(PROJECT_ROOT / ".run" / "airflow", description="AIRFLOW_HOME, logs, pids, the database.")
    api_port: int = Field(28080, ge=1, le=65535, description="The api-server's port (UI and REST API).")
    postgres_port: int = Field(25432, ge=1, le=65535, description="PostgreSQL's port on 127.0.0.1.")
    database: str = Field("postgres", pattern="^(postgres|sqlite)$", description="postgres, or sqlite as the "
                          "fallback where PostgreSQL cannot be had.")
    start_timeout_s: float = Field(180.0, gt=0, description="How long `up` waits for the api-server to answer.")
