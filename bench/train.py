"""`valueloop bench train`: training examples/s of the value model from TFRecord partitions and from memory.

One model, one set of examples (simulated, labeled by the join's labeling function), in one run: the in-memory
path feeds the same columns from numpy, so the ratio between the two is what reading and parsing TFRecords
costs. Each path gets a warm-up (tracing, first allocation) and then alternating timed epochs; the median
epoch is reported.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench.environment import describe

GOAL_EXAMPLES_PER_S = 50_000
GOAL_TFRECORD_SHARE = 0.9


def _examples(directory: Path, requests: int, seed: int) -> None:
    from pipelines.label_files import label_events, write_examples
    from pipelines.labeling import LabelConfig
    from simulator import Simulation, SimulatorConfig

    config = SimulatorConfig(seed=seed, requests=requests, days=3.0)
    events = [(e.name, e.datum) for e in Simulation(config).events()]
    labels = LabelConfig(purchase_window_s=6 * 3600.0)
    write_examples(label_events(events, labels), directory, {"bench": "train", "requests": requests})


def run_train_benchmark(train_config, requests: int = 60_000, repeats: int = 3, seed: int = 7) -> dict:
    import tensorflow as tf

    from trainer.data import dataset, find_partitions, load_columns
    from trainer.train import build_model

    with tempfile.TemporaryDirectory(prefix="valueloop-bench-train-") as tmp:
        _examples(Path(tmp), requests, seed)
        partitions = find_partitions(tmp)
        columns = load_columns(partitions)
        n = len(columns["clicked"])
        batch = train_config.batch_size
        from_files = dataset(partitions, batch, train_config.shuffle_buffer, train_config.seed)
        in_memory = (tf.data.Dataset.from_tensor_slices(columns).shuffle(train_config.shuffle_buffer,
                                                                         seed=train_config.seed)
                     .batch(batch).prefetch(tf.data.AUTOTUNE)) if train_config.shuffle_buffer else (
            tf.data.Dataset.from_tensor_slices(columns).batch(batch).prefetch(tf.data.AUTOTUNE))
        paths = {"TFRecord partitions (tf.data, parsed per batch)": from_files, "in memory (numpy columns)": in_memory}
        model = build_model(train_config, partitions)
        for data in paths.values():
            model.fit(data.take(3), epochs=1, verbose=0)  # trace and warm both input signatures
        rates: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(repeats):
            for name, data in paths.items():
                start = time.perf_counter()
                model.fit(data, epochs=1, verbose=0)
                rates[name].append(n / (time.perf_counter() - start))

    results = [{"path": name, "examples": n, "epochs": repeats, "examples_per_s": round(statistics.median(r)),
                "examples_per_s_of_each_epoch": [round(x) for x in r]} for name, r in rates.items()]
    files, memory = results[0]["examples_per_s"], results[1]["examples_per_s"]
    return {
        "benchmark": "train",
        "environment": describe(("tensorflow", "tf-keras", "tensorflow-recommenders")),
        "settings": {"model": train_config.model.model_dump(), "batch_size": batch,
                     "shuffle_buffer": train_config.shuffle_buffer, "requests": requests,
                     "reported": "median epoch per path, paths alternating"},
        "results": results,
        "summary": {
            "examples": n,
            "tfrecord_examples_per_s": files,
            "in_memory_examples_per_s": memory,
            "tfrecord_vs_in_memory": round(files / memory, 3),
            "goal_examples_per_s": GOAL_EXAMPLES_PER_S,
            "goal_tfrecord_share": GOAL_TFRECORD_SHARE,
            "goal_met": min(files, memory) >= GOAL_EXAMPLES_PER_S and files / memory >= GOAL_TFRECORD_SHARE,
        },
    }
