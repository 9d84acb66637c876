"""The canary, through the real loop: a candidate the off-policy check cannot judge (here every one: the check
asks for more overlap than any log has) is split-tested by user beside production through Kafka and the join,
and its split test, read from the joined examples, promotes or holds it."""
import json
import subprocess
import sys

from config.registry import RegistrySettings
from promotion.registry import Registry

from tests.conftest import small_loop_settings

VALUELOOP = [sys.executable, "-m", "valueloop.cli"]


def test_an_inconclusive_candidate_is_split_tested_and_its_ab_result_decides_it(kafka_broker, tmp_path):
    path = small_loop_settings(kafka_broker, tmp_path, offpolicy_min_ess=1e12)  # no log is ever enough to judge
    out = tmp_path / "loop"
    subprocess.run([*VALUELOOP, "loop", "--config", str(path), "--rounds", "5", "--requests", "4000",
                    "--objective", "value", "--gate", "enforce", "--out", str(out)],
                   capture_output=True, text=True, check=True, timeout=1500)
    rounds = json.loads((out / "rounds.json").read_text())["runs"][0]["rounds"]
    # round 2 audits the first candidate: inconclusive, so it is canaried rather than held
    first = rounds[2]["gate"]
    assert first["status"] == "inconclusive" and first["canary"] and not first["promoted"]
    assert "inconclusive, effective sample size" in first["reasons"][0]
    # round 3 serves the split: production (the logging policy) and the candidate, each to its users
    assert rounds[3]["served_by"] == f"ctr-production-v1 | valueloop-ranker/v{first['candidate']}"
    assert rounds[3]["production"] is None
    # round 3's own candidate is inconclusive too, but one canary is in flight: it is held
    assert rounds[3]["gate"]["status"] == "inconclusive" and not rounds[3]["gate"]["canary"]
    # round 4 decides the canary from its day's split test, as `ab analyse` reads it
    canary = rounds[4]["canary"]
    analysis = canary["analysis"]
    assert canary["canary"]["served_day"] == rounds[3]["day"] and analysis["valid"]
    assert set(analysis["sample_ratio"]["users"]) == {"ctr-production-v1", f"valueloop-ranker/v{first['candidate']}"}
    lift = next(l for l in analysis["lifts"] if l["metric"] == "purchases_per_impression" and not l["cuped"])
    shown = lift["relative_interval"][0] >= -0.10
    assert canary["promote"] == shown and canary["status"] == ("pass" if shown else
                                                             "block" if lift["relative_interval"][1] < -0.10
                                                             else "inconclusive")
    assert (canary.get("promoted") == first["candidate"]) == shown
    # the world's truth agrees with the split: the value candidate sells more than the click-trained logging policy
    assert lift["relative"] > 0
    registry = Registry(RegistrySettings(directory=out / "seed-7" / "value" / "registry"))
    assert registry.production() == (first["candidate"] if shown else None)
    assert registry.version(first["candidate"]).verdict == canary["status"]
    # round 4's own candidate, inconclusive with no canary in flight any more, is the next canary
    assert rounds[4]["gate"]["canary"]


def test_a_canary_whose_promotion_outlived_its_run_is_closed_once_by_the_next(tmp_path):
    """A run that promoted a canary's candidate and died before closing the canary: the next run (the DAG's retry)
    does not take the promotion for production having moved under the canary. It decides the same, finds the
    promotion done, promotes nothing twice, and records and closes the canary once. The registry is real MLflow;
    the two versions' directories hold only a stand-in saved_model.pb, since no model is served here."""
    import dataclasses

    from config import Settings
    from valueloop import canary as canaries
    from valueloop.loop import Audited

    base = Settings()
    settings = base.model_copy(update={
        "loop": base.loop.model_copy(update={"work_dir": tmp_path / "work", "alerts_file": tmp_path / "alerts.json"}),
        "registry": RegistrySettings(directory=tmp_path / "registry")})
    registry = Registry(settings.registry)
    for k in (1, 2):
        model = tmp_path / f"model-{k}"
        model.mkdir()
        (model / "saved_model.pb").write_bytes(bytes([k]))
        registry.register(model, f"2026-11-0{k}")
    registry.record_verdict(1, "pass", [])
    registry.promote(1, None, "2026-11-01: audit pass")
    held = Audited("inconclusive", False, ["off-policy: inconclusive"], str(tmp_path / "report.html"), 1, 2, None,
                   None)
    registry.record_verdict(2, "inconclusive", held.reasons)
    opened = canaries.open_canary(settings, "2026-11-02", held, seed=7)
    canary = dataclasses.replace(opened, served_day="2026-11-03")
    canaries._save(settings, canary)  # as serving it stamps the day
    decision = canaries.CanaryDecision(canary, True, "pass", "canary: +3.0% [-2.0%, +8.0%]: at least -10%", {})

    registry.record_verdict(2, "pass", [decision.reason])  # the run that died: it promoted, and closed nothing
    registry.promote(2, 1, "2026-11-03: canary pass")
    assert canaries.in_flight(settings) == canary and not canaries.superseded(settings, canary)
    assert canaries.act(settings, decision) == {"promoted": 2}  # the retry
    assert canaries.in_flight(settings) is None and registry.production() == 2
    assert [d["canary"]["candidate"] for d in canaries.decided(settings)] == [2]
    assert [p["to"] for p in registry.promotions()] == [1, 2]
    assert canaries.open_canary(settings, "2026-11-02", held, seed=7) == canary  # a re-run of its audit's hold
