"""`valueloop bench stream`: how fast the streaming join catches up with a backlog, on Flink and on Prism.

A backlog, as after an outage or at a first start: simulated days of events already in fresh topics when the
stream starts. The stream runs as a user starts it (`valueloop join --mode streaming --runner flink|direct`,
its own process) and is timed from its start until it has written every hour that the bounded join writes from
the same topics, byte for byte the same; then it is stopped. Each runner's peer, measured in the same run, is
the bounded join on the same runner family over the same events (Flink: JVM start included in both; direct:
the FnApiRunner), so each ratio says what following the topics costs over reading them once.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from simulator import Simulation
from simulator.sinks import KafkaSink
from config import Settings

from bench.environment import describe
from bench.topics import fresh_topics


def _digests(directory: Path) -> dict[str, str]:
    return {str(p.parent.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in directory.glob("dt=*/hour=*/examples.tfrecord")}


@contextlib.contextmanager
def backlog(settings: Settings, name: str, requests: int, days: float, users: int, items: int):
    """Fresh topics (deleted afterwards) holding a simulated backlog of `requests` over `days` among `users` and
    `items`: yields their Kafka settings, the simulator's config and the events delivered, by record name."""
    with fresh_topics(settings.kafka, name) as kafka:
        simulator = settings.simulator.model_copy(update={
            "requests": requests, "days": days,
            "catalogue": settings.simulator.catalogue.model_copy(update={"users": users, "items": items})})
        with KafkaSink(kafka) as sink:
            delivered = sink.write(Simulation(simulator).events())
        yield kafka, simulator, delivered


RUNNERS = {"flink": ("flink", "flink"), "direct": ("fnapi_runner", "prism")}  # --runner: bounded on, streams on


def _bounded(settings: Settings, runner: str) -> dict:
    from pipelines.run import run_bounded_join

    start = time.perf_counter()
    result = run_bounded_join(settings.kafka, settings.join, runner=runner)
    return {"events": sum(r.stop - r.start for r in result.ranges), "seconds": time.perf_counter() - start,
            "partitions": len(result.manifests)}


