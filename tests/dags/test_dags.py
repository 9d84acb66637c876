"""The DAGs as Airflow runs them: the DagBag's structure, the labeling DAG's Beam job and asset event, and the
retraining DAG under `dag.test()` on data that went through the real broker and the join: a first day that
promotes, a clickbait-shifted day that keeps production and alerts a local HTTP server, and a re-run of that
day that changes nothing."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path


from tests.dags.conftest import own_config, run_dag
from valueloop.scheduling.dag_test import environment


def test_the_dagbag_loads_every_dag_with_its_structure_and_each_file_parses_fast(tmp_path):
    script = ("import json, time\n"
              "from airflow.dag_processing.dagbag import DagBag\n"
              "bag = DagBag()\n"
              "print(json.dumps({'errors': bag.import_errors, 'stats': {s.file: s.duration.total_seconds() "
              "for s in bag.dagbag_stats}, 'dags': {d.dag_id: {'tasks': {t.task_id: sorted(t.downstream_task_ids) "
              "for t in d.tasks}, 'max_active_runs': d.max_active_runs, 'params': sorted(d.params), "
              "'timeouts': [t.execution_timeout is not None for t in d.tasks], "
              "'retries': [t.retries for t in d.tasks], 'callbacks': [bool(t.on_failure_callback) for t in d.tasks], "
              "'schedule': type(d.timetable).__name__} for d in bag.dags.values()}}))\n")
    done = subprocess.run([sys.executable, "-c", script], env=environment(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    bag = json.loads(done.stdout.strip().splitlines()[-1])
    assert bag["errors"] == {}
    assert all(seconds < 1.0 for seconds in bag["stats"].values()), bag["stats"]
    labeling, retraining = bag["dags"]["valueloop_labeling"], bag["dags"]["valueloop_retraining"]
    assert set(bag["dags"]) == {"valueloop_labeling", "valueloop_retraining", "valueloop_manifests"}
    assert labeling["tasks"] == {"plan": ["label", "publish"], "label": ["publish"], "publish": []}
    assert labeling["schedule"] == "CronPartitionTimetable" and labeling["params"] == ["hour", "runner"]
    assert retraining["schedule"] == "PartitionedAssetTimetable" and retraining["params"] == ["day"]
    assert retraining["tasks"]["decide"] == ["hold", "promote"] and retraining["tasks"]["train"] == ["register"]
    assert retraining["tasks"]["settle_canary"] == ["audit"]  # the canary is decided before the day's candidate
    assert retraining["tasks"]["promote"] == retraining["tasks"]["hold"] == ["digest"]
    for dag in (labeling, retraining):
        assert dag["max_active_runs"] == 1 and all(dag["timeouts"]) and all(dag["callbacks"])
        assert all(r >= 1 for r in dag["retries"])


def test_the_labeling_dag_joins_its_hour_with_beam_and_publishes_the_hour_as_an_asset_event(airflow_home,
                                                                                            loop_data, tmp_path):
    _, environment = airflow_home
    env = {"VALUELOOP_CONFIG": str(own_config(loop_data, tmp_path))}  # the hour's serving log lands apart
    hour = f"{loop_data['days'][1]}T05:00:00"
    result = run_dag(environment, "valueloop_labeling", {"hour": hour}, env)
    assert result["state"] == "success", result
    assert result["tasks"] == {"plan": "success", "label": "success", "publish": "success"}
    [event] = result["asset_events"]
    assert event["asset"] == "valueloop_labeled_hours" and event["partition_key"] == hour
    partition = Path(loop_data["settings"].join.output_dir) / f"dt={loop_data['days'][1]}" / "hour=05"
    assert event["extra"]["uri"] == partition.resolve().as_uri() and event["extra"]["examples"] > 1000


def test_the_labeling_dag_lands_the_hours_serving_log_and_the_retraining_audit_weighs_the_candidate_by_it(
        airflow_home, loop_data, tmp_path):
    """Through the broker: the labeling DAG lands an hour of the serving log topic, where a malformed record
    and a slate that cannot be weighed (`loop_data`) go to the dead letters and every valid request is landed
    once; with the day's other hours landed by the same step, the retraining DAG's audit runs the off-policy
    and served checks from the landed log."""
    from pipelines.run import land_serving_log
    from pipelines.serving_log import read_landed
    from pipelines.tf_example import parse_example_fields, read_records
    from schemas.units import HOUR_MS
    from tests.conftest import read_dead_letters
    from trainer.data import find_partitions
    from valueloop.loop import day_range

    _, environment = airflow_home
    config = own_config(loop_data, tmp_path)
    settings = loop_data["settings"].model_copy(update={"join": loop_data["settings"].join.model_copy(
        update={"serving_log_dir": tmp_path / "serving_log"})})
    kafka, day = settings.kafka, loop_data["days"][1]
    start, end = day_range(day)
    hour_ms = start + 5 * HOUR_MS
    labeled = run_dag(environment, "valueloop_labeling", {"hour": f"{day}T05:00:00"},
                      {"VALUELOOP_CONFIG": str(config)})
    assert labeled["state"] == "success", labeled
    [event] = labeled["asset_events"]
    assert event["extra"]["served_requests"] > 100 and event["extra"]["serving_log_dead_letters"] == 2
    letters = [dict(m.headers) for m in read_dead_letters(kafka)
               if dict(m.headers)["source.topic"].decode() == kafka.serving_log_topic]
    assert sorted(h["reason"].decode() for h in letters) == ["invalid_value", "unknown_fingerprint"]

    for hour in range(start, end, HOUR_MS):
        if hour != hour_ms:
            land_serving_log(kafka, settings.join, hour, hour + HOUR_MS)
    landed = read_landed(tmp_path / "serving_log", start, end)
    positions: dict[str, set] = {}
    for partition in find_partitions(settings.join.output_dir, start, end):
        for record in read_records(partition.path):
            fields = parse_example_fields(record)
            request = fields["request_id"].decode() if isinstance(fields["request_id"], bytes) else fields["request_id"]
            positions.setdefault(request, set()).add(int(fields["position"]))
    assert sorted(r["request_id"] for r in landed) == sorted(positions)  # each once, none lost
    # the check weighs the requests whose every shown slot is labeled (an impression past the lateness is not)
    weighable = [r for r in landed if positions[r["request_id"]] == set(range(len(r["shown"])))]

    retrained = run_dag(environment, "valueloop_retraining", {"day": day}, {"VALUELOOP_CONFIG": str(config)})
    assert retrained["state"] == "success", retrained
    audit = tmp_path / "work" / day / "audit"
    audited = json.loads((audit / "audited.json").read_text())
    assert audited["offpolicy"] is not None and audited["served"] is not None
    assert audited["offpolicy"]["estimate"]["slates"] == len(weighable) > 0.99 * len(landed)
    assert json.loads((audit / "offpolicy.json").read_text()) == audited["offpolicy"]


def test_the_manifests_dag_publishes_each_hour_a_streaming_join_wrote_once(airflow_home, loop_data, tmp_path):
    import yaml

    _, environment = airflow_home
    settings = yaml.safe_load(loop_data["config"].read_text())
    settings["loop"]["work_dir"] = str(tmp_path / "work")  # a ledger of its own
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings))
    hours = sorted(p.parent for p in Path(settings["join"]["output_dir"]).glob("dt=*/hour=*/_manifest.json"))
    first = run_dag(environment, "valueloop_manifests", {}, {"VALUELOOP_CONFIG": str(config)})
    assert first["state"] == "success" and first["tasks"] == {"publish_new_hours": "success"}, first
    keys = sorted(e["partition_key"] for e in first["asset_events"])
    assert len(keys) == len(hours) > 48 and keys[0] == f"{loop_data['days'][0]}T00:00:00"
    assert first["asset_events"][0]["extra"]["partitions"][keys[0]] == hours[0].resolve().as_uri()
    again = run_dag(environment, "valueloop_manifests", {}, {"VALUELOOP_CONFIG": str(config)})
    assert again["tasks"] == {"publish_new_hours": "skipped"} and again["asset_events"] == []


def _digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_retraining_promotes_then_holds_a_clickbait_day_with_an_alert_and_a_rerun_changes_nothing(
        airflow_home, loop_data, receiver):
    from promotion.registry import Registry

    _, environment = airflow_home
    env = {"VALUELOOP_CONFIG": str(loop_data["config"]), "VALUELOOP_ALERT_WEBHOOK_URL": f"{receiver.url}/hook"}
    settings = loop_data["settings"]
    _, day1, day2 = loop_data["days"]

    first = run_dag(environment, "valueloop_retraining", {"day": day1}, env)
    assert first["state"] == "success", first
    assert first["tasks"]["promote"] == "success" and first["tasks"]["hold"] == "skipped", first["tasks"]
    registry = Registry(settings.registry)
    assert registry.production() == 1 and registry.version(1).verdict in ("pass", "warn")
    assert [e["asset"] for e in first["asset_events"]] == ["valueloop_production_model"]

    second = run_dag(environment, "valueloop_retraining", {"day": day2}, env)
    assert second["state"] == "success", second
    assert second["tasks"]["hold"] == "success" and second["tasks"]["promote"] == "skipped", second["tasks"]
    assert registry.production() == 1 and registry.version(2).verdict == "block"
    [alert] = receiver.bodies("/hook")
    assert alert["check"].startswith("promotion_held.") and alert["window"] == day2
    assert alert["status"] == "firing"
    assert "clickbait signature" in alert["summary"]

    work = Path(settings.loop.work_dir) / day2
    before = _digest(work)
    again = run_dag(environment, "valueloop_retraining", {"day": day2}, env)
    assert again["state"] == "success" and again["tasks"]["hold"] == "success", again
    assert _digest(work) == before
    assert [v.version for v in registry.versions()] == [1, 2] and registry.production() == 1
    assert len(receiver.bodies("/hook")) == 1  # no second alert
    assert len(registry.promotions()) == 1


def test_airflow_connections_and_the_variable_configure_the_sinks_and_the_settings(receiver, tmp_path):
    """Airflow's own secrets (here its environment backend: AIRFLOW_CONN_*, AIRFLOW_VAR_*) name the alert sinks and
    the settings file; an alert through them reaches the local server as each service documents it."""
    import subprocess
    import sys

    script = ("import json\n"
              "from promotion.alerts import Alert, Severity, deliver\n"
              "from valueloop.scheduling.assets import config_path\n"
              "from valueloop.scheduling.notifier import sinks\n"
              "found = sinks()\n"
              "alert = Alert('airflow.valueloop_retraining.train', 'manual__1', Severity.ERROR, 'train failed')\n"
              "outcomes = deliver(alert, found, attempts=1)\n"
              "print(json.dumps({'sinks': [s.name for s in found], 'delivered': [o.delivered for o in outcomes],"
              " 'config': config_path()}))\n")
    env = {**environment(tmp_path),
           "AIRFLOW_CONN_VALUELOOP_WEBHOOK": json.dumps({"conn_type": "http", "host": f"{receiver.url}/hook"}),
           "AIRFLOW_CONN_VALUELOOP_PAGERDUTY": json.dumps({"conn_type": "http", "password": "R0UTINGKEY",
                                                          "extra": {"url": f"{receiver.url}/v2/enqueue"}}),
           "AIRFLOW_VAR_VALUELOOP_CONFIG": str(tmp_path / "settings.yaml")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said == {"sinks": ["log", "webhook", "pagerduty"], "delivered": [True, True, True],
                    "config": str(tmp_path / "settings.yaml")}
    [hook] = receiver.bodies("/hook")
    assert hook["check"] == "airflow.valueloop_retraining.train" and hook["status"] == "firing"
    [page] = receiver.bodies("/v2/enqueue")
    assert page["routing_key"] == "R0UTINGKEY" and page["event_action"] == "trigger"
