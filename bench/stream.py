"""`valueloop bench stream`: how fast the streaming join on Flink catches up with a backlog.

A backlog, as after an outage or at a first start: simulated days of events already in fresh topics when the
stream starts. The stream runs as a user starts it (`valueloop join --mode streaming --runner flink`, its own
process) and is timed from its start until it has written every hour that the bounded join writes from the
same topics, byte for byte the same; then it is stopped. The peer, measured in the same run, is the bounded
join on Flink over the same events, JVM start included in both.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from simulator import Simulation
from simulator.sinks import KafkaSink
from valueloop.config import Settings

from bench.environment import describe
from bench.topics import fresh_topics


def _digests(directory: Path) -> dict[str, str]:
    return {str(p.parent.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in directory.glob("dt=*/hour=*/examples.tfrecord")}


def _bounded(settings: Settings) -> dict:
    from pipelines.run import run_bounded_join

    start = time.perf_counter()
    result = run_bounded_join(settings.kafka, settings.join, runner="flink")
    return {"events": sum(r.stop - r.start for r in result.ranges), "seconds": time.perf_counter() - start,
            "partitions": len(result.manifests)}


def _streaming(settings: Settings, expected: dict[str, str], scratch: Path, timeout_s: float) -> dict:
    config = scratch / "stream-settings.json"
    config.write_text(settings.model_dump_json())
    output = Path(settings.join.output_dir)
    with open(scratch / "stream.log", "w") as log:
        start = time.perf_counter()
        job = subprocess.Popen([sys.executable, "-m", "valueloop.cli", "join", "--mode", "streaming", "--runner",
                                "flink", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
        try:
            while True:
                written = _digests(output) if output.exists() else {}
                if all(written.get(hour) == digest for hour, digest in expected.items()):
                    return {"seconds": time.perf_counter() - start, "partitions_equal": len(expected),
                            "partitions_written": len(written)}
                if job.poll() is not None:
                    raise RuntimeError(f"the streaming join stopped by itself; see {scratch / 'stream.log'}")
                if time.perf_counter() - start > timeout_s:
                    raise RuntimeError(f"the streaming join had not written the bounded join's {len(expected)} "
                                       f"hours after {timeout_s:.0f} s ({len(written)} written)")
                time.sleep(0.5)
        finally:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()


def run_stream_benchmark(settings: Settings, requests: int, days: float, users: int, items: int, scratch: Path,
                         purchase_window_s: float = 86_400.0, timeout_s: float = 900.0) -> dict:
    kafka = fresh_topics(settings.kafka, "stream")
    simulator = settings.simulator.model_copy(update={
        "requests": requests, "days": days,
        "catalogue": settings.simulator.catalogue.model_copy(update={"users": users, "items": items})})
    with KafkaSink(kafka) as sink:
        sink.write(Simulation(simulator).events())

    # Hours settle only once the longest window has passed: a purchase window of a day lets a backlog of a few
    # days settle most of its hours.
    labels = settings.join.labels.model_copy(update={"purchase_window_s": purchase_window_s})

    def run_settings(name: str) -> Settings:
        return settings.model_copy(update={"kafka": kafka, "simulator": simulator, "join": settings.join.model_copy(
            update={"output_dir": scratch / name, "labels": labels})})

    bounded = _bounded(run_settings("bounded"))
    expected = _digests(scratch / "bounded")
    if not expected:
        raise RuntimeError(f"the bounded join settled no hour of {days:g} days with windows of {labels.horizon_ms} ms")
    streaming = _streaming(run_settings("streamed"), expected, scratch, timeout_s)
    events = bounded["events"]
    speed = bounded["seconds"] / streaming["seconds"]
    for run in (bounded, streaming):
        run["events_per_s"] = round(events / run["seconds"])
        run["seconds"] = round(run["seconds"], 2)
    return {
        "benchmark": "stream",
        "environment": describe(("apache-beam", "kafka-python", "fastavro")),
        "settings": {"requests": requests, "days": days, "users": users, "items": items,
                     "labels": json.loads(labels.model_dump_json())},
        "results": {"bounded_join_flink": bounded, "streaming_join_flink_catch_up": streaming},
        "summary": {"events": events, "streaming_events_per_s": streaming["events_per_s"],
                    "streaming_vs_bounded_speed": round(speed, 3)},
    }
