"""`valueloop join`: the bounded join from the Kafka topics to TFRecord partitions, on a named runner; and the
landing of the serving log's hours beside them (`land_serving_log`).

Sources and sinks live here, at the edge; the composites in decode, join and examples see only PCollections.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import signal
import threading
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from config.join import JoinSettings, LatenessReference
from config.kafka import KafkaSettings
from kafka_io.metadata import topic_configs
from pipelines.dead_letters import WriteDeadLetters, already_written, topic_limit
from pipelines.decode import DecodeEvents, EventTimeStamps, GroupByUserShard, RecordClock
from pipelines.examples import RecordLateEvents, WriteExamples
from pipelines.flink import flink_pipeline_options
from pipelines.join import EstimateWatermark, LabelImpressions
from pipelines.kafka_source import (
    FollowKafkaTopics,
    PartitionRange,
    ReadKafkaRanges,
    largest_batch_bytes,
    ranges_for_times,
    snapshot_ranges,
    start_positions,
)
from pipelines.partitions import describe_partition, partition_of
from pipelines.serving_log import LandServedRequests, landed_manifests, record_dead_letters, write_hour
from pipelines.stream_status import status_path
from schemas import BadEventError, EventDecoder
from schemas.units import HOUR_MS, now_ms


@dataclasses.dataclass
class JoinResult:
    manifests: list[dict]
    counters: dict[str, int]
    ranges: list[PartitionRange]

    @property
    def late_share(self) -> float:
        """The share of the events read (on time or late, repeats not counted) that came past the allowed lateness."""
        late = self.counters.get("join.late_events", 0)
        events = self.counters.get("decode.events", 0) - self.counters.get("join.duplicate_deliveries", 0)
        return late / events if events > 0 else 0.0


class MostlyLateError(ValueError):
    """A bounded run found a larger share of its events late than `max_late_share` allows; its partitions are
    written, but what they lack is likely a setting's fault, not the data's."""

    def __init__(self, result: JoinResult, settings: JoinSettings, log_append_topics: list[str] = ()):
        self.result = result
        late = result.counters.get("join.late_events", 0)
        lines = [f"{late} events ({result.late_share:.0%} of those read) came more than "
                 f"{settings.allowed_lateness_s:.0f}s after their event time, measured against "
                 f"{settings.lateness_reference.value.replace('_', ' ')}: they went to the late output, not into "
                 f"labels ({len(result.manifests)} partitions written)."]
        if settings.lateness_reference is LatenessReference.RECORD_TIME and log_append_topics:
            lines.append(f"The topics {', '.join(log_append_topics)} have message.timestamp.type=LogAppendTime: "
                         "the broker stamps each record with the time it appended it, not the time the event was "
                         "produced, so events appended long after they happened (a replay, a backfill) all look "
                         "late. Measure lateness against event time: --lateness event_time "
                         "(join.lateness_reference), or set the topics to CreateTime.")
        elif settings.lateness_reference is LatenessReference.RECORD_TIME:
            lines.append("If the topics were replayed by a tool that stamps each record with the time it sent it, "
                         "measure lateness against event time: --lateness event_time (join.lateness_reference).")
        lines.append("To accept the late output as it is: --accept-late (join.max_late_share: 1).")
        super().__init__(" ".join(lines))


class JobStopped(Exception):
    """The process was asked to stop (SIGINT or SIGTERM) and the job has stopped, its job server with it."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def stopped_by_signals():
    """SIGTERM, what `kill` and schedulers send, stops a job the way Ctrl-C does, and either ends in JobStopped.

    Beam stops the job server it started (the Flink job server's JVM, Prism) on SIGINT only, by a handler that
    then calls the one it found; a SIGTERM would end this process and leave the server running. So SIGTERM is
    passed on as SIGINT. Whatever the stop then raises (a KeyboardInterrupt, or the job's streams cancelled under
    it) becomes one JobStopped. Beam's threads whose streams the stop closed fail too; their exceptions and logged
    errors are not printed: they are the stop, not a failure. (A bundle that the stop cuts off still has its
    traceback printed: Beam's SDK worker writes that to stderr itself.)
    """
    stopped: list[int] = []

    def stopping(signum):
        stopped.append(signum)
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)  # the closed streams' errors, as above

    def on_sigint(signum, frame):
        stopping(signum)
        signal.default_int_handler(signum, frame)

    def on_sigterm(signum, frame):
        stopping(signum)
        signal.raise_signal(signal.SIGINT)

    def quiet_after_stop(args):
        if not stopped:
            default_hook(args)

    default_hook, threading.excepthook = threading.excepthook, quiet_after_stop
    handlers = {signal.SIGINT: signal.signal(signal.SIGINT, on_sigint),
                signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm)}
    try:
        yield
    except BaseException as error:
        if not stopped:
            raise
        raise JobStopped(stopped[0]) from error
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        if not stopped:
            threading.excepthook = default_hook


