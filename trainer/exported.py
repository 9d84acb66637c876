"""A SavedModel that `valueloop train` exported, reloaded for scoring: what serving, evaluation and the audit
read. TensorFlow loads when the first model does (`trainer.tf_runtime`), not when this module is imported, so
the simulator and the command line start without it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

from trainer.features import serving_spec

METADATA_FILE = "valueloop_model.json"
OUTPUTS = ("click", "long_dwell", "add_to_cart", "purchase", "bounce", "value")


class ExportedModel:
    """A reloaded SavedModel: predictions from raw feature columns, in batches."""

    def __init__(self, path: Path):
        from trainer.tf_runtime import tf

        self.path = Path(path)
        if not (self.path / "saved_model.pb").exists():
            raise FileNotFoundError(f"{self.path}: not a SavedModel directory (no saved_model.pb); "
                                    "train one with `valueloop train`")
        self._loaded = tf.saved_model.load(str(self.path))
        self._serve = self._loaded.signatures["serving_default"]
        self.metadata = json.loads((self.path / METADATA_FILE).read_text())
        self.name = self.path.name

    def predict(self, columns: dict, batch_size: int = 65_536) -> dict:
        from trainer.tf_runtime import tf

        spec = serving_spec()
        n = len(next(iter(columns.values())))
        chunks: dict[str, list] = {name: [] for name in self.metadata["signature"]["outputs"]}
        for start in range(0, n, batch_size):
            batch = {name: tf.constant(columns[name][start:start + batch_size], dtype=spec[name].dtype)
                     for name in spec}
            for name, value in self._serve(**batch).items():
                chunks[name].append(value.numpy())
        return {name: np.concatenate(parts) if parts else np.zeros(0, np.float32) for name, parts in chunks.items()}


class Predictor(Protocol):
    """What scores candidates: an `ExportedModel`, or anything that predicts its outputs from the same raw
    feature columns and describes itself with the same metadata."""

    name: str
    metadata: dict

    def predict(self, columns: dict) -> dict: ...


def predictor(model: Path | Predictor) -> Predictor:
    """A model given as its SavedModel directory, loaded; anything that already predicts, as it is."""
    return model if hasattr(model, "predict") else ExportedModel(Path(model))
