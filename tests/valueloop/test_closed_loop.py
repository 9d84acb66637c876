"""`valueloop loop` and `valueloop ab run` as a user runs them, small and seeded: real processes, the real broker,
the Beam join, real training, the registry and the audit, round after round.

The ten-round sweep over three seeds runs as `valueloop bench loop` (bench/results/loop.json); this is its
small version: four rounds of 4,000 requests, where the first model serves the last round."""
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.conftest import _own_topics, small_loop_settings

VALUELOOP = [sys.executable, "-m", "valueloop.cli"]


def run(*args, check=True):
    return subprocess.run([*VALUELOOP, *args], capture_output=True, text=True, check=check, timeout=900)


@pytest.fixture(scope="module")
def config(kafka_broker, tmp_path_factory):
    root = tmp_path_factory.mktemp("closed-loop")
    return root, small_loop_settings(kafka_broker, root)  # its registry stays empty: a registry per objective


@pytest.fixture(scope="module")
def looped(config):
    root, path = config
    result = run("loop", "--config", str(path), "--rounds", "4", "--requests", "4000", "--gate", "record",
                 "--out", str(root / "out"))
    return root / "out", result


def test_the_loop_prints_every_round_and_writes_its_figure_and_json(looped):
    out, result = looped
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["objective", "round", "served"]
    assert sum(line.startswith(("ctr ", "value ")) for line in lines) == 8
    assert "seed 7: bait share under ctr" in result.stdout
    assert (out / "rounds.png").stat().st_size > 20_000
    runs = {r["objective"]: r["rounds"] for r in json.loads((out / "rounds.json").read_text())["runs"]}
    for rounds in runs.values():
        assert [o["served_by"] for o in rounds] == ["ctr-production-v1"] * 3 + ["valueloop-ranker/v1"]
        assert [o["gate"] is None for o in rounds] == [True, True, False, False]
        assert set(rounds[3]["seconds"]) == {"serving", "kafka", "join", "train", "audit"}
        for key in ("ctr", "purchases_per_1000", "bait_share", "mean_true_utility", "regret", "homogenisation"):
            assert all(np.isfinite(o[key]) for o in rounds)


def test_bait_climbs_under_ctr_and_falls_under_value_and_value_sells_more(looped):
    out, _ = looped
    runs = {r["objective"]: r["rounds"] for r in json.loads((out / "rounds.json").read_text())["runs"]}
    ctr, value = runs["ctr"], runs["value"]
    assert ctr[0] == {**ctr[0], "bait_share": value[0]["bait_share"]}  # the same first day for both
    assert ctr[3]["bait_share"] > ctr[0]["bait_share"] + 0.03
    assert value[3]["bait_share"] < value[0]["bait_share"] - 0.1
    assert value[3]["purchases_per_1000"] > 1.25 * ctr[3]["purchases_per_1000"]
    assert ctr[3]["ctr"] > value[3]["ctr"]


def test_an_unheeded_block_is_logged_as_an_override_and_the_served_model_logs_its_propensities(looped):
    out, _ = looped
    from promotion.registry import Registry
    from config.registry import RegistrySettings
    from trainer.data import find_partitions, load_columns

    ctr_registry = Registry(RegistrySettings(directory=out / "seed-7" / "ctr" / "registry"))
    first, second = [p for p in ctr_registry.promotions() if p["outcome"] == "committed"]  # rounds 2 and 3
    assert (first["kind"], first["to"]) == ("override", 1) and ctr_registry.version(1).verdict == "block"
    assert "not enforced" in first["reason"] and second["from"] == 1
    rounds = json.loads((out / "seed-7" / "ctr" / "rounds.json").read_text())["rounds"]
    assert any("lacks this metric" in reason for reason in rounds[2]["gate"]["reasons"])
    examples = out / "seed-7" / "value" / "examples"
    day = rounds[3]["day"]
    start = int(np.datetime64(f"{day}T00:00:00").astype("datetime64[ms]").astype(np.int64))
    columns = load_columns(find_partitions(examples, start, start + 86_400_000))
    assert set(columns["policy"].tolist()) == {b"valueloop-ranker/v1"}
    assert ((columns["propensity"] > 0) & (columns["propensity"] <= 1)).all()
    # Plackett-Luce over standardised scores explores: not every slot is a sure thing
    assert (columns["propensity"] < 0.99).mean() > 0.5