def plan_ranges(kafka: KafkaSettings, settings: JoinSettings, from_ms: int | None, to_ms: int | None) -> list[PartitionRange]:
    """The offsets to read: everything the topics hold now, or what an impression interval needs as context."""
    topics = list(kafka.event_topics.values())
    if from_ms is None and to_ms is None:
        return snapshot_ranges(kafka.bootstrap_servers, topics, settings.stable_offsets_wait_s)
    horizon_ms = settings.labels.horizon_ms
    return ranges_for_times(kafka.bootstrap_servers, topics, (from_ms or 0) - horizon_ms,
                            (to_ms if to_ms is not None else 2**62) + horizon_ms + settings.allowed_lateness_ms,
                            settings.stable_offsets_wait_s)


def _dead_letter_sink(kafka: KafkaSettings, ranges, max_batch_bytes: int) -> WriteDeadLetters:
    """The dead-letter writer, within the topic's own size limit, skipping letters it holds for `ranges` already;
    it reads its letters' origins back in batches of up to `max_batch_bytes`."""
    max_bytes = min(kafka.dead_letter_max_bytes, topic_limit(kafka.bootstrap_servers, kafka.dead_letter_topic))
    skip = already_written(kafka.bootstrap_servers, kafka.dead_letter_topic, ranges)
    return WriteDeadLetters(kafka.bootstrap_servers, kafka.dead_letter_topic, max_bytes, skip, max_batch_bytes)


def _runner(name: str, settings: JoinSettings):
    if name == "direct":
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        options = {"direct_num_workers": settings.direct_num_workers}
        if settings.direct_num_workers > 1:
            options["direct_running_mode"] = "multi_processing"
        return FnApiRunner(), PipelineOptions(flags=[], **options)
    if name == "flink":
        return "FlinkRunner", flink_pipeline_options()
    raise ValueError(f"runner is direct or flink, not {name!r}")


def _event_time_of(clock: RecordClock):
    decoder = EventDecoder()

    def event_time_of(value: bytes, record_ms: int) -> int | None:
        try:
            return decoder.decode(value, timestamp_ms=record_ms, latest_record_ms=clock.latest_ms()).datum["event_time_ms"]
        except BadEventError:
            return None  # the decode step sends it to the dead letters; it tells nothing of event time

    return event_time_of


_LOG = logging.getLogger("valueloop.join")


def _report_written(manifest: dict) -> None:
    _LOG.info("wrote %s", describe_partition(manifest))


