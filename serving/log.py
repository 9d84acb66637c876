"""The serving log: per request what a ranking service chose from and what it showed, with each slot's logged
propensity and the feature tables it read, as a ranking service keeps for counterfactual evaluation; and the
scores a candidate model gives the logged candidates from those same served features.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from serving.policies import candidate_features
from trainer.exported import Predictor, predictor

TABLES = ("item_category", "item_headline_score", "item_price", "item_published_ms", "item_rating", "user_affinity",
          "user_device", "user_tenure_days")


@dataclass(frozen=True)
class FeatureTables:
    """What the serving system knew of items and users when it ranked, as a feature store holds it: the observed
    attributes the served features are made of (never a world's hidden truth), and the surface and device
    names the indices stand for."""

    surfaces: list[str]
    devices: list[str]
    item_category: np.ndarray
    item_headline_score: np.ndarray
    item_price: np.ndarray
    item_published_ms: np.ndarray
    item_rating: np.ndarray
    user_affinity: np.ndarray
    user_device: np.ndarray
    user_tenure_days: np.ndarray

    @classmethod
    def of(cls, source, surfaces: list[str], devices: list[str]) -> FeatureTables:
        """The tables of anything with these attributes (a simulated world)."""
        return cls(list(surfaces), list(devices), **{name: np.asarray(getattr(source, name)) for name in TABLES})


@dataclass(frozen=True)
class ServingLog:
    policy: str
    tables: FeatureTables
    users: np.ndarray  # (requests,)
    surfaces: np.ndarray  # (requests,) index into the surfaces served
    request_ms: np.ndarray  # (requests,)
    candidates: np.ndarray  # (requests, candidates) item ids
    order: np.ndarray  # (requests, slots): which candidate column each slot showed
    propensity: np.ndarray  # (requests, slots): the logged conditional propensity of each slot's choice
    clicked: np.ndarray  # (requests, slots)
    bought: np.ndarray  # (requests, slots)

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self) if f.name != "tables"}
        arrays.update({f"table_{f.name}": np.asarray(getattr(self.tables, f.name)) for f in fields(FeatureTables)})
        np.savez_compressed(path, **arrays)
        return path

    @classmethod
    def load(cls, path: Path) -> ServingLog:
        with np.load(path) as data:
            wanted = {f.name for f in fields(cls) if f.name != "tables"} | {f"table_{f.name}"
                                                                             for f in fields(FeatureTables)}
            missing = wanted - set(data.files)
            if missing:
                raise ValueError(f"{path}: not a serving log (no {sorted(missing)})")
            tables = FeatureTables(**{f.name: data[f"table_{f.name}"] for f in fields(FeatureTables)})
            tables = FeatureTables(**{**tables.__dict__, "surfaces": tables.surfaces.tolist(),
                                      "devices": tables.devices.tolist()})
            return cls(tables=tables, **{f.name: (str(data[f.name]) if f.name == "policy" else data[f.name])
                                         for f in fields(cls) if f.name != "tables"})


def candidate_predictions(log: ServingLog, model: Path | Predictor) -> dict[str, np.ndarray]:
    """Every output of the model (a SavedModel's directory, or a `Predictor`) for every logged request's
    candidates, from the served features (the log's tables), each (requests, candidates)."""
    model = predictor(model)
    columns = candidate_features(log.tables, log.users, log.candidates, log.tables.surfaces, log.surfaces,
                                 log.tables.devices, log.request_ms)
    return {name: values.reshape(log.candidates.shape).astype(np.float64)
            for name, values in model.predict(columns).items()}


def candidate_scores(log: ServingLog, model: Path | Predictor, output: str = "value") -> np.ndarray:
    """The candidate model's `output` scores of every logged request's candidates, (requests, candidates)."""
    return candidate_predictions(log, model)[output]
