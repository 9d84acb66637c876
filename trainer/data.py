"""tf.data over the join's partitions for an event-time range; the manifests say which partitions exist.

A partition counts once its `_manifest.json` is there (the join writes it last). Batches are parsed whole
(`parse_example` on a batch of serialized records) because that is where tf.data spends its time.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.partitions import MANIFEST_FILE
from pipelines.tf_example import read_records
from schemas.units import epoch_ms, utc
from trainer.features import parse_spec


@dataclass(frozen=True)
class Partition:
    path: Path  # the TFRecord file
    manifest: dict

    @property
    def examples(self) -> int:
        return self.manifest["examples"]


def _hour_start_ms(partition: str) -> int:
    day, hour = partition.split("/")
    start = dt.datetime.strptime(f"{day[3:]} {hour[5:]}", "%Y-%m-%d %H").replace(tzinfo=dt.timezone.utc)
    return epoch_ms(start)


def find_partitions(examples_dir: Path, start_ms: int | None = None, end_ms: int | None = None) -> list[Partition]:
    """Complete partitions whose event hour starts in [start_ms, end_ms), in time order."""
    examples_dir = Path(examples_dir)
    if not examples_dir.is_dir():
        raise FileNotFoundError(f"{examples_dir}: no such directory of example partitions; run `valueloop join` "
                                "or `valueloop label` first")
    found = []
    for manifest_path in sorted(examples_dir.glob(f"dt=*/hour=*/{MANIFEST_FILE}")):
        manifest = json.loads(manifest_path.read_text())
        hour_ms = _hour_start_ms(manifest["partition"])
        if (start_ms is None or hour_ms >= start_ms) and (end_ms is None or hour_ms < end_ms):
            found.append(Partition(manifest_path.parent / manifest["file"], manifest))
    if not found:
        raise FileNotFoundError(f"{examples_dir}: no complete partitions (with {MANIFEST_FILE}) in the range "
                                f"[{_show(start_ms)}, {_show(end_ms)})")
    return found


def _show(ms: int | None) -> str:
    return "open" if ms is None else utc(ms).isoformat()


class CorruptPartitionError(ValueError):
    pass


@contextlib.contextmanager
def naming_corrupt_files(partitions: list[Partition]):
    """Turns TensorFlow's "corrupted record at N", which names no file, into an error that names them all."""
    from trainer.tf_runtime import tf

    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        corrupt = []
        for partition in partitions:
            try:
                read_records(partition.path)
            except (OSError, ValueError) as reason:
                corrupt.append(str(reason))
        if not corrupt:
            raise
        raise CorruptPartitionError(f"{len(corrupt)} example file(s) cannot be read: " + "; ".join(corrupt)
                                    + ". Run the join again over their hours to rewrite them") from error


def label_strategy(partitions: list[Partition]) -> str:
    strategies = {p.manifest.get("label_strategy") for p in partitions}
    if len(strategies) > 1:
        raise ValueError(f"the range mixes label strategies {sorted(strategies)}; train on one")
    return strategies.pop()


def dataset(partitions: list[Partition], batch_size: int, shuffle_buffer: int = 0, seed: int = 0,
            drop_remainder: bool = False, columns: tuple[str, ...] | None = None, cache: bool = False):
    """Batches of parsed columns (a dict of 1-D tensors): every LabeledExample field, or those named.

    With `cache`, the parsed batches are kept in memory after the first pass and later passes shuffle their order:
    on two cores, reading and parsing cost as much as a training step.
    """
    from trainer.tf_runtime import tf

    files = [str(p.path) for p in partitions]
    records = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), 4) or 1)
    if shuffle_buffer:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    spec = parse_spec(columns)
    batches = (records.batch(batch_size, drop_remainder=drop_remainder)
               .map(lambda serialized: tf.io.parse_example(serialized, spec), num_parallel_calls=tf.data.AUTOTUNE))
    if cache:
        batches = batches.cache()
        if shuffle_buffer:
            batches = batches.shuffle(max(1, shuffle_buffer // batch_size), seed=seed, reshuffle_each_iteration=True)
    return batches.prefetch(tf.data.AUTOTUNE)


def load_columns(partitions: list[Partition], batch_size: int = 65_536) -> dict:
    """Every example of the partitions in memory, as numpy columns."""
    parts: dict[str, list] = {}
    with naming_corrupt_files(partitions):
        for batch in dataset(partitions, batch_size):
            for name, tensor in batch.items():
                parts.setdefault(name, []).append(tensor.numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}
