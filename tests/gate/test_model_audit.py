"""The model side of the audit with real SavedModels on simulated partitions: the first model judged on absolute
bounds, a CTR-only candidate blocked by the gate against a multi-task production, a gate threshold of one slice,
and the report (verdict.json and report.html) `valueloop audit` writes for them."""
import json

import numpy as np
import pytest

from config.audit import AuditConfig, Better, Threshold
from audit.drift import Status
from valueloop.audit import run_audit
from pipelines.label_files import label_events, write_examples
from config.join import LabelConfig
from simulator import Simulation, SimulatorConfig
from config.trainer import TrainConfig, preset
from schemas.units import DAY_MS, HOUR_MS

LABELS = LabelConfig(click_window_s=1800, cart_window_s=3600, purchase_window_s=6 * 3600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three days of simulated traffic labeled into partitions; a multi-task model and a CTR-only one trained on
    the first day."""
    from trainer.train import train

    config = SimulatorConfig.model_validate({"requests": 15_000, "days": 3.0, "seed": 21,
                                             "catalogue": {"users": 2_000, "items": 300}})
    events = [(e.name, e.datum) for e in Simulation(config).events()]
    examples = tmp_path_factory.mktemp("examples")
    write_examples(label_events(events, LABELS, watermark_ms=config.end_ms + 10 * DAY_MS), examples, {"test": "gate"})
    models = tmp_path_factory.mktemp("models")
    base = TrainConfig(batch_size=1024, epochs=2, learning_rate=0.01, shuffle_buffer=20_000)
    for name in ("value", "ctr"):
        train(preset(base, name), examples, config.start_ms, config.start_ms + DAY_MS, models / name, verbose=0)
    day = (config.start_ms + DAY_MS, config.start_ms + 2 * DAY_MS)
    reference = (config.start_ms, config.start_ms + DAY_MS)
    return examples, models, reference, day


def test_the_first_model_is_judged_on_absolute_bounds_and_the_report_shows_it(trained, tmp_path):
    examples, models, reference, day = trained
    verdict = run_audit(examples, reference, day, None, AuditConfig(), tmp_path, candidate=models / "value")
    report = json.loads((tmp_path / "verdict.json").read_text())
    gate = {c["metric"]: c for c in report["model"]["gate"]}
    assert gate["auc.click"]["production"] is None and gate["auc.click"]["passed"], gate["auc.click"]
    assert gate["auc.click"]["reason"] == "absolute bounds only: no production model"
    assert verdict.status.exit_code == 0, verdict.reasons
    assert report["model"]["prediction_checks"] == [] and report["model"]["signature"] is None
    page = (tmp_path / "report.html").read_text()
    assert 'id="plot-prediction.click"' in page and 'id="plot-prediction.purchase"' in page


def test_a_ctr_only_candidate_is_blocked_by_the_gate_against_a_multi_task_production(trained, tmp_path):
    examples, models, reference, day = trained
    verdict = run_audit(examples, reference, day, None, AuditConfig(gate_bootstrap_draws=60), tmp_path,
                        candidate=models / "ctr", production=models / "value")
    assert verdict.status is Status.BLOCK
    assert "gate: auc.purchase in all: the candidate lacks this metric" in verdict.reasons
    report = json.loads((tmp_path / "verdict.json").read_text())
    assert report["exit_code"] == 1
    drift = {c["metric"]: c for c in report["model"]["prediction_checks"]}
    assert set(drift) == {"prediction.click", "prediction.value"}  # the tasks both models predict
    assert drift["prediction.value"]["drifted"]  # p(click) against expected value: different distributions
    top = {c["metric"]: c for c in report["model"]["gate"]}["purchases_top3_per_1000"]
    assert top["change"] < 0 and top["interval"][0] < top["change"] < top["interval"][1]


def test_a_gate_threshold_of_one_slice_is_judged_on_that_slice(trained, tmp_path):
    examples, models, reference, day = trained
    def auc_at_least(bound: float, where: str) -> Threshold:
        return Threshold(metric="auc.click", better=Better.HIGHER, absolute=bound, slice=where)

    config = AuditConfig(gate=(auc_at_least(0.99, "device=mobile"), auc_at_least(0.5, "surface=search"),
                               auc_at_least(0.5, "surface=moon")), gate_bootstrap_draws=20)
    verdict = run_audit(examples, reference, day, None, config, tmp_path, candidate=models / "value",
                        production=models / "value")
    gate = {c["slice"]: c for c in json.loads((tmp_path / "verdict.json").read_text())["model"]["gate"]}
    assert not gate["device=mobile"]["passed"] and "below the bound 0.99" in gate["device=mobile"]["reason"]
    assert gate["surface=search"]["passed"]
    assert gate["surface=search"]["candidate"] != gate["device=mobile"]["candidate"]
    assert gate["surface=search"]["interval"] == [0.0, 0.0]  # the same model on both sides: no change at all
    assert not gate["surface=moon"]["passed"]
    assert gate["surface=moon"]["reason"] == "the window has no slice surface=moon"
    assert verdict.status is Status.BLOCK
    assert np.isclose(gate["surface=search"]["change"], 0.0)
