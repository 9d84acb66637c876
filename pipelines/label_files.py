"""The simulator's Avro container files to the join's example partitions, in one process, without Kafka or Beam.

For experiments on data already on disk (`valueloop simulate --to files`). It calls the same labeling function
and the same partition writer as the Beam join, so the trainer cannot tell the two sources apart; the
watermark is the latest event time in the files, since nothing later will come.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterator

from fastavro import reader

from pipelines.partitions import partition_of, write_partition
from pipelines.labeling import Example, label_user_events
from config.join import LabelConfig
from schemas.registry import default_registry

EVENT_NAMES = ("Impression", "Click", "Dwell", "AddToCart", "Purchase")


class BadEventFileError(ValueError):
    pass


def read_events(directory: Path) -> Iterator[tuple[str, dict]]:
    """(record name, datum) of every event in the simulator's files under `directory`."""
    registry = default_registry()
    found = False
    for name in EVENT_NAMES:
        stem = registry.latest(name).path.name.split(".")[0]
        path = Path(directory) / f"{stem}.avro"
        if not path.exists():
            continue
        found = True
        with open(path, "rb") as f:
            records = 0
            try:
                for datum in reader(f, reader_schema=registry.latest(name).parsed):
                    records += 1
                    yield name, datum
            except (ValueError, EOFError, KeyError, TypeError) as error:
                raise BadEventFileError(f"{path}: unreadable after {records:,} {name} records "
                                        f"({type(error).__name__}: {error})") from error
    if not found:
        raise FileNotFoundError(f"no event files ({', '.join(EVENT_NAMES)}) under {directory}: "
                                "write some with `valueloop simulate --to files --out DIR`")


def label_events(events, config: LabelConfig, watermark_ms: int | None = None) -> list[Example]:
    """Every example the watermark releases (default: the latest event time seen), grouped by user as the join does."""
    by_user: dict[str, list] = defaultdict(list)
    latest = None
    for name, datum in events:
        by_user[datum["user_id"]].append((name, datum))
        if latest is None or datum["event_time_ms"] > latest:
            latest = datum["event_time_ms"]
    watermark = latest if watermark_ms is None else watermark_ms
    examples = []
    for user_events in by_user.values():
        examples.extend(label_user_events(user_events, config, watermark))
    return examples


def write_examples(examples: list[Example], output_dir: Path, source: dict,
                   watermark_ms: int | None = None) -> list[dict]:
    """Writes the examples as hour partitions with manifests; returns the manifests."""
    by_hour: dict[str, list] = defaultdict(list)
    for example in examples:
        by_hour[partition_of(example.event_time_ms)].append(example)
    return [write_partition(output_dir, hour, by_hour[hour], source, watermark_ms)[0] for hour in sorted(by_hour)]


def label_files(directory: Path, output_dir: Path, config: LabelConfig) -> list[dict]:
    events = list(read_events(directory))
    watermark = max(datum["event_time_ms"] for _, datum in events)
    examples = label_events(events, config, watermark)
    source = {"avro_files": str(Path(directory).resolve()), "events": len(events)}
    return write_examples(examples, output_dir, source, watermark)
