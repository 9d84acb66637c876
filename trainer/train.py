"""Training and export: the join's partitions for a range in, a SavedModel with its metadata out."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from pathlib import Path

from config.trainer import TrainConfig
from trainer.data import Partition, dataset, find_partitions, label_strategy, naming_corrupt_files
from trainer.exported import METADATA_FILE, OUTPUTS
from trainer.features import TRAINING_COLUMNS, serving_spec
from trainer.model import ValueRanker, adapt_statistics


def build_model(config: TrainConfig, partitions: list[Partition]) -> ValueRanker:
    import tf_keras as keras

    keras.utils.set_random_seed(config.seed)
    with naming_corrupt_files(partitions):
        vocabularies, stats = adapt_statistics(dataset(partitions, 65_536))
    model = ValueRanker(config.model, vocabularies, stats,
                        fake_negative=label_strategy(partitions) == "fake_negative")
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    return model


def train(config: TrainConfig, examples_dir: Path, start_ms: int | None, end_ms: int | None, out_dir: Path,
          verbose: int = 1) -> dict:
    """Trains on the partitions of [start_ms, end_ms), exports to `out_dir`; returns the metadata written."""
    partitions = find_partitions(examples_dir, start_ms, end_ms)
    model = build_model(config, partitions)
    data = dataset(partitions, config.batch_size, config.shuffle_buffer, config.seed, columns=TRAINING_COLUMNS,
                   cache=config.cache_parsed)
    started = time.perf_counter()
    with naming_corrupt_files(partitions):
        history = model.fit(data, epochs=config.epochs, verbose=verbose)
    seconds = time.perf_counter() - started
    examples = sum(p.examples for p in partitions)
    metadata = {
        "trained_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "config": config.model_dump(),
        "data": {
            "examples_dir": str(Path(examples_dir).resolve()),
            "start_ms": start_ms, "end_ms": end_ms,
            "partitions": [p.manifest["partition"] for p in partitions],
            "examples": examples,
            "label_strategy": label_strategy(partitions),
        },
        "training": {"seconds": round(seconds, 1), "examples_per_s": round(examples * config.epochs / seconds),
                     "final": {k: float(v[-1]) for k, v in history.history.items()}},
    }
    export(model, out_dir, metadata)
    return metadata


def export(model: ValueRanker, out_dir: Path, metadata: dict) -> Path:
    """A SavedModel whose serving signature maps raw features to per-task probabilities and the value score."""
    import tensorflow as tf

    @tf.function(input_signature=[serving_spec()])
    def serve(features):
        predictions = model(features)
        return {name: predictions[name] for name in OUTPUTS if name in predictions}

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(model, str(out_dir), signatures={"serving_default": serve})
    outputs = [name for name in OUTPUTS if name in serve.get_concrete_function().structured_outputs]
    metadata = {**metadata, "signature": {"inputs": sorted(serving_spec()), "outputs": outputs},
                "preprocessing": {"vocabularies": model.vocabularies, "numeric_stats": model.numeric_stats}}
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return out_dir


def code_version() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}{'-dirty' if dirty else ''}" if commit else "unknown"
