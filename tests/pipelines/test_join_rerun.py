"""Killing the join mid-run and running it again gives the same files: none duplicated, none missing."""
import json
import os
import signal
import subprocess
import sys
import time

from simulator import Simulation, SimulatorConfig
from simulator.sinks import KafkaSink

SIM = SimulatorConfig.model_validate({"seed": 13, "requests": 1200, "days": 3.0, "catalogue": {"users": 100, "items": 50}})


def join_command(config, out):
    return [sys.executable, "-m", "valueloop.cli", "join", "--config", str(config), "--out", str(out)]


def files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_killed_then_rerun_gives_the_same_files(kafka_settings, tmp_path):
    with KafkaSink(kafka_settings) as sink:
        sink.write(Simulation(SIM).events())
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"kafka": json.loads(kafka_settings.model_dump_json()),
                                  "join": {"labels": {"purchase_window_s": 86400}}}))
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(join_command(config, clean), check=True, capture_output=True, timeout=600)
    expected = files(clean)
    manifests = [name for name in expected if name.endswith("_manifest.json")]
    assert len(manifests) > 10

    run = subprocess.Popen(join_command(config, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and run.poll() is None:
        if killed.exists() and any(killed.rglob("_manifest.json")):
            os.killpg(run.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    run.wait()
    partial = files(killed) if killed.exists() else {}
    assert run.returncode == -signal.SIGKILL, "the join finished before it could be killed"
    assert len([n for n in partial if n.endswith("_manifest.json")]) < len(manifests)

    subprocess.run(join_command(config, killed), check=True, capture_output=True, timeout=600)
    assert files(killed) == expected
