"""The `registry` section of the settings file: where the MLflow store is and what the model is called."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_DIRECTORY = Path(__file__).resolve().parents[1] / ".run" / "registry"


class RegistrySettings(BaseModel):
    """The `registry` section of the settings file."""

    model_config = ConfigDict(extra="forbid")

    directory: Path = Field(DEFAULT_DIRECTORY, description="The local store (mlflow.db, artifacts), the "
                            "promotion log and its lock.")
    uri: str | None = Field(None, description="An MLflow tracking and registry URI (a server, or a database); "
                            "by default sqlite:///<directory>/mlflow.db.")
    model_name: str = Field("valueloop-ranker", min_length=1, description="The registered model's name.")
    lock_timeout_s: float = Field(60.0, gt=0, description="How long a promotion waits for another to finish.")
