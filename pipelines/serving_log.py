"""The serving log landed by the hour: the ranking service's ServedRequests, read from their topic, checked, and
written as one Avro container file per event hour with its manifest, beside the labeled examples.

A request belongs to the hour it was served in. A record that is not a valid ServedRequest (undecodable, or a
slate that cannot be weighed: `schemas.validation.slate_problem`) goes to the dead letters and is counted; the
valid requests around it are written. A request delivered twice (a producer's retry) is written once: its first
delivery. The same hour landed again from the same offsets writes the same file.

Layout: `<serving_log_dir>/dt=<day>/hour=<HH>/served_requests.avro` and `_manifest.json` (the hour, its
requests, the offsets read, the dead letters of the run that landed it); `read_landed` reads a range of hours
back.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, List, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from fastavro import reader, writer

from pipelines.decode import DecodeEvents, RecordClock
from pipelines.partitions import hour_of, partition_of
from pipelines.records import DecodedEvent, KafkaChunk, KafkaRecord
from schemas import default_registry
from schemas.units import HOUR_MS

RECORD = "ServedRequest"
FILE = "served_requests.avro"
MANIFEST = "_manifest.json"


def _records(chunk: KafkaChunk) -> Iterator[KafkaRecord]:
    for offset, timestamp_ms, key, value in chunk.records:
        yield KafkaRecord(chunk.topic, chunk.partition, offset, timestamp_ms, key, value)


class _InHours(beam.DoFn):
    """(hour partition, datum) of each request served in [from_ms, to_ms); the others are another run's hours."""

    def __init__(self, from_ms: int, to_ms: int):
        self._from_ms, self._to_ms = from_ms, to_ms

    def setup(self):
        self._outside = Metrics.counter("serving_log", "outside_the_hours")

    def process(self, event: DecodedEvent):
        served_ms = event.datum["event_time_ms"]
        if self._from_ms <= served_ms < self._to_ms:
            yield partition_of(served_ms), (event.delivered_ms, event.datum)
        else:
            self._outside.inc()


def write_hour(output_dir: Path, partition: str, requests: list[dict], source: dict) -> dict:
    """Writes one hour's requests (each request id once, the first given of its copies, in request id order) and
    then its manifest, each through a temporary file renamed into place; returns the manifest."""
    first: dict[str, dict] = {}
    for request in requests:
        first.setdefault(request["request_id"], request)
    unique = sorted(first.values(), key=lambda r: r["request_id"])
    directory = Path(output_dir) / partition
    directory.mkdir(parents=True, exist_ok=True)
    if unique:
        temporary = directory / f".{FILE}.{os.getpid()}.tmp"
        with open(temporary, "wb") as out:
            # the sync marker from the hour, not at random: the same requests write the same bytes
            writer(out, default_registry().latest(RECORD).parsed, unique, codec="deflate",
                   sync_marker=hashlib.md5(partition.encode()).digest())
        os.replace(temporary, directory / FILE)
    else:
        (directory / FILE).unlink(missing_ok=True)
    manifest = {"partition": partition, "hour_ms": hour_of(partition), "requests": len(unique),
                "duplicates": len(requests) - len(unique), "file": FILE if unique else None, "source": source}
    temporary = directory / f".{MANIFEST}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(temporary, directory / MANIFEST)
    return manifest


class _WriteHour(beam.DoFn):
    def __init__(self, output_dir: str, source: dict):
        self._output_dir, self._source = output_dir, source

    def setup(self):
        self._written = Metrics.counter("serving_log", "requests")

    def process(self, hour: tuple[str, list[tuple[int, dict]]]):
        partition, delivered = hour
        # the first delivered of a request's copies is kept, whatever order the runner grouped them in
        requests = [datum for _, datum in sorted(delivered, key=lambda d: (d[0], json.dumps(d[1], sort_keys=True)))]
        manifest = write_hour(Path(self._output_dir), partition, requests, self._source)
        self._written.inc(manifest["requests"])
        yield manifest


class LandServedRequests(beam.PTransform):
    """KafkaChunks of the serving log topic to the hours of [from_ms, to_ms) written under `output_dir`: yields
    (dead letters, manifests). The dead letters are `DecodeEvents`'s, for the caller's dead-letter writer."""

    def __init__(self, topic: str, clock: RecordClock, output_dir: Path, from_ms: int, to_ms: int, source: dict):
        super().__init__()
        self._decode = DecodeEvents({RECORD: topic}, clock)
        self._in_hours = _InHours(from_ms, to_ms)
        self._write = _WriteHour(str(output_dir), source)

    def expand(self, chunks):
        decoded = (chunks
                   | "Records" >> beam.FlatMap(_records).with_output_types(KafkaRecord)
                   | "Decode served requests" >> self._decode)
        manifests = (decoded.events
                     | "Key by served hour" >> beam.ParDo(self._in_hours).with_output_types(
                         Tuple[str, Tuple[int, dict]])
                     | "Group by hour" >> beam.GroupByKey().with_output_types(Tuple[str, List[Tuple[int, dict]]])
                     | "Write hour and manifest" >> beam.ParDo(self._write))
        return decoded.dead_letters, manifests


def record_dead_letters(output_dir: Path, manifest: dict, dead_letters: int) -> dict:
    """The manifest with the dead letters of the run that landed it (records of its offsets that were no valid
    ServedRequest), rewritten in place."""
    manifest = {**manifest, "dead_letters": dead_letters}
    directory = Path(output_dir) / manifest["partition"]
    temporary = directory / f".{MANIFEST}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(temporary, directory / MANIFEST)
    return manifest


def landed_manifests(output_dir: Path, from_ms: int, to_ms: int) -> list[dict]:
    """The manifests of the landed hours in [from_ms, to_ms), oldest first."""
    found = []
    for hour_ms in range(from_ms - from_ms % HOUR_MS, to_ms, HOUR_MS):
        path = Path(output_dir) / partition_of(hour_ms) / MANIFEST
        if hour_ms >= from_ms and path.exists():
            found.append(json.loads(path.read_text()))
    return found


def read_landed(output_dir: Path, from_ms: int, to_ms: int) -> list[dict]:
    """Every landed request of the hours in [from_ms, to_ms), in hour and then request id order."""
    requests: list[dict] = []
    for manifest in landed_manifests(output_dir, from_ms, to_ms):
        if manifest["file"]:
            path = Path(output_dir) / manifest["partition"] / manifest["file"]
            with open(path, "rb") as f:
                requests.extend(reader(f))
    return requests
