"""The streaming join through the real broker writes the same hours as the bounded join.

The job follows the topics and writes each event hour once the watermark settles it. Every hour it writes must
equal, byte for byte, what the bounded join writes for it. On Flink it does; on Prism it loses examples.
"""
import contextlib
import json
import re
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from pipelines.kafka_source import snapshot_ranges
from pipelines.run import run_bounded_join
from config.join import JoinSettings
from simulator import Simulation, SimulatorConfig
from simulator.sinks import KafkaSink

SIM = SimulatorConfig.model_validate({"seed": 17, "requests": 1000, "days": 3.0, "catalogue": {"users": 80, "items": 40}})
LABELS = {"purchase_window_s": 86400}


def tfrecords(root):
    return {p.parent.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("examples.tfrecord")}


@contextlib.contextmanager
def streaming_join(kafka_settings, tmp_path, output_dir, runner="direct", *options):
    """`valueloop join --mode streaming` as a user starts it, in its own process group; killed on exit."""
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"kafka": json.loads(kafka_settings.model_dump_json()),
                                  "join": {"labels": LABELS, "output_dir": str(output_dir), "progress_log_s": 2},
                                  "loop": {"alerts_file": str(tmp_path / "alerts.json")}}))
    with open(tmp_path / "join.log", "a") as log:
        job = subprocess.Popen([sys.executable, "-m", "valueloop.cli", "join", "--mode", "streaming", "--runner",
                                runner, "--config", str(config), *options], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield job
        finally:
            with contextlib.suppress(ProcessLookupError):  # a group that stopped by itself is empty
                os.killpg(job.pid, signal.SIGKILL)
            job.wait()


def wait_for_hours(job, directory, hours, at_least=None, timeout_s=300):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        written = tfrecords(directory)
        if (set(hours) <= set(written)) if at_least is None else len(written) >= at_least:
            return
        assert job.poll() is None, "the streaming job stopped by itself"
        time.sleep(2)


def test_streaming_join_on_flink_writes_the_bounded_joins_hours(kafka_settings, tmp_path):
    with KafkaSink(kafka_settings) as sink:
        sink.write(Simulation(SIM).events())
    bounded, streamed = tmp_path / "bounded", tmp_path / "streamed"
    run_bounded_join(kafka_settings, JoinSettings.model_validate({"labels": LABELS, "output_dir": str(bounded)}))
    expected = tfrecords(bounded)
    assert len(expected) > 20
    wanted = sorted(expected)[:-1]  # the stream's watermark may trail the bounded one by an hour

    with streaming_join(kafka_settings, tmp_path, streamed, "flink") as job:
        wait_for_hours(job, streamed, wanted)
        time.sleep(5)  # a partition written twice would be rewritten by now
    got = tfrecords(streamed)
    assert [hour for hour in wanted if got.get(hour) != expected[hour]] == []


def _send_when_led(settings, events, timeout_s=90):
    """Sends once the restarted node leads its partitions again (until then produce requests fail)."""
    from kafka_io.producer import DeliveryError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with KafkaSink(settings) as sink:
                return sink.write(events)
        except DeliveryError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


@pytest.mark.parametrize("runner", ["direct", "flink"])
def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(kafka_broker, kafka_settings, tmp_path, runner):
    events = list(Simulation(SIM).events())
    half = len(events) // 2
    with KafkaSink(kafka_settings) as sink:
        sink.write(events[:half])
    streamed = tmp_path / "streamed"
    with streaming_join(kafka_settings, tmp_path, streamed, runner) as job:
        wait_for_hours(job, streamed, (), at_least=3)
        assert len(tfrecords(streamed)) >= 3, "the stream wrote nothing before the restart"
        kafka_broker.down()
        time.sleep(3)
        kafka_broker.up()
        _send_when_led(kafka_settings, events[half:])

        bounded = tmp_path / "bounded"
        run_bounded_join(kafka_settings, JoinSettings.model_validate({"labels": LABELS, "output_dir": str(bounded)}))
        expected = tfrecords(bounded)
        wanted = sorted(expected)[:-1]
        wait_for_hours(job, streamed, wanted)
        time.sleep(5)
    got = tfrecords(streamed)
    assert [hour for hour in wanted if got.get(hour) != expected[hour]] == []


def test_a_killed_stream_resumed_from_its_output_writes_the_bounded_joins_hours(kafka_settings, tmp_path):
    events = list(Simulation(SIM.model_copy(update={"requests": 500})).events())
    half = len(events) // 2
    with KafkaSink(kafka_settings) as sink:
        sink.write(events[:half])
    streamed = tmp_path / "streamed"
    with streaming_join(kafka_settings, tmp_path, streamed, "flink") as job:
        wait_for_hours(job, streamed, (), at_least=3)
    before = tfrecords(streamed)  # the job was killed (SIGKILL) on leaving the block
    assert len(before) >= 3, "the stream wrote nothing before it was killed"
    with KafkaSink(kafka_settings) as sink:
        sink.write(events[half:])
    bounded = tmp_path / "bounded"
    run_bounded_join(kafka_settings, JoinSettings.model_validate({"labels": LABELS, "output_dir": str(bounded)}))
    expected = tfrecords(bounded)
    wanted = sorted(expected)[:-1]

    with streaming_join(kafka_settings, tmp_path, streamed, "flink", "--resume") as job:
        wait_for_hours(job, streamed, wanted)
        time.sleep(5)
    got = tfrecords(streamed)
    assert [hour for hour in wanted if got.get(hour) != expected[hour]] == []
    assert {hour: got[hour] for hour in before} == before  # what was written before the kill stands
    assert "resuming at " in (tmp_path / "join.log").read_text()


def _processes_in_group(group: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == group:
                members.append(process)
    return members


def test_sigterm_stops_the_stream_and_the_flink_job_server_it_started(kafka_settings, tmp_path, receiver):
    """SIGTERM to the job's own process, as `kill` or a scheduler sends it: the job server's JVM goes with it.
    Until then the job logs a line for every hour it writes, and `valueloop join status` says it keeps up; once
    it has stopped, that it has gone silent, and with `--alert` it warns Slack (a real HTTP server) once."""
    with KafkaSink(kafka_settings) as sink:
        sink.write(Simulation(SIM.model_copy(update={"requests": 300})).events())
    streamed = tmp_path / "streamed"
    with streaming_join(kafka_settings, tmp_path, streamed, "flink") as job:
        wait_for_hours(job, streamed, (), at_least=1)
        assert any("flink-job-server" in " ".join(p.cmdline()) for p in _processes_in_group(job.pid))
        running = _join_status(tmp_path / "settings.json")
        assert running.returncode == 0 and "the streaming join keeps up: 0 records behind" in running.stdout, running
        ends = {(t, p): e for t, p, _, e in json.loads(_join_status(tmp_path / "settings.json", "--json").stdout)
                ["status"]["partitions"]}
        assert ends == {(r.topic, r.partition): r.stop
                        for r in snapshot_ranges(kafka_settings.bootstrap_servers,
                                                 kafka_settings.event_topics.values())}
        os.kill(job.pid, signal.SIGTERM)
        code = job.wait(timeout=60)
        assert _processes_in_group(job.pid) == []  # not even the JVM, which SIGKILL of the group would hide
        assert code == 128 + signal.SIGTERM
    log = (tmp_path / "join.log").read_text()
    # Its last word. A bundle the stop cut off may have its traceback printed before it: Beam's worker prints
    # those to stderr itself.
    assert log.strip().splitlines()[-1].startswith("error: stopped by SIGTERM")
    for hour in tfrecords(streamed):  # and it said what it wrote as it went
        assert f" wrote {hour} " in log
    # and how it went: what its source read and how far behind it was, what its label step did
    assert re.search(r"stream over \d+ s: records [\d,]+; source_calls [\d,]+; .*records_behind \d+", log), log[-3000:]
    assert re.search(r"label over \d+ s: .*bundles [\d,]+", log), log[-3000:]
    # stopped: silent for longer than the set time (1 s here) is falling behind, and says so once
    quick = json.loads((tmp_path / "settings.json").read_text())
    quick["join"]["lag_alert_after_s"] = 1
    (tmp_path / "quick.json").write_text(json.dumps(quick))
    time.sleep(2)
    environment = {**os.environ, "VALUELOOP_SLACK_WEBHOOK_URL": f"{receiver.url}/slack"}
    for _ in range(2):
        silent = _join_status(tmp_path / "quick.json", "--alert", env=environment)
        assert silent.returncode == 1 and "the streaming join has written no status for" in silent.stderr, silent
    (warning,) = receiver.bodies("/slack")
    assert warning["text"].startswith("[WARNING] the streaming join has written no status for")


def _join_status(config, *options, env=None):
    return subprocess.run([sys.executable, "-m", "valueloop.cli", "join", "status", "--config", str(config),
                           *options], capture_output=True, text=True, env=env, timeout=120)
