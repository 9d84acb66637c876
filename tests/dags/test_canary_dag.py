"""The canary on a schedule, through the real broker: the retraining DAG under `dag.test()` opens a canary for a
candidate it cannot judge, `valueloop simulate --policy logging` serves the next day split between the control
and that candidate, the bounded join labels the day, and the retraining DAG's run for that day decides the
canary from its split test before it judges the day's own candidate."""
import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.dags.conftest import run_dag

REQUESTS = 12_000  # over a day and a half: the served day, and the hours after it that settle its labels


def test_the_retraining_dag_canaries_a_candidate_it_cannot_judge_and_decides_it_by_the_split_test(
        airflow_home, loop_data, kafka_broker, receiver, tmp_path):
    from ab.analysis import load_impressions
    from config import Settings
    from pipelines.run import run_bounded_join
    from promotion.registry import Registry
    from schemas.units import DAY_MS
    from tests.conftest import _own_topics
    from valueloop.loop import day_range

    _, environment = airflow_home
    # the loop's labeled days copied, so that the served day lands beside them and nowhere else
    shutil.copytree(loop_data["settings"].join.output_dir, tmp_path / "examples")
    kafka = _own_topics(kafka_broker)
    _, day1, _ = loop_data["days"]
    served_day = (dt.date.fromisoformat(loop_data["days"][0]) + dt.timedelta(days=3)).isoformat()
    settings = yaml.safe_load(loop_data["config"].read_text())
    settings["kafka"] = json.loads(kafka.model_dump_json())
    settings["join"].update(output_dir=str(tmp_path / "examples"), serving_log_dir=str(tmp_path / "serving_log"))
    settings["loop"].update(work_dir=str(tmp_path / "work"), canary_share=0.5)
    settings["registry"]["directory"] = str(tmp_path / "registry")
    settings["audit"]["min_impressions"] = 10**9  # every day too small to judge: each candidate is inconclusive
    settings["simulator"] = {"seed": 5, "catalogue": {"users": 2_500, "items": 350},  # the loop's world
                             "start": f"{served_day}T00:00:00Z"}
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings))
    loaded = Settings.model_validate(settings)
    env = {"VALUELOOP_CONFIG": str(config), "VALUELOOP_ALERT_WEBHOOK_URL": f"{receiver.url}/hook"}
    work, registry = tmp_path / "work", Registry(loaded.registry)

    first = run_dag(environment, "valueloop_retraining", {"day": day1}, env)
    assert first["state"] == "success", first
    assert first["tasks"]["settle_canary"] == "success" and first["tasks"]["hold"] == "success", first["tasks"]
    canary = json.loads((work / "canary.json").read_text())
    assert canary["audited_day"] == day1 and canary["candidate"] == 1 and canary["production"] is None
    assert canary["served_day"] is None and registry.production() is None
    assert receiver.bodies("/hook") == []  # a canary, not an alert

    served = subprocess.run([sys.executable, "-m", "valueloop.cli", "simulate", "--config", str(config),
                             "--requests", str(REQUESTS), "--days", "1.5", "--policy", "logging"],
                            capture_output=True, text=True, timeout=900)
    assert served.returncode == 0, served.stderr[-3000:]
    logging = loaded.simulator.logging_policy.name
    assert f"canary in flight: served by {logging} | valueloop-ranker/v1" in served.stderr
    assert json.loads((work / "canary.json").read_text())["served_day"] == served_day
    start, end = day_range(served_day)
    run_bounded_join(loaded.kafka, loaded.join, from_ms=start, to_ms=end + DAY_MS)
    assert set(load_impressions(tmp_path / "examples", start, end)["arm"]) == {logging, "valueloop-ranker/v1"}

    second = run_dag(environment, "valueloop_retraining", {"day": served_day}, env)
    assert second["state"] == "success", second
    assert second["tasks"]["settle_canary"] == "success", second["tasks"]
    [decided] = [json.loads(line) for line in (work / "canaries.jsonl").read_text().splitlines()]
    analysis = decided["analysis"]
    assert decided["canary"]["served_day"] == served_day and analysis["valid"]
    [lift] = [x for x in analysis["lifts"] if x["metric"] == "purchases_per_impression" and not x["cuped"]]
    low, high = lift["relative_interval"]
    drop = loaded.audit.canary_purchase_drop
    expected = "pass" if low >= -drop else "block" if high < -drop else "inconclusive"
    assert decided["status"] == expected and decided["promote"] == (expected == "pass")
    assert registry.version(1).verdict == expected
    assert registry.production() == (1 if expected == "pass" else None)
    alerts = receiver.bodies("/hook")
    assert len(alerts) == (0 if expected == "pass" else 1)
    # the day's own candidate is judged against the production the canary's decision left, and (as every
    # candidate here) cannot be judged: with the first canary closed, it is the next one
    audited = json.loads((work / served_day / "audit" / "audited.json").read_text())
    assert audited["version"] == 2 and audited["production"] == registry.production()
    assert json.loads((work / "canary.json").read_text())["candidate"] == 2

    again = run_dag(environment, "valueloop_retraining", {"day": served_day}, env)  # a re-run changes nothing
    assert again["state"] == "success", again
    assert len((work / "canaries.jsonl").read_text().splitlines()) == 1 and len(receiver.bodies("/hook")) == len(alerts)
    assert json.loads((work / "canary.json").read_text())["candidate"] == 2
    assert Path(registry.version(2).model_dir).exists() and [v.version for v in registry.versions()] == [1, 2]
