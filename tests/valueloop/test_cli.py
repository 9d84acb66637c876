"""The `valueloop` command as a user runs it: a real process, real files, the real broker."""
import json
import subprocess
import sys
from pathlib import Path

import fastavro

from simulator import World

VALUELOOP = [sys.executable, "-m", "valueloop.cli"]


def run(*args, check=True, cwd=None):
    return subprocess.run([*VALUELOOP, *args], capture_output=True, text=True, check=check, timeout=300, cwd=cwd)


def unboxed(text: str) -> str:
    """A usage error's text as one line: typer draws it in a box, wrapped to the terminal's width."""
    return " ".join(text.replace("│", " ").split())


def test_help_is_the_manual():
    out = run("--help").stdout
    for command in ("kafka", "simulate", "join", "label", "train", "evaluate", "audit", "census", "demo", "bench"):
        assert command in out
    assert "up" in run("kafka", "--help").stdout


def test_simulate_to_files_keeps_the_ground_truth_apart(tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text("simulator:\n  catalogue:\n    users: 300\n    items: 60\n  delivery:\n    duplicate_rate: 0.0\n")
    result = run("simulate", "--config", str(config), "--to", "files", "--out", str(tmp_path / "sim"),
                 "--requests", "200", "--days", "0.5", "--seed", "3")
    summary = json.loads(result.stdout)
    with open(tmp_path / "sim" / "impression.avro", "rb") as f:
        impressions = list(fastavro.reader(f))
    assert len(impressions) == summary["delivered"]["Impression"]
    assert summary["delivered"]["Impression"] + summary["beyond_horizon"]["Impression"] == 200 * 10
    assert summary["duplicates"]["Impression"] == 0
    world = World.load(tmp_path / "sim" / "ground_truth.npz")
    assert world.config.seed == 3 and world.item_bait.shape == (60,)


def test_simulate_to_kafka_lands_in_the_topics(kafka_settings, tmp_path):
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"kafka": json.loads(kafka_settings.model_dump_json()),
                                  "simulator": {"catalogue": {"users": 100, "items": 40}}}))
    summary = json.loads(run("simulate", "--config", str(config), "--out", str(tmp_path), "--requests", "50",
                             "--days", "0.1").stdout)
    from infra.kafka import KafkaBroker

    counts = KafkaBroker(kafka_settings).topic_message_counts()
    for name, topic in kafka_settings.event_topics.items():
        assert counts[topic] == summary["delivered"][name]


def test_a_bad_settings_file_names_the_file_and_field(tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text("simulator:\n  delivery:\n    duplicate_rate: 1.5\n")
    result = run("simulate", "--config", str(config), check=False)
    assert result.returncode == 1
    assert str(config) in result.stderr and "duplicate_rate" in result.stderr
    config.write_text("kafka:\n  prot: 1\n")
    result = run("kafka", "status", "--config", str(config), check=False)
    assert result.returncode == 1 and "prot" in result.stderr


def test_simulate_rejects_an_unknown_destination(tmp_path):
    result = run("simulate", "--to", "s3", "--out", str(tmp_path), check=False)
    assert result.returncode == 2 and "'s3' is not one of 'kafka', 'files'" in unboxed(result.stderr)  # usage


def test_join_rejects_an_unknown_runner_before_touching_kafka(tmp_path):
    result = run("join", "--runner", "spark", "--out", str(tmp_path), check=False)
    assert result.returncode == 2 and "'spark' is not one of 'direct', 'flink'" in unboxed(result.stderr)


def test_join_resumes_only_a_stream_and_only_where_it_finds_the_hour_itself(tmp_path):
    result = run("join", "--resume", "--out", str(tmp_path), check=False)
    assert result.returncode == 1 and "--resume is for --mode streaming" in result.stderr
    result = run("join", "--mode", "streaming", "--runner", "flink", "--resume", "--from", "2026-11-01T05:00Z",
                 "--out", str(tmp_path), check=False)
    assert result.returncode == 1 and "give it or --from, not both" in result.stderr


def test_join_without_a_broker_says_so_and_how_to_start_one(tmp_path):
    from tests.conftest import free_port

    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"kafka": {"port": free_port()}}))
    result = run("join", "--config", str(config), "--out", str(tmp_path / "out"), check=False)
    assert result.returncode == 1 and "Is the broker up? `valueloop kafka up`" in result.stderr
    assert "Traceback" not in result.stderr


