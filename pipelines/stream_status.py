"""Where a streaming join stands, written beside its output for whoever watches it: `valueloop join status`
reads it, and the command that runs the stream warns through the alert sinks when it falls behind.

The source (`kafka_source._FollowTopics`) writes it once a progress period (`join.progress_log_s`), atomically:
each partition's position and end offset, the records between them, the newest event time read and the
watermark, and the records behind at each of the last `SAMPLES_KEPT` periods, so that a reader can tell a
stream that stays behind from one that catches up.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

STATUS_FILE = Path("_stream") / "status.json"
SAMPLES_KEPT = 240  # periods of records behind kept: four hours at the default minute


@dataclasses.dataclass(frozen=True)
class StreamStatus:
    updated_ms: int  # wall clock, when the source wrote it
    period_s: float  # how often it is written
    partitions: list[tuple[str, int, int, int]]  # topic, partition, next offset to read, end offset
    newest_event_ms: int  # the newest event time read, -1 before any
    watermark_ms: int | None  # the source's watermark, None before it has one
    samples: list[tuple[int, int]]  # (updated_ms, records behind), oldest first

    @property
    def records_behind(self) -> int:
        return sum(max(end - position, 0) for _, _, position, end in self.partitions)

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "records_behind": self.records_behind}


def status_path(output_dir: Path) -> Path:
    return Path(output_dir) / STATUS_FILE


def write_status(path: Path, status: StreamStatus) -> None:
    """Replaces the status file whole (a reader never sees half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(status.as_dict(), indent=2) + "\n")
    os.replace(temporary, path)


def read_status(path: Path) -> StreamStatus | None:
    """The status a stream last wrote at `path`, or None when none has been written; a file that is not a status
    raises ValueError naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a stream status ({error})") from None
    try:
        return StreamStatus(int(data["updated_ms"]), float(data["period_s"]),
                            [(str(t), int(p), int(o), int(e)) for t, p, o, e in data["partitions"]],
                            int(data["newest_event_ms"]),
                            None if data["watermark_ms"] is None else int(data["watermark_ms"]),
                            [(int(at), int(behind)) for at, behind in data["samples"]])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a stream status (missing or malformed {error})") from None