def test_the_gate_estimates_each_candidate_off_policy_from_the_days_serving_log(looped):
    out, _ = looped
    runs = {r["objective"]: r["rounds"] for r in json.loads((out / "rounds.json").read_text())["runs"]}
    for objective, rounds in runs.items():
        for o in rounds[2:]:
            check = o["gate"]["offpolicy"]
            estimate = check["estimate"]
            assert check["slots"] == 3 and estimate["slates"] == 4000  # the audited day's requests
            low, high = estimate["relative_interval"]
            assert low <= estimate["relative"] <= high
            assert check["passed"] == (check["judged"] and low >= -check["drop"])
            if not check["passed"]:
                assert o["gate"]["status"] in ("block", "inconclusive")
                assert any(reason.startswith("off-policy") for reason in o["gate"]["reasons"])
    # the value candidate, trained on the logging policy's day, would have sold more than the logging policy did
    value_check = runs["value"][2]["gate"]["offpolicy"]
    assert value_check["estimate"]["target"] > value_check["estimate"]["baseline"]
    assert value_check["judged"] or not value_check["passed"]  # an unjudged check never passes
    ctr_check = runs["ctr"][2]["gate"]["offpolicy"]
    assert ctr_check["estimate"]["target"] < value_check["estimate"]["target"]


def test_every_decision_is_recorded_beside_the_candidates_truth(looped):
    out, _ = looped
    runs = {r["objective"]: r["rounds"] for r in json.loads((out / "rounds.json").read_text())["runs"]}
    for rounds in runs.values():
        for o in rounds[2:]:
            truth = o["gate"]["truth"]
            assert truth["health"] in ("healthy", "harmful", "neither")
            for side in ("candidate", "production"):
                assert truth[side]["slots"] == 3 and truth[side]["requests"] == 4000
                assert 0 < truth[side]["purchases_per_1000"] and 0 <= truth[side]["bait_share"] <= 1
            assert o["gate"]["served"]["slots"] == 3


def test_the_gate_holds_a_candidate_that_leans_to_clicks_and_the_truth_calls_it_harmful(looped, config):
    """`valueloop bench gate` in small: the value loop's last candidate, ranked by p(click) alone. Every head is
    the candidate's own, so its predictions over the window are as they were; what it would serve is not."""
    from bench.gate import Variant, canary_of, judge
    from config import load_settings
    from promotion.registry import Registry
    from simulator.world import World
    from trainer.exported import ExportedModel
    from valueloop.closed_loop import Objective, run_settings

    out, _ = looped
    root, path = config
    settings = run_settings(load_settings(path), out / "seed-7", Objective.VALUE, 7)
    gate = json.loads((out / "seed-7" / "value" / "rounds.json").read_text())["rounds"][3]["gate"]
    registry = Registry(settings.registry)
    audited = json.loads((settings.loop.work_dir / gate["day"] / "audit" / "audited.json").read_text())
    production = registry.version(audited["production"]).model_dir  # what production was when it was audited
    clicky = Variant(ExportedModel(registry.version(gate["candidate"]).model_dir), "click-only", {"click": 1.0})
    judged = judge(settings, World.create(settings.simulator), gate["day"], clicky, production, root / "clicky")
    assert judged["truth"]["health"] == "harmful"
    assert not judged["promotable"] and judged["status"] in ("block", "inconclusive")
    assert any(reason.startswith("served") for reason in judged["reasons"])
    # had the audit left it inconclusive, its canary (the next day split by user) would not promote it either
    canary = canary_of(settings, gate["day"], clicky, audited["production"], 4000, 7_100)
    assert canary["impressions"] > 30_000 and not canary["promote"], canary
    assert f"against {registry.name}/v{audited['production']}" in canary["reason"]


def test_ab_run_serves_a_split_through_kafka_and_the_join_and_a_wrong_design_is_flagged(config):
    root, path = config
    out = root / "ab"
    result = run("ab", "run", "--config", str(path), "--treatment", "logging", "--requests", "3000",
                 "--out", str(out))
    analysis = json.loads((out / "analysis.json").read_text())
    test = json.loads((out / "test.json").read_text())
    assert analysis["valid"] and set(analysis["sample_ratio"]["users"]) == {"control:logging", "treatment:logging"}
    assert min(analysis["sample_ratio"]["users"].values()) > 500
    metrics = {(lift["metric"], lift["cuped"]) for lift in analysis["lifts"]}
    assert ("purchases_per_impression", True) in metrics and ("ctr", False) in metrics
    assert "sample-ratio chi-square" in result.stdout
    day = lambda ms: np.datetime_as_string(np.datetime64(ms, "ms"), unit="s")  # noqa: E731
    wrong = run("ab", "analyse", "--examples", test["examples"], "--control", "control:logging",
                "--treatment", "treatment:logging", "--from", day(test["test"][0]), "--to", day(test["test"][1]),
                "--treatment-share", "0.3", check=False)
    assert wrong.returncode == 3 and "INVALID TEST: sample-ratio mismatch" in wrong.stderr


