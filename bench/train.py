"""`valueloop bench train`: training examples/s of the value model from TFRecord partitions and from memory.

One model, one set of examples (simulated, labeled by the join's labeling function), in one run. Each path is a
whole training run (the configured epochs, a fresh input pipeline) after a warm-up that traces the model: from
the TFRecord partitions as `valueloop train` reads them, from the same partitions parsed again every epoch, and
from the same columns already in memory. Paths alternate; the median run of each is reported.
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
    from config.join import LabelConfig
    from simulator import Simulation, SimulatorConfig

    config = SimulatorConfig(seed=seed, requests=requests, days=3.0)
    events = [(e.name, e.datum) for e in Simulation(config).events()]
    labels = LabelConfig(purchase_window_s=6 * 3600.0)
    write_examples(label_events(events, labels), directory, {"bench": "train", "requests": requests})


def _in_memory(columns: dict, batch_size: int, seed: int):
    """The peer: columns already in memory as tensors, each batch gathered by index, batch order shuffled."""
    import numpy as np
    from trainer.tf_runtime import tf

    n = len(next(iter(columns.values())))
    tensors = {name: tf.constant(values) for name, values in columns.items()}
    batches = n // batch_size
    order = tf.constant(np.random.default_rng(seed).permutation(n)[: batches * batch_size].reshape(batches, batch_size))
    return (tf.data.Dataset.range(batches).shuffle(batches, seed=seed, reshuffle_each_iteration=True)
            .map(lambda i: {name: tf.gather(t, order[i]) for name, t in tensors.items()})
            .prefetch(tf.data.AUTOTUNE)), batches * batch_size


def run_train_benchmark(train_config, requests: int = 60_000, repeats: int = 2, seed: int = 7) -> dict:
    from trainer.data import dataset, find_partitions, load_columns
    from trainer.features import TRAINING_COLUMNS
    from trainer.train import build_model

    config = train_config
    epochs = config.epochs
    with tempfile.TemporaryDirectory(prefix="valueloop-bench-train-") as tmp:
        _examples(Path(tmp), requests, seed)
        partitions = find_partitions(tmp)
        n = sum(p.examples for p in partitions)
        columns = load_columns(partitions)
        columns = {name: columns[name] for name in TRAINING_COLUMNS}

        def from_files(cache: bool):
            return lambda: (dataset(partitions, config.batch_size, config.shuffle_buffer, config.seed,
                                    columns=TRAINING_COLUMNS, cache=cache), n)

        paths = {
            "TFRecord partitions as `valueloop train` reads them (parsed batches cached after epoch 1)": from_files(True),
            "TFRecord partitions, read and parsed every epoch": from_files(False),
            "in memory (numpy columns, batches gathered by index)": lambda: _in_memory(columns, config.batch_size, seed),
        }
        model = build_model(config, partitions)
        for make in paths.values():
            model.fit(make()[0].take(2), epochs=1, verbose=0)  # trace and warm each input signature
        rates: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(repeats):
            for name, make in paths.items():
                data, examples = make()
                start = time.perf_counter()
                model.fit(data, epochs=epochs, verbose=0)
                rates[name].append(examples * epochs / (time.perf_counter() - start))

    results = [{"path": name, "examples": n, "epochs": epochs, "runs": repeats,
                "examples_per_s": round(statistics.median(r)), "examples_per_s_of_each_run": [round(x) for x in r]}
               for name, r in rates.items()]
    files, cold, memory = (r["examples_per_s"] for r in results)
    return {
        "benchmark": "train",
        "environment": describe(("tensorflow", "tf-keras", "tensorflow-recommenders")),
        "settings": {"model": config.model.model_dump(), "batch_size": config.batch_size, "epochs": epochs,
                     "shuffle_buffer": config.shuffle_buffer, "requests": requests,
                     "reported": "median whole training run (all epochs, fresh input pipeline) per path, paths alternating"},
        "results": results,
        "summary": {
            "examples": n,
            "tfrecord_examples_per_s": files,
            "tfrecord_uncached_examples_per_s": cold,
            "in_memory_examples_per_s": memory,
            "tfrecord_vs_in_memory": round(files / memory, 3),
            "tfrecord_uncached_vs_in_memory": round(cold / memory, 3),
            "goal_examples_per_s": GOAL_EXAMPLES_PER_S,
            "goal_tfrecord_share": GOAL_TFRECORD_SHARE,
            "goal_met": min(files, memory) >= GOAL_EXAMPLES_PER_S and files / memory >= GOAL_TFRECORD_SHARE,
        },
    }