def _streaming(settings: Settings, runner: str, expected: dict[str, str], scratch: Path, timeout_s: float) -> dict:
    config = scratch / f"stream-settings-{runner}.json"
    config.write_text(settings.model_dump_json())
    output = Path(settings.join.output_dir)
    with open(scratch / f"stream-{runner}.log", "w") as log:
        start = time.perf_counter()
        job = subprocess.Popen([sys.executable, "-m", "valueloop.cli", "join", "--mode", "streaming", "--runner",
                                runner, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
        try:
            while True:
                written = _digests(output) if output.exists() else {}
                if all(written.get(hour) == digest for hour, digest in expected.items()):
                    return {"seconds": time.perf_counter() - start, "partitions_equal": len(expected),
                            "partitions_written": len(written)}
                if job.poll() is not None:
                    raise RuntimeError(f"the streaming join stopped by itself; see {log.name}")
                if time.perf_counter() - start > timeout_s:
                    raise RuntimeError(f"the streaming join had not written the bounded join's {len(expected)} "
                                       f"hours after {timeout_s:.0f} s ({len(written)} written)")
                time.sleep(0.5)
        finally:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()


def run_stream_benchmark(settings: Settings, requests: int, days: float, users: int, items: int, scratch: Path,
                         purchase_window_s: float = 86_400.0, timeout_s: float = 900.0,
                         runners: tuple[str, ...] = tuple(RUNNERS)) -> dict:
    with backlog(settings, "stream", requests, days, users, items) as (kafka, simulator, _):

        # Hours settle only once the longest window has passed: a purchase window of a day lets a backlog of a few
        # days settle most of its hours.
        labels = settings.join.labels.model_copy(update={"purchase_window_s": purchase_window_s})

        def run_settings(name: str) -> Settings:
            return settings.model_copy(update={"kafka": kafka, "simulator": simulator, "join": settings.join.model_copy(
                update={"output_dir": scratch / name, "labels": labels})})

        results, summary = {}, {}
        for runner in runners:
            bounded = _bounded(run_settings(f"bounded-{runner}"), runner)
            expected = _digests(scratch / f"bounded-{runner}")
            if not expected:
                raise RuntimeError(f"the bounded join settled no hour of {days:g} days with windows of "
                                   f"{labels.horizon_ms} ms")
            streaming = _streaming(run_settings(f"streamed-{runner}"), runner, expected, scratch, timeout_s)
            speed = bounded["seconds"] / streaming["seconds"]
            for run in (bounded, streaming):
                run["events_per_s"] = round(bounded["events"] / run["seconds"])
                run["seconds"] = round(run["seconds"], 2)
            bounded_on, streams_on = RUNNERS[runner]
            results[f"bounded_join_{bounded_on}"] = bounded
            results[f"streaming_join_{streams_on}_catch_up"] = streaming
            summary[streams_on] = {"events": bounded["events"], "streaming_events_per_s": streaming["events_per_s"],
                                   "streaming_vs_bounded_speed": round(speed, 3)}
        return {
            "benchmark": "stream",
            "environment": describe(("apache-beam", "kafka-python", "fastavro")),
            "settings": {"requests": requests, "days": days, "users": users, "items": items,
                         "labels": json.loads(labels.model_dump_json())},
            "results": results,
            "summary": summary,
        }


def parse_progress(log: str) -> list[dict]:
    """The progress lines of a streaming join's log (`pipelines.progress`) as dicts: the step, the seconds the
    period covered, and each figure (a number, {"median", "max"}, or text as logged)."""
    lines = []
    for match in re.finditer(r"^\S+ \S+ (stream|label) over (\d+) s: (.*)$", log, re.MULTILINE):
        line: dict = {"step": match.group(1), "seconds": int(match.group(2))}
        for part in match.group(3).split("; "):
            sampled = re.fullmatch(r"(\w+) median ([\d,.e+-]+) max ([\d,.e+-]+)", part)
            if sampled:
                line[sampled.group(1)] = {"median": float(sampled.group(2).replace(",", "")),
                                          "max": float(sampled.group(3).replace(",", ""))}
                continue
            name, _, value = part.partition(" ")
            number = value.replace(",", "")
            line[name] = int(number) if number.isdigit() else value
        lines.append(line)
    return lines


def _profile(settings: Settings, runner: str, seconds: float, scratch: Path) -> dict:
    config = scratch / f"profile-settings-{runner}.json"
    config.write_text(settings.model_dump_json())
    log_path = scratch / f"profile-{runner}.log"
    with open(log_path, "w") as log:
        job = subprocess.Popen([sys.executable, "-m", "valueloop.cli", "join", "--mode", "streaming", "--runner",
                                runner, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
        try:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                if job.poll() is not None:
                    raise RuntimeError(f"the streaming join stopped by itself; see {log_path}")
                time.sleep(1)
        finally:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    lines = parse_progress(log_path.read_text())
    return {"seconds": seconds,
            "hours_written": len(list(Path(settings.join.output_dir).glob("dt=*/hour=*/examples.tfrecord"))),
            **profile_summary(lines), "progress": lines}


def profile_summary(lines: list[dict]) -> dict:
    """What a run's progress lines add up to: the source's records a second, records a call and share of its
    calls' time spent polling the broker (the rest is its records' way downstream); the label step's elements
    and firings a second, its share of the time busy in bundles, and its labeling work."""
    def total(step: str, name: str) -> int:
        return sum(line.get(name, 0) for line in lines if line["step"] == step and isinstance(line.get(name), int))

    covered = {step: sum(line["seconds"] for line in lines if line["step"] == step) for step in ("stream", "label")}
    calls_ms = total("stream", "call_ms")
    return {
        "records_read": total("stream", "records"),
        "records_read_per_s": round(total("stream", "records") / covered["stream"]) if covered["stream"] else None,
        "source_calls": total("stream", "source_calls"),
        "source_polling_share": round(total("stream", "polling_ms") / calls_ms, 3) if calls_ms else None,
        "label_elements_and_firings_per_s": round(total("label", "elements_and_firings") / covered["label"])
        if covered["label"] else None,
        "label_busy_share": round(total("label", "busy_ms") / 1000 / covered["label"], 3) if covered["label"] else None,
        "label_firings": total("label", "firings"),
        "examples_labeled": total("label", "examples_labeled"),
    }


def run_stream_profile(settings: Settings, requests: int, days: float, users: int, items: int, seconds: float,
                       scratch: Path, runners: tuple[str, ...] = tuple(RUNNERS), period_s: float = 30.0) -> dict:
    """Where the streaming join's time goes on a large backlog: each runner's stream (under the settings' own
    label windows) runs for `seconds` and its progress lines, every `period_s`, are recorded."""
    with backlog(settings, "profile", requests, days, users, items) as (kafka, _, delivered):
        results = {}
        for runner in runners:
            run = settings.model_copy(update={"kafka": kafka, "join": settings.join.model_copy(update={
                "output_dir": scratch / f"profile-{runner}", "progress_log_s": period_s})})
            results[RUNNERS[runner][1]] = _profile(run, runner, seconds, scratch)
        return {
            "benchmark": "stream_profile",
            "environment": describe(("apache-beam", "kafka-python", "fastavro")),
            "settings": {"requests": requests, "days": days, "users": users, "items": items, "seconds": seconds,
                         "progress_log_s": period_s, "delivered": dict(delivered),
                         "labels": json.loads(settings.join.labels.model_dump_json())},
            "results": results,
            "summary": {runner: {k: v for k, v in result.items() if k != "progress"}
                        for runner, result in results.items()},
        }