def test_simulate_serves_with_a_model_or_says_what_is_missing(looped, config, tmp_path):
    out, _ = looped
    _, path = config
    model = out / "seed-7" / "value" / "work" / "2026-11-02" / "model"
    run("simulate", "--config", str(path), "--to", "files", "--out", str(tmp_path / "sim"), "--requests", "200",
        "--days", "0.2", "--policy", str(model))
    import fastavro

    with open(tmp_path / "sim" / "impression.avro", "rb") as f:
        impressions = list(fastavro.reader(f))
    assert impressions and {i["policy"] for i in impressions} == {"model"}
    assert all(0 < i["propensity"] <= 1 for i in impressions)
    missing = run("simulate", "--config", str(path), "--to", "files", "--out", str(tmp_path / "x"),
                  "--policy", "production", check=False)
    assert missing.returncode == 1 and "has no production version to serve with" in missing.stderr
    wrong = run("simulate", "--config", str(path), "--to", "files", "--out", str(tmp_path / "y"),
                "--policy", str(tmp_path), check=False)
    assert wrong.returncode == 1 and "not a SavedModel directory" in wrong.stderr


def test_the_settings_files_serving_holds_where_no_option_overrides_it(kafka_broker, tmp_path):
    """loop.serving_* from the file, but for the one option given: a default on the command line overrode them."""
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump({
        "kafka": json.loads(_own_topics(kafka_broker).model_dump_json()),
        "simulator": {"catalogue": {"users": 500, "items": 100}},
        "trainer": {"epochs": 1},
        "registry": {"directory": str(tmp_path / "registry")},
        "loop": {"serving_exploration": "epsilon-greedy", "serving_epsilon": 0.3, "serving_temperature": 0.9},
    }))
    run("loop", "--config", str(path), "--rounds", "2", "--requests", "500", "--objective", "value",
        "--temperature", "0.7", "--out", str(tmp_path / "out"))
    (looped_run,) = json.loads((tmp_path / "out" / "rounds.json").read_text())["runs"]
    assert looped_run["serving"] == {"exploration": "epsilon-greedy", "temperature": 0.7, "epsilon": 0.3, "floor": 0.05}


def test_the_audit_history_page_shows_every_audited_day_in_chromium(looped, config, tmp_path):
    """`valueloop audit history` over the value loop's work directory, opened in headless Chromium as the audit
    report is: one row per audited day, each trend drawn, the promotions and the report links there."""
    from tests.audit.test_report_in_chromium import CHROMIUM, Browser
    from pathlib import Path

    out, _ = looped
    root, _ = config
    run_dir = out / "seed-7" / "value"
    page = tmp_path / "history.html"
    settings = tmp_path / "history.yaml"
    settings.write_text(yaml.safe_dump({"loop": {"work_dir": str(run_dir / "work"),
                                                 "alerts_file": str(run_dir / "alerts.json")},
                                        "registry": {"directory": str(run_dir / "registry")}}))
    run("audit", "history", "--config", str(settings), "--out", str(page))
    rounds = json.loads((run_dir / "rounds.json").read_text())["rounds"]
    audited = [o["gate"] for o in rounds if o["gate"] is not None]
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make test` installs Debian's chromium"
    browser = Browser(tmp_path / "profile")
    try:
        facts = browser.open(page.as_uri(), tmp_path / "history.png", HISTORY_FACTS)
    finally:
        browser.close()
    assert facts["days"] == [[g["day"], g["status"]] for g in audited]
    assert facts["summary"].startswith(f"{len(audited)} audited days")
    assert [p["id"] for p in facts["plots"]] == ["engagement", "conversion", "candidate"]
    for plot in facts["plots"]:
        assert plot["width"] > 300 and plot["height"] > 150 and plot["drawn"] >= 10, plot
    assert facts["promotions"] >= 1 and facts["reports"] == len(audited)


HISTORY_FACTS = """JSON.stringify({
  summary: document.getElementById('summary').textContent,
  days: [...document.querySelectorAll('table.days tbody tr')].map(r => [r.cells[0].textContent,
                                                                      r.cells[3].textContent]),
  promotions: document.querySelectorAll('table.promotions tbody tr').length,
  reports: [...document.querySelectorAll('table.days a')].filter(a => a.href.endsWith('report.html')).length,
  plots: [...document.querySelectorAll('figure.plot')].map(f => {
    const svg = f.querySelector('svg'), box = svg.getBoundingClientRect();
    const drawn = [...svg.querySelectorAll('path, rect, line, use')].filter(e => {
      const b = e.getBBox(); return b.width > 0 || b.height > 0; }).length;
    return {id: f.dataset.plot, width: box.width, height: box.height, drawn: drawn};
  })})"""
