"""A blocked candidate stays blocked when on-call cannot be told: the audit of a clickbait window with every alert
endpoint failing retries, logs the failure, records the block on the registered version, and promotion is
refused; the alert stays open and undelivered, so the next run delivers it (once)."""
import json
import logging

import pytest

from config.audit import AuditConfig
from audit.drift import Status
from promotion.registry import PromotionRefused, Registry
from config.registry import RegistrySettings
from valueloop.audit import run_audit


def test_a_failing_alert_endpoint_is_retried_logged_and_the_model_stays_blocked(clickbait_days, receiver, tmp_path,
                                                                                 monkeypatch, caplog):
    from trainer.tf_runtime import tf

    examples, reference, current = clickbait_days
    receiver.failing["/hook"] = 100  # down for the whole run
    monkeypatch.setenv("VALUELOOP_ALERT_WEBHOOK_URL", f"{receiver.url}/hook")
    model_dir = tmp_path / "candidate"
    module = tf.Module()
    module.weight = tf.Variable(1.0)
    tf.saved_model.save(module, str(model_dir))
    registry = Registry(RegistrySettings(directory=tmp_path / "registry"))
    version = registry.register(model_dir, "2026-11-02").version
    with caplog.at_level(logging.ERROR, logger="valueloop.alerts"):
        verdict = run_audit(examples, reference, current, None, AuditConfig(), tmp_path / "audit",
                            alert_book=tmp_path / "alerts.json")
    assert verdict.status is Status.BLOCK
    assert len([where for where, _ in receiver.received if where == "refused /hook"]) == 4  # tried, backed off
    assert "not delivered to webhook after 4 attempts" in caplog.text
    said = json.loads((tmp_path / "audit" / "verdict.json").read_text())
    registry.record_verdict(version, said["status"], said["reasons"],
                            [tmp_path / "audit" / "verdict.json", tmp_path / "audit" / "report.html"])
    with pytest.raises(PromotionRefused, match="its verdict is block"):
        registry.promote(version, None, "on-call did not answer")
    assert registry.production() is None
    key = "valueloop/drift_audit/2026-11-02T00:00Z..2026-11-03T00:00Z"
    assert json.loads((tmp_path / "alerts.json").read_text())[key]["undelivered"] == ["webhook"]

    receiver.failing["/hook"] = 0  # back up: the next run delivers what on-call never got, once
    for _ in range(2):
        run_audit(examples, reference, current, None, AuditConfig(), tmp_path / "audit",
                  alert_book=tmp_path / "alerts.json")
    [alert] = receiver.bodies("/hook")
    assert alert["status"] == "firing" and alert["check"] == "drift_audit"
    assert json.loads((tmp_path / "alerts.json").read_text())[key]["undelivered"] == []