def run_streaming_join(kafka: KafkaSettings, settings: JoinSettings, runner: str = "direct",
                       from_ms: int | None = None) -> None:
    """Follows the topics and writes each event hour once the watermark settles it, until the job is stopped;
    logs a line for every hour written to the `valueloop.join` logger, and the source's and the label step's
    progress every `settings.progress_log_s`.

    With `from_ms`, it writes the hours from that one on, reading the records of the label horizon before it
    again for context (the clicks that compete for a conversion), as the bounded join does. `direct` runs on
    Prism (the binary at `settings.prism_location`), `flink` on an embedded Flink.
    """
    # Beam's portable runner puts job_server_timeout on the job's state and message streams too, which would end
    # a streaming job after it (60 s by default): a year, for a job that runs until it is stopped. The SDK's
    # user-state cache (off by default) spares the label step some of its round trips to the runner for state:
    # a quarter of the time to catch up with a backlog, measured on Flink.
    forever = {"job_server_timeout": 365 * 86400, "max_cache_memory_usage_mb": 100}
    if runner == "direct":
        # Prism splits a bundle that makes no progress for a while, and hands the rest of it back to be scheduled
        # again; for a stateful step it then frees the keys of that rest even while the first part still
        # processes them (`splitBundle` in its element manager, 2.75 and 2.77). A second bundle of the same user
        # then runs at once, their state writes race, and a user's events vanish from the label step's state:
        # hours came out short. Without dynamic splits each user is in one bundle at a time.
        options = PipelineOptions(flags=[], runner="PrismRunner", prism_location=str(settings.prism_location),
                                  environment_type="LOOPBACK", streaming=True, **forever,
                                  experiments=["prism_disable_sdf_split"])
    elif runner == "flink":
        options = flink_pipeline_options(streaming=True, **forever)
    else:
        raise ValueError(f"runner is direct or flink, not {runner!r}")
    context_from_ms = None if from_ms is None else from_ms - settings.labels.horizon_ms
    start = start_positions(kafka.bootstrap_servers, kafka.event_topics.values(), context_from_ms)
    bound_ms = settings.out_of_orderness_ms
    clock = RecordClock(settings.max_record_time_ahead_ms)  # read as records come
    max_batch_bytes = largest_batch_bytes(kafka.bootstrap_servers, kafka.event_topics.values(),
                                          settings.max_batch_bytes)
    dead_letters = _dead_letter_sink(kafka, [(t, p, o, 2**62) for t, p, o in start.positions], max_batch_bytes)
    with beam.Pipeline(options=options) as pipeline:
        records = pipeline | "Follow Kafka" >> FollowKafkaTopics(
            kafka.bootstrap_servers, start, bound_ms, _event_time_of(clock),
            stamp_event_time=settings.lateness_reference is LatenessReference.EVENT_TIME,
            max_batch_bytes=max_batch_bytes, progress_log_s=settings.progress_log_s,
            status_path=status_path(settings.output_dir))
        decoded = records | "Decode events" >> DecodeEvents(kafka.event_topics, clock)
        decoded.dead_letters | "Dead letters" >> dead_letters
        labeled = decoded.events | "Label impressions" >> LabelImpressions(
            settings.labels, allowed_lateness_ms=settings.allowed_lateness_ms, progress_log_s=settings.progress_log_s,
            shards=settings.stream_shards, release_every_ms=settings.release_every_ms)
        revisions = labeled.examples
        if from_ms is not None:  # --from is an hour, and each batch is of one hour
            revisions = revisions | "Only impressions from --from" >> beam.Filter(
                lambda hour, first_ms=from_ms: hour[1][0].example.event_time_ms >= first_ms)
        written = revisions | "Write examples" >> WriteExamples(
            settings.output_dir, {"mode": "streaming", "from_ms": from_ms}, horizon_ms=settings.labels.horizon_ms,
            allowed_lateness_ms=settings.allowed_lateness_ms)
        written | "Report each hour written" >> beam.Map(_report_written)
        labeled.late | "Late events" >> RecordLateEvents(settings.output_dir, f"streaming-{os.getpid()}")


def run_bounded_join(kafka: KafkaSettings, settings: JoinSettings, runner: str = "direct",
                     from_ms: int | None = None, to_ms: int | None = None,
                     ranges: list[PartitionRange] | None = None) -> JoinResult:
    """Reads the offset `ranges` (by default `plan_ranges`), labels the impressions the watermark settles in
    [from_ms, to_ms) and writes their hours; dead letters to their topic, late events to the late output.

    Raises MostlyLateError, after writing, when more than `settings.max_late_share` of the events were late.
    """
    for bound, name in ((from_ms, "--from"), (to_ms, "--to")):
        if bound is not None and bound % HOUR_MS:
            raise ValueError(f"{name} must be on the hour: partitions are whole event hours")
    clock = RecordClock(settings.max_record_time_ahead_ms, now_ms())
    ranges = ranges if ranges is not None else plan_ranges(kafka, settings, from_ms, to_ms)
    source = {"ranges": [r._asdict() for r in ranges],
              "ranges_digest": hashlib.sha256(json.dumps([list(r) for r in ranges]).encode()).hexdigest()[:16]}
    max_batch_bytes = largest_batch_bytes(kafka.bootstrap_servers, kafka.event_topics.values(),
                                          settings.max_batch_bytes)
    dead_letters = _dead_letter_sink(kafka, ranges, max_batch_bytes)
    runner_impl, options = _runner(runner, settings)
    pipeline = beam.Pipeline(runner=runner_impl, options=options)
    spread = runner == "direct" and settings.direct_num_workers > 1  # the Flink job runs at parallelism 1
    restamp = functools.partial(EventTimeStamps, clock) \
        if settings.lateness_reference is LatenessReference.EVENT_TIME else None
    chunks = pipeline | "Read Kafka offset ranges" >> ReadKafkaRanges(
        kafka.bootstrap_servers, ranges, settings.split_size, spread=spread, restamp=restamp,
        max_batch_bytes=max_batch_bytes)
    groups = chunks | "Group by user" >> GroupByUserShard(settings.user_shards)
    decoded = groups | "Decode events" >> DecodeEvents(kafka.event_topics, clock, grouped=True)
    decoded.dead_letters | "Dead letters" >> dead_letters
    watermark = chunks | "Estimate the watermark" >> EstimateWatermark(
        settings.out_of_orderness_ms, kafka.event_topics, clock)
    labeled = decoded.events | "Label impressions" >> LabelImpressions(
        settings.labels, watermark, from_ms, to_ms, settings.allowed_lateness_ms)
    manifests = labeled.examples | "Write examples" >> WriteExamples(settings.output_dir, source, watermark)
    labeled.late | "Late events" >> RecordLateEvents(settings.output_dir, source["ranges_digest"])
    del manifests  # read back from disk below: the runner may have run the writers in other processes
    collected: list[dict] = []
    result = pipeline.run()
    result.wait_until_finish()
    counters = {f"{c.key.metric.namespace}.{c.key.metric.name}": c.committed
                for c in result.metrics().query()["counters"]
                if c.key.metric.namespace != "beam"}  # Flink adds the SDK harness's own metrics
    for path in sorted(Path(settings.output_dir).glob("dt=*/hour=*/_manifest.json")):
        manifest = json.loads(path.read_text())
        if manifest["source"]["ranges_digest"] == source["ranges_digest"]:
            collected.append(manifest)
    joined = JoinResult(collected, counters, ranges)
    if joined.late_share > settings.max_late_share:
        configs = topic_configs(kafka.bootstrap_servers, kafka.event_topics.values())
        raise MostlyLateError(joined, settings, [topic for topic, config in configs.items()
                                                 if config.timestamp_type == "LogAppendTime"])
    return joined


