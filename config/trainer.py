"""Typed configuration of the ranking model and its training: one class, many configs (value model, CTR baseline)."""
from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.units import ms

TASKS = ("click", "long_dwell", "add_to_cart", "purchase")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    architecture: Literal["mmoe", "shared_bottom"] = "mmoe"
    embedding_dim: int = Field(16, ge=1, le=512)
    id_buckets: int = Field(50_000, ge=16, description="Hash buckets for user and item ids (out-of-vocabulary safe).")
    category_vocabulary_max: int = Field(1_000, ge=2, description="Largest learned vocabulary for small categoricals.")
    experts: int = Field(4, ge=1, le=64)
    expert_units: list[int] = Field(default_factory=lambda: [64], min_length=1)
    tower_units: list[int] = Field(default_factory=lambda: [32])
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout after each expert (or shared-bottom) layer.")
    loss_weights: dict[str, float] = Field(
        default_factory=lambda: {"click": 1.0, "long_dwell": 1.0, "add_to_cart": 1.0, "purchase": 1.0},
        description="Weight of each task's loss; a task at 0 is not trained (the CTR baseline trains click only).")
    value_weights: dict[str, float] = Field(
        default_factory=lambda: {"purchase": 1.0, "add_to_cart": 0.3, "long_dwell": 0.1, "bounce": -0.1},
        description="The ranking score: a weighted sum of p(purchase), p(add_to_cart), p(long dwell), p(bounce) "
                    "and p(click), all over the impression; a bounce is a click without a long dwell.")
    long_dwell_s: float = Field(30.0, gt=0, description="A click whose dwell reaches this is a long dwell; one whose "
                                "dwell does not is a bounce. The one threshold of both labels, for the model and "
                                "the audit alike (`pipelines.labeling`).")
    fake_negative_weighting: bool = Field(
        True, description="When examples come from the fake_negative label strategy, weight conversion losses as "
                          "Ktena et al. (RecSys 2019) derive, so the model learns the true conversion rate.")

    @property
    def long_dwell_ms(self) -> int:
        return ms(self.long_dwell_s)

    @model_validator(mode="after")
    def _known_tasks(self) -> ModelConfig:
        unknown = set(self.loss_weights) - set(TASKS)
        if unknown:
            raise ValueError(f"loss_weights: unknown tasks {sorted(unknown)}; the tasks are {list(TASKS)}")
        unknown = set(self.value_weights) - set(TASKS) - {"bounce"}
        if unknown:
            raise ValueError(f"value_weights: unknown terms {sorted(unknown)}; use {[*TASKS, 'bounce']}")
        if not self.trains("click"):
            raise ValueError("loss_weights: click needs a positive weight; every other task is conditioned on it")
        untrained = [t for t in self.value_weights if not self.trains("long_dwell" if t == "bounce" else t)]
        if untrained:
            raise ValueError(f"value_weights: {untrained} are not trained (give them a loss weight, or drop them)")
        return self

    def trains(self, task: str) -> bool:
        return self.loss_weights.get(task, 0.0) > 0


LONG_DWELL_MS = ModelConfig().long_dwell_ms  # what a check given no settings takes the long-dwell label at


class TrainConfig(_Strict):
    model: ModelConfig = ModelConfig()
    batch_size: int = Field(8192, ge=1)
    epochs: int = Field(3, ge=1)
    learning_rate: float = Field(0.003, gt=0)
    seed: int = 7
    shuffle_buffer: int = Field(200_000, ge=0)
    cache_parsed: bool = Field(
        True, description="Keep the parsed training batches in memory after the first epoch, so later epochs skip "
                          "reading and parsing (a million examples take about 150 MB). Later epochs then reshuffle "
                          "whole batches, not examples.")


class Preset(str, enum.Enum):
    """`value`: ranked by expected value; `ctr`: the CTR-only baseline."""

    VALUE = "value"
    CTR = "ctr"


def preset(config: TrainConfig, name: str) -> TrainConfig:
    """`value`: the multi-task model ranked by expected value, as configured. `ctr`: the same network, features
    and budget trained on clicks alone and ranked by p(click), the baseline that shows the trap."""
    if name == "value":
        return config
    if name == "ctr":
        model = config.model.model_copy(update={"loss_weights": {"click": 1.0}, "value_weights": {"click": 1.0}})
        return config.model_copy(update={"model": model})
    raise ValueError(f"unknown preset {name!r}; the presets are {list(PRESETS)}")


PRESETS = tuple(p.value for p in Preset)
