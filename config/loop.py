"""The `loop` section of the settings file: what the scheduled loop trains, where its work goes, how production
serves."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class LoopSettings(BaseModel):
    """The `loop` section of the settings file: what the scheduled loop trains and where it keeps its work."""

    model_config = ConfigDict(extra="forbid")

    work_dir: Path = Field(Path("out/loop"), description="Models and audits, one directory per day.")
    train_days: int = Field(1, ge=1, description="Days before the audited day that the candidate trains on.")
    preset: str = Field("value", description="value (the multi-task ranker) or ctr (the CTR-only baseline).")
    epochs: int | None = Field(None, ge=1, description="Overrides trainer.epochs for the loop's candidates.")
    alerts_file: Path | None = Field(None, description="Which alerts are open (`promotion.alerts.AlertBook`); by "
                                     "default alerts.json beside the Kafka run directory.")
    serving_logs: Path | None = Field(None, description="Production's serving logs, one <day>.npz a day "
                                      "(`ope.check.ServingLog`); for a day that has one, the gate "
                                      "estimates the candidate's purchases off-policy. By default "
                                      "<work_dir>/<day>/serving_log.npz.")
    feature_store: Path = Field(Path("out/features"), description="The feature tables the ranking service "
                                "read, one <version>.npz each (`serving.log.FeatureStore`); a served request "
                                "names its version.")
    serving_exploration: str = Field("plackett-luce", pattern="^(plackett-luce|epsilon-greedy)$",
                                     description="How production samples its slates; the candidate is judged as "
                                     "it would serve.")
    serving_temperature: float = Field(0.5, gt=0, description="The Plackett-Luce temperature, over scores "
                                       "standardised per request.")
    serving_epsilon: float = Field(0.1, ge=0, le=1, description="The exploration share of epsilon-greedy.")
    canary_share: float = Field(0.5, ge=0, lt=1, description="The share of users a candidate the off-policy check "
                                "cannot judge serves for a day, split by user beside production, before its split "
                                "test decides it (`valueloop.canary`); 0 holds such a candidate instead.")
    serving_floor: float = Field(0.05, ge=0, lt=1, description="The share of requests a model serves a uniformly "
                                 "random slate of the candidates (`serving.propensities.Sampling`): every "
                                 "candidate keeps a chance of every slot, so the gate's off-policy check can "
                                 "judge a candidate that ranks unlike production. Sized in docs/audit.md.")