@dataclasses.dataclass
class Landed:
    """What `land_serving_log` wrote: each hour's manifest, and the dead letters of the records it read."""

    manifests: list[dict]
    dead_letters: int

    @property
    def requests(self) -> int:
        return sum(m["requests"] for m in self.manifests)


def land_serving_log(kafka: KafkaSettings, settings: JoinSettings, from_ms: int, to_ms: int,
                     runner: str = "direct") -> Landed:
    """Lands the serving log's requests served in [from_ms, to_ms) (whole hours) under `settings.serving_log_dir`:
    reads the offsets whose record time is in [from_ms, to_ms + the out-of-orderness bound), writes each hour's
    file and manifest (an hour without requests gets a manifest that says so), and the dead letters to their
    topic, once per origin. Nothing, where `settings.serving_log_dir` is None."""
    if settings.serving_log_dir is None:
        return Landed([], 0)
    if from_ms % HOUR_MS or to_ms % HOUR_MS:
        raise ValueError("the serving log lands in whole event hours")
    topic = kafka.serving_log_topic
    ranges = ranges_for_times(kafka.bootstrap_servers, [topic], from_ms, to_ms + settings.out_of_orderness_ms,
                              settings.stable_offsets_wait_s)
    ranges = [r for r in ranges if r.stop > r.start]
    source = {"ranges": [r._asdict() for r in ranges],
              "ranges_digest": hashlib.sha256(json.dumps([list(r) for r in ranges]).encode()).hexdigest()[:16]}
    dead_letters = 0
    if ranges:
        clock = RecordClock(settings.max_record_time_ahead_ms, now_ms())
        max_batch_bytes = largest_batch_bytes(kafka.bootstrap_servers, [topic], settings.max_batch_bytes)
        runner_impl, options = _runner(runner, settings)
        pipeline = beam.Pipeline(runner=runner_impl, options=options)
        chunks = pipeline | "Read the serving log" >> ReadKafkaRanges(
            kafka.bootstrap_servers, ranges, settings.split_size, spread=False, max_batch_bytes=max_batch_bytes)
        letters, _manifests = chunks | "Land served requests" >> LandServedRequests(
            topic, clock, settings.serving_log_dir, from_ms, to_ms, source)
        letters | "Dead letters" >> _dead_letter_sink(kafka, ranges, max_batch_bytes)
        result = pipeline.run()
        result.wait_until_finish()
        dead_letters = sum(c.committed for c in result.metrics().query()["counters"]
                           if c.key.metric.namespace == "dead_letters"
                           and c.key.metric.name not in ("origin_unread", "written", "already_written"))
    manifests = []
    for hour_ms in range(from_ms, to_ms, HOUR_MS):
        [manifest] = landed_manifests(settings.serving_log_dir, hour_ms, hour_ms + HOUR_MS) or [None]
        if manifest is None or manifest["source"]["ranges_digest"] != source["ranges_digest"]:
            manifest = write_hour(settings.serving_log_dir, partition_of(hour_ms), [], source)
        manifests.append(record_dead_letters(settings.serving_log_dir, manifest, dead_letters))
    return Landed(manifests, dead_letters)
