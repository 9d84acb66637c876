"""The partition layout of labeled examples: one directory per impression event hour, its TFRecord file and its
manifest, each written atomically.

Each partition `dt=YYYY-MM-DD/hour=HH/` holds `examples.tfrecord` and `_manifest.json` (counts per label,
event-time range, source offsets, watermark), both written under a temporary name and renamed, so a reader sees a
whole file or none. Re-running the same input replaces a partition's files rather than adding to them. The
manifest is written last: its presence says the partition is complete.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path

from pipelines._tf_example import frame
from pipelines.labeling import Example
from pipelines.tf_example import parse_example_fields, read_records, serialize_example
from schemas.units import HOUR_MS, epoch_ms, utc

EXAMPLES_FILE = "examples.tfrecord"
MANIFEST_FILE = "_manifest.json"


def partition_of(event_time_ms: int) -> str:
    hour = utc(event_time_ms)
    return f"dt={hour:%Y-%m-%d}/hour={hour:%H}"


def hour_of(partition: str) -> int:
    """The start, in ms since the epoch, of the event hour a partition (`partition_of`) holds."""
    day, hour = partition.split("/")
    moment = dt.datetime.strptime(f"{day[3:]} {hour[5:]}", "%Y-%m-%d %H").replace(tzinfo=dt.timezone.utc)
    return epoch_ms(moment)


def resume_hour_ms(output_dir: str | Path) -> int | None:
    """Where a streaming join that stopped should start again: the first hour after the oldest complete
    partition (one with a manifest) in `output_dir` that has none; None when there is no partition at all.

    Not simply the hour after the newest: when the watermark passes several hours at once, the runner may write
    them in any order, and a job killed then leaves a gap. An hour without impressions also counts as a gap,
    which only makes the restart read and write again more than it needs."""
    written = {hour_of(path.parent.relative_to(output_dir).as_posix())
               for path in Path(output_dir).glob(f"dt=*/hour=*/{MANIFEST_FILE}")}
    if not written:
        return None
    hour = min(written)
    while hour in written:
        hour += HOUR_MS
    return hour


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


_SUMMARY = ("impression_id", "label_time_ms", "is_correction", "added_to_cart", "purchased", "clicked",
            "event_time_ms", "label_strategy")


def _summary(fields: dict) -> tuple:
    return tuple(fields.get(name) for name in _SUMMARY)


def kind_of(summary: tuple) -> tuple:
    """Which of its impression's examples a summary (`serialized`) is: the one example of `wait_for_window`,
    the negative of `fake_negative`, or one of its corrections (cart, purchase). A partition holds one of each;
    a later version of the labels replaces the earlier."""
    impression_id, _label_time_ms, is_correction, added_to_cart, purchased = summary[:5]
    return impression_id, is_correction, is_correction and added_to_cart, is_correction and purchased


def summary_of(example: Example) -> tuple:
    """What the manifest and the writer need of an example, in `_SUMMARY` order."""
    return (example.impression_id, example.label_time_ms, example.is_correction, example.added_to_cart,
            example.purchased, example.clicked, example.event_time_ms, example.label_strategy)


def serialized(example: Example) -> tuple[tuple, bytes]:
    """The example as its manifest summary and its tf.Example bytes: what a partition file is written from.

    Pairs of plain values cross a runner's shuffle far cheaper than Example tuples with a features dict."""
    return summary_of(example), serialize_example(example)


def write_partition(output_dir: str | Path, partition: str, examples: list[Example], source: dict,
                    watermark_ms: int | None = None, revision: int = 1,
                    keep_written: bool = False) -> tuple[dict, int]:
    """Writes one partition's TFRecord file, then its manifest; returns the manifest and the duplicates dropped.

    An example is identified by its impression and its kind (`kind_of`); a runner that retries work may deliver
    one twice, and the file must hold it once. With `keep_written`, the examples already in the partition's
    file stay in it unless a new example of the same kind replaces one (a streaming hour written again).
    """
    return write_serialized_partition(output_dir, partition, [serialized(e) for e in examples], source,
                                      watermark_ms, revision, keep_written)


def write_serialized_partition(output_dir: str | Path, partition: str, rows: list[tuple[tuple, bytes]], source: dict,
                               watermark_ms: int | None = None, revision: int = 1, keep_written: bool = False,
                               withdrawn: frozenset[tuple] = frozenset()) -> tuple[dict, int]:
    """`write_partition` for examples already `serialized`; with `keep_written`, the `withdrawn` kinds are
    taken out of what was written before."""
    directory = Path(output_dir) / partition
    records: dict[tuple, tuple[tuple, bytes]] = {}
    if keep_written and (directory / EXAMPLES_FILE).exists():
        if (directory / MANIFEST_FILE).exists():
            revision = max(revision, json.loads((directory / MANIFEST_FILE).read_text())["revision"] + 1)
        for record in read_records(directory / EXAMPLES_FILE):
            summary = _summary(parse_example_fields(record))
            kind = kind_of(summary)
            if kind not in withdrawn:
                records[kind] = (summary, record)
    for summary, record in rows:
        records[kind_of(summary)] = (tuple(summary), record)
    duplicates = 0 if keep_written else len(rows) - len(records)
    rows = sorted(records.values(), key=lambda row: row[0][:5])
    directory.mkdir(parents=True, exist_ok=True)
    _remove_orphans(directory)
    _write_atomically(directory / EXAMPLES_FILE, frame([record for _, record in rows]))
    column = dict(zip(_SUMMARY, zip(*(summary for summary, _ in rows))))  # empty when every example is withdrawn
    manifest = {
        "partition": partition,
        "file": EXAMPLES_FILE,
        "examples": len(rows),
        "labels": {
            "clicked": sum(map(bool, column.get("clicked", ()))),
            "added_to_cart": sum(map(bool, column.get("added_to_cart", ()))),
            "purchased": sum(map(bool, column.get("purchased", ()))),
            "corrections": sum(map(bool, column.get("is_correction", ()))),
        },
        "label_strategy": column["label_strategy"][0] if column else None,
        "event_time_ms": [min(column["event_time_ms"]), max(column["event_time_ms"])] if column else None,
        "source": source,
        "watermark_ms": watermark_ms,
        "revision": revision,
    }
    _write_atomically(directory / MANIFEST_FILE, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return manifest, duplicates


def _remove_orphans(directory: Path) -> None:
    """Deletes temporary files that a process, now dead, left half-written (a killed run)."""
    for leftover in directory.glob(".*.tmp"):
        try:
            pid = int(leftover.name.split(".")[-3])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            leftover.unlink(missing_ok=True)
        except PermissionError:
            pass  # another user's live process


def describe_partition(manifest: dict) -> str:
    """One line for a written partition: its hour, its examples and their labels."""
    labels = manifest["labels"]
    line = (f"{manifest['partition']}  {manifest['examples']:>7,} examples  clicked {labels['clicked']:>6,}  "
            f"carted {labels['added_to_cart']:>5,}  purchased {labels['purchased']:>5,}")
    if manifest.get("revision", 1) > 1:
        line += f"  (written again: revision {manifest['revision']})"
    return line
