"""The model side of the audit: production and the candidate scored on the same window, their prediction
distributions compared, the clickbait signature looked for in the candidate's predictions, and the model gate.

Labels are the window's as they stand at its `now_ms`: a conversion that has not arrived is not a label yet, for
both models alike, so the paired comparisons of the gate stay fair on a fresh window while the absolute bounds
are best read on a settled one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from audit.drift import Check
from audit.stattests import run_test
from audit.windows import Window, WindowError, slices
from config.audit import AuditConfig
from config.trainer import LONG_DWELL_MS, ModelConfig
from gate.metrics import MetricCheck, clickbait_model_signature, gate
from pipelines.labeling import long_dwell
from trainer.exported import Predictor, predictor

LABELS = ("click", "long_dwell", "add_to_cart", "purchase")


def labels_of(window: Window, long_dwell_ms: int) -> dict[str, np.ndarray]:
    """The window's labels by task, conversions counted where they have arrived, and each row's request."""
    if "request_id" not in window.columns:
        raise WindowError(f"{window.name}: no column request_id: the model gate re-ranks requests")
    clicked = np.asarray(window.columns["clicked"]) > 0
    return {"request_id": np.asarray(window.columns["request_id"]).astype(str),
            "click": clicked.astype(np.float64),
            "long_dwell": long_dwell(clicked, np.asarray(window.columns["dwell_ms"]), long_dwell_ms).astype(float),
            "add_to_cart": (window.arrived("cart_time_ms") >= 0).astype(np.float64),
            "purchase": (window.arrived("purchase_time_ms") >= 0).astype(np.float64)}


def score(model: Path | Predictor, window: Window) -> dict[str, np.ndarray]:
    """A model's predictions on the window (a SavedModel's directory, or a `Predictor`): each task it was trained
    for, and its ranking score `value`."""
    model = predictor(model)
    config = ModelConfig.model_validate(model.metadata["config"]["model"])
    predictions = model.predict(window.columns)
    return {task: np.asarray(p, np.float64) for task, p in predictions.items()
            if task == "value" or (task in LABELS and config.trains(task))}


@dataclass
class ModelAudit:
    checks: list[Check]  # prediction drift, production against the candidate
    gate: list[MetricCheck]
    signature: str | None
    predictions: dict[str, dict[str, np.ndarray]]  # "production" and "candidate": predictions by task

    @property
    def gate_failures(self) -> list[str]:
        return [f"gate: {c.metric} in {c.slice}: {c.reason}" for c in self.gate if not c.passed]

    def as_dict(self) -> dict:
        return {"signature": self.signature,
                "prediction_checks": [{"slice": c.slice, "metric": c.metric, **asdict(c.result)} for c in self.checks],
                "gate": [asdict(c) for c in self.gate],
                "mean_predictions": {side: {t: float(p.mean()) for t, p in preds.items()}
                                     for side, preds in self.predictions.items()}}


def audit_models(window: Window, candidate: dict[str, np.ndarray], production: dict[str, np.ndarray] | None,
                 config: AuditConfig, long_dwell_ms: int = LONG_DWELL_MS) -> ModelAudit:
    """The candidate against production (None: the first model, judged on the gate's absolute bounds) on one
    window: prediction drift (PSI per task), the model-side clickbait signature, and the gate's thresholds."""
    labels = labels_of(window, long_dwell_ms)
    checks, signature = [], None
    if production is not None:
        for task in sorted(candidate.keys() & production.keys()):
            checks.append(Check("all", f"prediction.{task}",
                                run_test("psi", production[task], candidate[task], config.prediction_psi)))
        if {"click", "purchase", "value"} <= candidate.keys() & production.keys():
            signature = clickbait_model_signature(labels, candidate, production, config.model_ctr_rise,
                                                  config.model_purchase_drop)
    gated = gate(labels, candidate, production, config.gate, draws=config.gate_bootstrap_draws,
                 slices=slices(window))
    return ModelAudit(checks, gated, signature,
                      {"candidate": candidate, **({"production": production} if production is not None else {})})
