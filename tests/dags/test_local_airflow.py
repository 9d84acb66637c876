"""The loop on a real Airflow: `valueloop airflow up` starts PostgreSQL (Debian's, as the `postgres` user) and the
api-server, scheduler, dag-processor and triggerer with the LocalExecutor; the labeling DAG is triggered for two
hours and the retraining DAG for a day through Airflow's REST API; their runs succeed, the hours are asset
events partitioned by the hour, and the registry holds a promoted model."""
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from bench.dags import _call  # the same REST calls the benchmark makes
from tests.conftest import free_ports

VALUELOOP = [sys.executable, "-m", "valueloop.cli"]


def _wait_for_run(api: str, dag_id: str, run_id: str, timeout_s: float = 900) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = _call(f"{api}/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}")
        if run["state"] in ("success", "failed"):
            return run
        time.sleep(2)
    raise AssertionError(f"{dag_id} {run_id} still {run['state']} after {timeout_s:g} s")


@pytest.fixture
def local_airflow(loop_data, monkeypatch):
    run_dir = Path(tempfile.mkdtemp(prefix="valueloop-airflow-"))  # under /tmp, where the postgres user reaches
    run_dir.chmod(0o755)
    api_port, postgres_port = free_ports(2)
    settings = yaml.safe_load(loop_data["config"].read_text())
    settings["registry"] = {"directory": str(run_dir / "registry")}
    settings["loop"] = {**settings["loop"], "work_dir": str(run_dir / "work")}
    settings["airflow"] = {"run_dir": str(run_dir / "airflow"), "api_port": api_port, "postgres_port": postgres_port}
    settings["join"]["serving_log_dir"] = None  # two hours are labeled here; a day's serving log lands whole
    config = run_dir / "settings.yaml"
    config.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("VALUELOOP_LABELING_CRON", "off")  # runs only when triggered: no run for the wall clock's hour
    started = subprocess.run([*VALUELOOP, "airflow", "up", "-c", str(config)], capture_output=True, text=True,
                             timeout=600)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"airflow: up at http://127.0.0.1:{api_port} (database postgres)" in started.stdout
        yield f"http://127.0.0.1:{api_port}/api/v2", config, settings
    finally:
        stopped = subprocess.run([*VALUELOOP, "airflow", "down", "-c", str(config)], capture_output=True, text=True,
                                 timeout=120)
        assert "airflow: down" in stopped.stdout, stopped.stdout + stopped.stderr
        shutil.rmtree(run_dir, ignore_errors=True)


def test_the_scheduler_on_postgres_runs_labeling_and_retraining_triggered_through_the_rest_api(local_airflow,
                                                                                            loop_data):
    from promotion.registry import Registry
    from config.registry import RegistrySettings

    api, config, settings = local_airflow
    deadline = time.monotonic() + 120
    while not {"valueloop_labeling", "valueloop_retraining"} <= {d["dag_id"] for d in _call(f"{api}/dags")["dags"]}:
        assert time.monotonic() < deadline, _call(f"{api}/importErrors")
        time.sleep(1)
    for dag_id in ("valueloop_labeling", "valueloop_retraining"):
        assert _call(f"{api}/dags/{dag_id}", "PATCH", {"is_paused": False})["is_paused"] is False
    day = loop_data["days"][1]
    hours = [f"{day}T05:00:00", f"{day}T06:00:00"]
    runs = [_call(f"{api}/dags/valueloop_labeling/dagRuns", "POST", {"logical_date": None, "conf": {"hour": hour}})
            for hour in hours]
    for run in runs:
        assert _wait_for_run(api, "valueloop_labeling", run["dag_run_id"])["state"] == "success", run
    events = _call(f"{api}/assets/events?source_dag_id=valueloop_labeling")["asset_events"]
    assert sorted(e["partition_key"] for e in events) == hours
    assert all(e["name"] == "valueloop_labeled_hours" and e["extra"]["examples"] > 1000 for e in events)

    retraining = _call(f"{api}/dags/valueloop_retraining/dagRuns", "POST", {"logical_date": None, "conf": {"day": day}})
    finished = _wait_for_run(api, "valueloop_retraining", retraining["dag_run_id"])
    tasks = {t["task_id"]: t["state"] for t in _call(
        f"{api}/dags/valueloop_retraining/dagRuns/{urllib.request.quote(retraining['dag_run_id'], safe='')}"
        "/taskInstances")["task_instances"]}
    assert finished["state"] == "success", tasks
    assert tasks["promote"] == "success" and tasks["hold"] == "skipped"
    registry = Registry(RegistrySettings(**settings["registry"]))
    assert registry.production() == 1 and [p["to"] for p in registry.promotions()] == [1]
    promoted = _call(f"{api}/assets/events?source_dag_id=valueloop_retraining")["asset_events"]
    assert [e["name"] for e in promoted] == ["valueloop_production_model"]
