"""`valueloop bench dags`: how long each DAG file takes to parse, and how long the retraining DAG takes end to
end on a day of simulated traffic beside its tasks run directly.

Two simulated days are labeled into partitions (the retraining trains on the first and audits the second).
Three paths retrain that day, each in a fresh process with a fresh registry and work directory, so every run
trains, registers, audits and promotes:
- `direct`: the task functions of `valueloop/loop.py` called one after the other;
- `dag_test`: the retraining DAG under `dag.test()` on a SQLite metadata database;
- `scheduler`: the DAG triggered through the REST API of `valueloop airflow up` (PostgreSQL, the LocalExecutor:
  each task its own process), from the trigger until the run has succeeded.
The paths run in turn, `repeats` times, and the medians are compared. Goal: orchestration adds at most 20% to
the tasks' own time. Parse times are the DagBag's own per-file durations, in fresh processes.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from bench.environment import describe

GOAL_OVERHEAD = 0.20
DIRECT = """
import sys
from config import load_settings
from valueloop import loop
from valueloop import canary
settings = load_settings(sys.argv[1]); day = sys.argv[2]
loop.check_manifests(settings, settings.loop, day)
canary.settle(settings, day)
model = loop.train_candidate(settings, settings.loop, day)
version = loop.register_candidate(settings, day, model)
audited = loop.audit_candidate(settings, settings.loop, day, version)
if audited.promotable:
    loop.promote_candidate(settings, day, audited)
elif canary.open_canary(settings, day, audited, int(day.replace("-", ""))) is None:
    loop.hold_candidate(settings, day, audited)
loop.send_digest(settings, day)
"""
PARSE = """
import json
from airflow.dag_processing.dagbag import DagBag
print(json.dumps({s.file: s.duration.total_seconds() for s in DagBag().dagbag_stats}))
"""


def _write_days(root: Path, requests: int) -> tuple[Path, str]:
    from pipelines.label_files import label_events, write_examples
    from config.join import LabelConfig
    from simulator import Simulation, SimulatorConfig

    labels = LabelConfig(click_window_s=1800, cart_window_s=3600, purchase_window_s=6 * 3600)
    config = SimulatorConfig.model_validate({"requests": requests, "days": 2.5, "seed": 8})
    events = [(e.name, e.datum) for e in Simulation(config).events()]
    write_examples(label_events(events, labels, watermark_ms=config.end_ms + 10 * 86_400_000), root / "examples",
                   {"benchmark": "dags"})
    return root / "examples", (config.start + dt.timedelta(days=1)).strftime("%Y-%m-%d")


def _settings_file(root: Path, examples: Path, name: str, extra: dict | None = None) -> Path:
    settings = {"join": {"output_dir": str(examples)}, "registry": {"directory": str(root / name / "registry")},
                "loop": {"work_dir": str(root / name / "work"), "alerts_file": str(root / name / "alerts.json")},
                **(extra or {})}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def _fresh(root: Path, name: str) -> None:
    shutil.rmtree(root / name / "registry", ignore_errors=True)
    shutil.rmtree(root / name / "work", ignore_errors=True)
    (root / name / "alerts.json").unlink(missing_ok=True)


def _call(url: str, method: str = "GET", body: dict | None = None) -> dict:
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def _scheduler_run(api: str, day: str) -> float:
    started = time.perf_counter()
    run = _call(f"{api}/dags/valueloop_retraining/dagRuns", "POST", {"logical_date": None, "conf": {"day": day}})
    path = f"{api}/dags/valueloop_retraining/dagRuns/{urllib.request.quote(run['dag_run_id'], safe='')}"
    while (state := _call(path)["state"]) not in ("success", "failed"):
        time.sleep(0.5)
    if state != "success":
        raise RuntimeError(f"the retraining run {run['dag_run_id']} failed on the scheduler")
    return time.perf_counter() - started


def run_dags_benchmark(requests: int, repeats: int = 3, scheduler: bool = True) -> dict:
    from valueloop.scheduling import dag_test
    from valueloop.scheduling.local import LocalAirflow
    from config.airflow import AirflowSettings

    root = Path(tempfile.mkdtemp(prefix="valueloop-bench-dags-"))
    root.chmod(0o755)  # PostgreSQL, as the postgres user, keeps its data under it
    try:
        examples, day = _write_days(root, requests)
        parse = []
        for _ in range(repeats):
            env = dag_test.environment(root / "parse")
            done = subprocess.run([sys.executable, "-c", PARSE], env=env, capture_output=True, text=True, check=True)
            parse.append(json.loads(done.stdout.strip().splitlines()[-1]))
        configs = {name: _settings_file(root, examples, name) for name in ("direct", "dag_test")}
        test_env = dag_test.environment(root / "airflow-test")
        dag_test.migrate(test_env)
        local = None
        if scheduler:
            configs["scheduler"] = _settings_file(root, examples, "scheduler", {"airflow": {
                "run_dir": str(root / "airflow-local"), "api_port": 28090, "postgres_port": 25442}})
            local = LocalAirflow(AirflowSettings(run_dir=root / "airflow-local", api_port=28090, postgres_port=25442),
                                 configs["scheduler"])
            local.up()
            api = f"{local.url}/api/v2"
            deadline = time.monotonic() + 120
            while "valueloop_retraining" not in {d["dag_id"] for d in _call(f"{api}/dags")["dags"]}:
                if time.monotonic() > deadline:
                    raise RuntimeError("the dag-processor did not serialize the retraining DAG in 120 s")
                time.sleep(1)
            _call(f"{api}/dags/valueloop_retraining", "PATCH", {"is_paused": False})
        seconds: dict[str, list[float]] = {name: [] for name in configs}
        try:
            for _ in range(repeats):
                for name, config in configs.items():
                    _fresh(root, name)
                    started = time.perf_counter()
                    if name == "direct":
                        subprocess.run([sys.executable, "-c", DIRECT, str(config), day], check=True,
                                       capture_output=True, text=True)
                    elif name == "dag_test":
                        result = dag_test.run({**test_env, "VALUELOOP_CONFIG": str(config)}, "valueloop_retraining",
                                              {"day": day})
                        if result["state"] != "success":
                            raise RuntimeError(f"dag.test of the retraining failed: {result}")
                    else:
                        seconds[name].append(_scheduler_run(api, day))
                        continue
                    seconds[name].append(time.perf_counter() - started)
        finally:
            if local is not None:
                local.down()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    median = {name: sorted(runs)[len(runs) // 2] for name, runs in seconds.items()}
    overhead = {name: median[name] / median["direct"] - 1 for name in median if name != "direct"}
    files = sorted(parse[0])
    return {"benchmark": "dags", "environment": describe(("apache-airflow", "tensorflow", "mlflow")),
            "settings": {"requests": requests, "day": day, "repeats": repeats, "reported": "median run per path"},
            "results": {"parse_s": {f: {"median": sorted(p[f] for p in parse)[len(parse) // 2],
                                        "each_run": [round(p[f], 4) for p in parse]} for f in files},
                        "retraining_s": {name: {"median": round(median[name], 2),
                                                "each_run": [round(s, 2) for s in runs]}
                                         for name, runs in seconds.items()}},
            "summary": {"slowest_parse_s": max(sorted(p[f] for p in parse)[len(parse) // 2] for f in files),
                        "tasks_direct_s": round(median["direct"], 2),
                        **{f"overhead_{name}": round(v, 3) for name, v in overhead.items()},
                        "goal_overhead_at_most": GOAL_OVERHEAD,
                        "goal_met": all(v <= GOAL_OVERHEAD for v in overhead.values())}}