def test_simulate_label_train_and_evaluate_as_a_user_runs_them(tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text("simulator:\n  catalogue:\n    users: 1500\n    items: 300\n"
                      "trainer:\n  batch_size: 512\n  epochs: 2\n  learning_rate: 0.01\n")
    sim, examples, models = tmp_path / "sim", tmp_path / "examples", tmp_path / "models"
    run("simulate", "--config", str(config), "--to", "files", "--out", str(sim), "--requests", "4000",
        "--days", "2", "--seed", "11")
    labeled = json.loads(run("label", "--events", str(sim), "--out", str(examples),
                             "--purchase-window-s", "21600").stdout)
    assert labeled["examples"] > 20_000 and labeled["purchased"] > 0
    for preset in ("value", "ctr"):
        trained = json.loads(run("train", "--config", str(config), "--examples", str(examples), "--to",
                                 "2026-11-02T06:00Z", "--preset", preset, "--out", str(models / preset)).stdout)
        assert trained["label_strategy"] == "wait_for_window" and trained["examples"] > 10_000

    result = run("evaluate", "--model", str(models / "value"), "--model", str(models / "ctr"), "--examples",
                 str(examples), "--from", "2026-11-02T06:00Z", "--ground-truth", str(sim / "ground_truth.npz"),
                 "--baseline", "ctr", "--out", str(tmp_path / "eval"), check=False)
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert set(report["models"]) == {"logged policy", "value", "ctr"}
    assert report["models"]["ctr"]["trained_tasks"] == ["click"]
    assert report["models"]["value"]["tasks"]["purchase"]["auc"] > 0.6
    assert (tmp_path / "eval" / "trap.png").stat().st_size > 0
    assert result.returncode == (0 if report["verdict"]["passed"] else 1), result.stderr
    assert "true purchases per 1000" in result.stdout


def test_evaluation_refuses_provisional_labels(tmp_path):
    sim, examples = tmp_path / "sim", tmp_path / "examples"
    run("simulate", "--to", "files", "--out", str(sim), "--requests", "300", "--days", "0.5")
    run("label", "--events", str(sim), "--out", str(examples), "--strategy", "fake_negative")
    result = run("evaluate", "--model", str(tmp_path / "none"), "--examples", str(examples), check=False)
    assert result.returncode == 1
    assert "evaluation needs final labels" in result.stderr


def test_demo_runs_the_loop_on_its_own_traffic_only(kafka_settings, tmp_path):
    """Kafka, the Beam join, both models and the trap verdict, on a small world; traffic already in the topics
    (another world's) is left out of the join. Then the loop as the retraining DAG runs it: a first day that
    promotes, a clickbait-shifted day held back with an alert in the log sink, and where the reports are."""
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"kafka": json.loads(kafka_settings.model_dump_json()),
                                  "simulator": {"catalogue": {"users": 300, "items": 60}},
                                  "trainer": {"batch_size": 1024}}))  # enough steps on a small world
    earlier = json.loads(run("simulate", "--config", str(config), "--out", str(tmp_path / "earlier"),
                             "--requests", "300", "--days", "1", "--seed", "99").stdout)
    result = run("demo", "--config", str(config), "--requests", "4000", "--days", "5", "--train-days", "2",
                 "--purchase-window-days", "1", "--loop-requests", "3000", check=False, cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    added = int(out.split("all event topics")[1].split()[0].replace(",", ""))
    assert added > sum(earlier["delivered"].values())  # both runs are in the topics ...
    assert f"joining this run's {added:,} events" in out  # ... and the join read only the demo's own
    for step in ("examples", "models/value", "models/ctr", "evaluation/evaluation.json"):
        assert (tmp_path / "out" / "demo" / step).exists()
    verdict = json.loads((tmp_path / "out" / "demo" / "evaluation" / "evaluation.json").read_text())["verdict"]
    assert verdict["candidate"] == "value" and verdict["baseline"] == "ctr" and verdict["passed"]
    assert "[pass] lower bait share in the top 3" in out
    loop = out.split("the loop, as the retraining DAG runs it")[1]
    assert "promote: production is version 1" in loop and "hold: production stays v1; alert sent to log" in loop
    assert "alert [critical] candidate v2 held back" in result.stderr
    reports = [line.split("report: ")[1] for line in loop.splitlines() if "report: " in line]
    assert len(reports) == 2 and all(Path(r).is_file() for r in reports)


def test_demo_refuses_a_split_that_leaves_nothing_to_evaluate_before_touching_kafka(tmp_path):
    result = run("demo", "--days", "3", "--train-days", "2", "--purchase-window-days", "1", check=False, cwd=tmp_path)
    assert result.returncode == 1 and "--train-days must leave days to evaluate" in result.stderr
    assert not (tmp_path / "out").exists()


def test_census_inner_scores_the_training_rows_alone_and_records_nothing(tmp_path):
    out = tmp_path / "census.json"
    result = run("census", "--inner", "--kinds", "mmoe", "--experts", "1", "--ensemble", "1", "--epochs", "1",
                 "--out", str(out))
    row = next(line.split() for line in result.stdout.splitlines() if line.startswith("mmoe"))
    assert 0.8 < float(row[1]) <= 1 and 0.9 < float(row[2]) <= 1  # income, never married: well above chance
    assert not out.exists()


def test_census_records_only_runs_of_every_kind(tmp_path):
    result = run("census", "--kinds", "mmoe", "--out", str(tmp_path / "census.json"), check=False)
    assert result.returncode == 2
    assert "a recorded run trains every kind; choose kinds with --inner" in " ".join(result.stderr.replace("│", " ").split())


def test_census_refuses_a_dropout_outside_zero_to_one_by_its_option_name(tmp_path):
    result = run("census", "--inner", "--dropout", "1.5", "--out", str(tmp_path / "census.json"), check=False)
    assert result.returncode == 2
    assert "--dropout" in result.stderr and "1.5" in result.stderr


def test_join_whose_dead_letter_topic_is_missing_names_it_not_the_broker(kafka_settings, tmp_path):
    config = tmp_path / "settings.json"
    kafka = {**json.loads(kafka_settings.model_dump_json()), "dead_letter_topic": "missing.dead_letter"}
    config.write_text(json.dumps({"kafka": kafka}))
    result = run("join", "--config", str(config), "--out", str(tmp_path / "out"), check=False)
    assert result.returncode == 1, result.stderr
    assert "the dead-letter topic missing.dead_letter does not exist" in result.stderr
    assert "`valueloop kafka topics` creates it" in result.stderr
    assert "Is the broker up" not in result.stderr and "Traceback" not in result.stderr


def test_a_misplaced_setting_is_named_with_where_it_belongs(tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text("join:\n  purchase_window_s: 3600\n  out_of_orderness_s: -1\n")
    result = run("join", "--config", str(config), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{config}: 2 invalid setting(s)" in result.stderr
    assert "join.purchase_window_s: no such setting here; did you mean join.labels.purchase_window_s?" in result.stderr
    assert "join.out_of_orderness_s: Input should be greater than or equal to 0 (got -1)" in result.stderr


def tiny_window(tmp_path) -> Path:
    """Half a simulated day of 150 requests, labeled into partitions: too little for the audit to judge."""
    sim, examples = tmp_path / "sim", tmp_path / "examples"
    run("simulate", "--to", "files", "--out", str(sim), "--requests", "150", "--days", "0.5", "--seed", "4")
    run("label", "--events", str(sim), "--out", str(examples), "--purchase-window-s", "3600")
    return examples


def test_audit_of_a_tiny_window_is_inconclusive_exits_2_and_says_so(tmp_path):
    examples = tiny_window(tmp_path)
    config = tmp_path / "settings.yaml"
    config.write_text(f"kafka:\n  run_dir: {tmp_path / 'run' / 'kafka'}\n")
    result = run("audit", "--config", str(config), "--examples", str(examples), "--out", str(tmp_path / "audit"),
                 check=False)
    assert result.returncode == 2, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "audit inconclusive: inconclusive: promotion blocked"
    verdict = json.loads((tmp_path / "audit" / "verdict.json").read_text())
    assert verdict["status"] == "inconclusive" and verdict["exit_code"] == 2
    alerts = json.loads((tmp_path / "run" / "alerts.json").read_text())  # the log sink told, and it stays open
    assert list(alerts) == ["valueloop/drift_audit/open..open"]


def test_models_promote_and_rollback_as_a_user_runs_them(tmp_path):
    from trainer.tf_runtime import tf

    config = tmp_path / "settings.yaml"
    config.write_text(f"registry:\n  directory: {tmp_path / 'registry'}\n")
    for i in range(2):
        module = tf.Module()
        module.weight = tf.Variable(float(i))
        tf.saved_model.save(module, str(tmp_path / f"model{i}"))
        (tmp_path / f"audit{i}").mkdir()
        (tmp_path / f"audit{i}" / "verdict.json").write_text(json.dumps({"status": "pass", "reasons": []}))
        said = run("register", "-c", str(config), "--model", str(tmp_path / f"model{i}"), "--window", f"2026-11-0{i + 5}",
                   "--verdict", str(tmp_path / f"audit{i}" / "verdict.json")).stdout
        assert said.strip() == f"registered valueloop-ranker version {i + 1} for 2026-11-0{i + 5} (verdict pass)"
    assert run("promote", "-c", str(config), "--version", "1", "--replaces", "none", "--reason", "first").returncode == 0
    stale = run("promote", "-c", str(config), "--version", "2", "--replaces", "none", "--reason", "x", check=False)
    assert stale.returncode == 1 and "production is version 1, not unset" in unboxed(stale.stderr)
    assert "version 2 (was 1" in run("promote", "-c", str(config), "--version", "2", "--replaces", "1",
                                     "--reason", "second").stdout
    assert run("rollback", "-c", str(config), "--replaces", "2", "--reason", "bad").stdout.strip() == \
        "production: version 1 (rolled back from 2)"
    listed = json.loads(run("models", "-c", str(config), "--json").stdout)
    assert listed["aliases"] == {"production": 1, "candidate": 2}
    assert [(p["kind"], p["from"], p["to"]) for p in listed["promotions"]] == [
        ("promote", None, 1), ("promote", 1, 2), ("rollback", 2, 1)]
    table = run("models", "-c", str(config)).stdout
    assert "production" in table and "rollback 2 -> 1  committed" in table


def test_audit_keeps_its_open_alerts_where_the_settings_file_says(tmp_path):
    examples = tiny_window(tmp_path)
    config = tmp_path / "settings.yaml"
    config.write_text(f"kafka:\n  run_dir: {tmp_path / 'run' / 'kafka'}\nloop:\n  alerts_file: {tmp_path / 'on-call.json'}\n")
    result = run("audit", "--config", str(config), "--examples", str(examples), "--out", str(tmp_path / "audit"),
                 check=False)
    assert result.returncode == 2, result.stderr
    assert list(json.loads((tmp_path / "on-call.json").read_text())) == ["valueloop/drift_audit/open..open"]
    assert not (tmp_path / "run" / "alerts.json").exists()


def test_an_inconclusive_audit_alerts_slack_and_pages_no_one(tmp_path, receiver):
    """Against a real HTTP server: too little data to judge is told to the sinks read in working hours, never to
    PagerDuty."""
    import os

    examples = tiny_window(tmp_path)
    config = tmp_path / "settings.yaml"
    config.write_text(f"kafka:\n  run_dir: {tmp_path / 'run' / 'kafka'}\n")
    env = {**os.environ, "VALUELOOP_SLACK_WEBHOOK_URL": f"{receiver.url}/slack",
           "VALUELOOP_PAGERDUTY_ROUTING_KEY": "KEY", "VALUELOOP_PAGERDUTY_URL": f"{receiver.url}/v2/enqueue"}
    result = subprocess.run([*VALUELOOP, "audit", "--config", str(config), "--examples", str(examples), "--out",
                             str(tmp_path / "audit")], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2, result.stderr
    (slack,) = receiver.bodies("/slack")
    assert slack["text"].startswith("[WARNING] promotion inconclusive")
    assert receiver.bodies("/v2/enqueue") == []
