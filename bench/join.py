"""`valueloop bench join`: the bounded join from Kafka to TFRecords, beside the plain reference labeler.

All paths read the same simulated events from the same topics, in one run. Each runs in a fresh child process;
its peak memory is the largest sum of resident memory over the child and its descendants (the Flink job
server is a JVM the child starts), sampled every 100 ms. The paths take turns, `repeats` times, and each
path's run of median speed is reported; speeds are ratios against the reference labeler measured in the same
run. Beside them, in the same turns, the cost of each step of the work on every event, timed alone
(`step_costs`): what the FnApiRunner spends beyond their sum is the runner's and the grouping's.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from simulator import Simulation
from simulator.sinks import KafkaSink
from config import Settings

from bench.environment import describe, median_run
from bench.topics import fresh_topics

GOAL_EVENTS_PER_S = 100_000
GOAL_WITHIN_REFERENCE = 5.0


def reference_path(settings: Settings) -> dict:
    """Read every event with kafka-python, decode it, label with the reference labeler (in memory)."""
    from pipelines.kafka_source import kafka_consumer, snapshot_ranges
    from pipelines.reference_labeler import reference_labels
    from schemas import BadEventError, EventDecoder

    from kafka import TopicPartition

    start = time.perf_counter()
    decoder, events, read = EventDecoder(), [], 0
    consumer = kafka_consumer(settings.kafka.bootstrap_servers)
    for r in snapshot_ranges(settings.kafka.bootstrap_servers, settings.kafka.event_topics.values()):
        tp = TopicPartition(r.topic, r.partition)
        consumer.assign([tp])
        consumer.seek(tp, r.start)
        while consumer.position(tp) < r.stop:
            for batch in consumer.poll(timeout_ms=500, max_records=20_000).values():
                for m in batch:
                    read += 1
                    try:
                        event = decoder.decode(m.value, m.topic, m.partition, m.offset, m.timestamp)
                    except BadEventError:
                        continue
                    events.append((event.name, event.datum))
    consumer.close()
    labels = settings.join.labels
    watermark = max(d["event_time_ms"] for _, d in events)
    examples = reference_labels(events, labels.click_window_ms, labels.cart_window_ms, labels.purchase_window_ms, watermark)
    return {"events": read, "seconds": time.perf_counter() - start, "examples": len(examples)}


def _beam_path(settings: Settings, runner: str) -> dict:
    from pipelines.run import run_bounded_join

    start = time.perf_counter()
    result = run_bounded_join(settings.kafka, settings.join, runner=runner)
    seconds = time.perf_counter() - start
    read = sum(r.stop - r.start for r in result.ranges)
    return {"events": read, "seconds": seconds, "examples": sum(m["examples"] for m in result.manifests),
            "partitions": len(result.manifests), "counters": result.counters}


def step_costs(settings: Settings) -> dict:
    """Microseconds per event of each step of the join's work on every event, each step timed alone over all the
    events in one process: what a run on a runner costs beyond their sum is the runner's and the grouping's.

    Reading is the bulk fetcher's (record batches parsed); routing, the user id read from each message to pick
    its group; decoding, `EventDecoder.decode_all` over each fetch's records; labeling, `label_user_events` per
    user with the watermark at the newest event time; writing, tf.Example bytes and their TFRecord frames for
    every example, given per event.
    """
    from kafka_io.fetcher import PartitionFetcher
    from pipelines.tf_example import _framed, serialize_example
    from pipelines.kafka_source import snapshot_ranges
    from pipelines.labeling import label_user_events
    from pipelines.worker import collect_garbage_less_often
    from schemas import EventDecoder

    collect_garbage_less_often()  # as the join's workers do
    seconds: dict[str, float] = {}

    def timed(step: str, work):
        start = time.perf_counter()
        result = work()
        seconds[step] = time.perf_counter() - start
        return result

    def read() -> list[tuple]:
        fetcher, chunks = PartitionFetcher(settings.kafka.bootstrap_servers, client_id="valueloop-bench"), []
        for r in snapshot_ranges(settings.kafka.bootstrap_servers, settings.kafka.event_topics.values()):
            position = r.start
            while position < r.stop:
                fetched = fetcher.fetch(r.topic, r.partition, position)
                if fetched.next_offset == position:
                    raise RuntimeError(f"{r.topic}[{r.partition}]: nothing to read at {position}, below {r.stop}")
                chunks.append((r.topic, r.partition, [x for x in fetched.records if x[0] < r.stop]))
                position = fetched.next_offset
        fetcher.close()
        return chunks

    def route() -> list:
        peek_all = EventDecoder().peek_all
        return [peek_all([record[3] for record in records], "user_id") for _, _, records in chunks]

    def decode() -> list[tuple]:
        decoder, events = EventDecoder(), []
        for topic, partition, records in chunks:
            events += decoder.decode_all(records, topic, partition)[0]
        return [(name, datum) for name, datum, _delivered_ms in events]

    def label() -> list:
        by_user: dict[str, list] = {}
        for name, datum in events:
            by_user.setdefault(datum["user_id"], []).append((name, datum))
        watermark_ms = max(datum["event_time_ms"] for _, datum in events)
        return [e for user_events in by_user.values()
                for e in label_user_events(user_events, settings.join.labels, watermark_ms)]

    chunks = timed("read", read)
    timed("route", route)
    events = timed("decode", decode)
    examples = timed("label", label)
    timed("write", lambda: b"".join(_framed(serialize_example(e)) for e in examples))
    read = sum(len(records) for _, _, records in chunks)
    return {"events": read, "seconds": sum(seconds.values()), "examples": len(examples),
            "us_per_event": {step: round(s / read * 1e6, 2) for step, s in seconds.items()},
            "write_us_per_example": round(seconds["write"] / max(len(examples), 1) * 1e6, 2)}


PATHS = {"reference": reference_path,
         "beam_fnapi": lambda settings: _beam_path(settings, "direct"),
         "beam_flink": lambda settings: _beam_path(settings, "flink"),
         "steps": step_costs}


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _in_child(path: str, settings: Settings) -> dict:
    process = subprocess.Popen([sys.executable, "-m", "bench.join", path, settings.model_dump_json()],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, done = [0], threading.Event()

    def sample():
        watched = psutil.Process(process.pid)
        while not done.wait(0.1):
            try:
                peak[0] = max(peak[0], _tree_rss(watched))
            except psutil.NoSuchProcess:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"bench join {path} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(peak[0] / 2**20, 1)
    result["events_per_s"] = round(result["events"] / result["seconds"])
    result["seconds"] = round(result["seconds"], 2)
    return result


def run_join_benchmark(settings: Settings, requests: int, days: float, output_dir: Path, repeats: int = 3) -> dict:
    with fresh_topics(settings.kafka, "join") as kafka:
        simulator = settings.simulator.model_copy(update={"requests": requests, "days": days})
        with KafkaSink(kafka) as sink:
            sink.write(Simulation(simulator).events())
        runs: dict[str, list[dict]] = {path: [] for path in PATHS}
        for repeat in range(repeats):
            for path in PATHS:  # in turn, so that a slow spell of the shared machine falls on every path alike
                run_settings = settings.model_copy(update={
                    "kafka": kafka, "simulator": simulator,
                    "join": settings.join.model_copy(update={"output_dir": output_dir / f"{path}-{repeat}"})})
                runs[path].append(_in_child(path, run_settings))
        reference, beam, flink, steps = (median_run(runs[path]) for path in PATHS)
        beam_us_per_event = 1e6 / beam["events_per_s"]
        return {
            "benchmark": "join",
            "environment": describe(("apache-beam", "kafka-python", "fastavro")),
            "settings": {"requests": requests, "days": days, "labels": json.loads(settings.join.labels.model_dump_json()),
                         "direct_num_workers": settings.join.direct_num_workers, "repeats": repeats,
                         "reported": "median run per path"},
            "results": {"reference_labeler": reference, "beam_fnapi_runner": beam, "beam_flink_runner": flink,
                        "step_costs": steps},
            "summary": {
                "events": beam["events"],
                "beam_events_per_s": beam["events_per_s"],
                "beam_vs_reference_speed": round(beam["events_per_s"] / reference["events_per_s"], 3),
                "beam_vs_reference_peak_memory": round(beam["peak_rss_mb"] / reference["peak_rss_mb"], 2),
                "beam_us_per_event": round(beam_us_per_event, 2),
                "steps_us_per_event": steps["us_per_event"],  # the work on every event, each step alone
                "beam_beyond_the_steps_us_per_event": round(beam_us_per_event - sum(steps["us_per_event"].values()), 2),
                "flink_events_per_s": flink["events_per_s"],
                "flink_vs_reference_speed": round(flink["events_per_s"] / reference["events_per_s"], 3),
                "flink_vs_reference_peak_memory": round(flink["peak_rss_mb"] / reference["peak_rss_mb"], 2),
                "goal_events_per_s": GOAL_EVENTS_PER_S,
                "goal_within_reference": f"at most {GOAL_WITHIN_REFERENCE:g}x slower",
                "goal_met": {name: run["events_per_s"] >= GOAL_EVENTS_PER_S
                             and reference["events_per_s"] <= GOAL_WITHIN_REFERENCE * run["events_per_s"]
                             for name, run in (("fnapi", beam), ("flink", flink))},
            },
        }


if __name__ == "__main__":
    path, settings_json = sys.argv[1], sys.argv[2]
    print(json.dumps(PATHS[path](Settings.model_validate_json(settings_json))))
