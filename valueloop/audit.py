"""`valueloop audit`: a window of the join's partitions against a reference window and, given models, the
candidate against production on the same window; the verdict written as JSON and as an HTML report, and on-call
told when it blocks (and told again when a later audit of that window passes)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from audit.drift import Status, Verdict, audit_windows
from audit.maturity import learn_curve, project_final_rate
from audit.report import figures, render
from audit.stattests import Rate
from audit.windows import Window, load_window
from config.audit import AuditConfig
from config.trainer import LONG_DWELL_MS
from gate.models import audit_models, score
from promotion.alerts import Alert, AlertBook, Severity, pages, sinks_from_environment
from schemas.units import hour_text
from trainer.exported import Predictor

CHECK = "drift_audit"


def _hour(ms: int | None) -> str:
    return "open" if ms is None else hour_text(ms)


def with_models(verdict: Verdict, model) -> Verdict:
    """The data verdict joined with the model audit's: the model-side signature or a failed gate threshold
    blocks; drifted predictions warn; too little data stays inconclusive."""
    if verdict.status is Status.INCONCLUSIVE:
        return verdict
    blocking = ([model.signature] if model.signature else []) + model.gate_failures
    checks = verdict.checks + model.checks
    if verdict.status is Status.BLOCK or blocking:
        return Verdict(Status.BLOCK, (verdict.reasons if verdict.status is Status.BLOCK else []) + blocking, checks)
    drifted = [f"{c.name}: {c.result.test} {c.result.effect:+.4f} beyond {c.result.threshold}" for c in model.checks
               if c.result.drifted]
    if verdict.status is Status.WARN or drifted:
        return Verdict(Status.WARN, verdict.reasons + drifted, checks)
    return Verdict(Status.PASS, [], checks)


def maturity(reference: Window, current: Window, config: AuditConfig) -> dict:
    """The maturity curve of purchases learned from a settled reference, and for a fresh current window its
    final purchases per click projected from the oldest age it has clicks for."""
    if reference.now_ms is not None or reference.size == 0:
        return {}
    try:
        curve = learn_curve(reference.columns["click_time_ms"], reference.columns["purchase_time_ms"],
                            config.ages_ms)
    except ValueError:
        return {}
    out = {"curve": dataclasses.asdict(curve)}
    if current.now_ms is not None and current.size:
        clicked = np.asarray(current.columns["clicked"]) > 0
        click_ms = np.asarray(current.columns["click_time_ms"], np.int64)
        bought_ms = current.arrived("purchase_time_ms")
        for age in sorted(config.ages_ms, reverse=True):
            old = clicked & (click_ms + age <= current.now_ms)
            if old.sum() >= config.min_slice_impressions / 10:
                within = old & (bought_ms >= 0) & (bought_ms - click_ms <= age)
                p = project_final_rate(Rate(int(within.sum()), int(old.sum())), curve, age)
                out["projection"] = {"age_ms": age, "observed": p.observed.value, "share": p.share,
                                     "projected": p.projected, "interval": p.interval}
                break
    return out


def _named(model: Path | Predictor | None) -> str | None:
    return None if model is None else str(getattr(model, "path", model))


def run_audit(examples: Path, reference: tuple[int | None, int | None], current: tuple[int | None, int | None],
              now_ms: int | None, config: AuditConfig, out: Path, alert_book: Path | None = None,
              candidate: Path | Predictor | None = None, production: Path | Predictor | None = None,
              long_dwell_ms: int = LONG_DWELL_MS, report_html: bool = True) -> Verdict:
    """Audits `current` against `reference` (each an event-time range of the partitions under `examples`) and,
    with a `candidate` SavedModel, the candidate against `production` (None: the first model) on `current`;
    writes `out/verdict.json` and `out/report.html` (not drawn with `report_html` False, for a benchmark that
    judges hundreds of candidates), and, with an `alert_book`, triggers an alert when promotion is blocked or
    inconclusive and resolves it when the same window passes."""
    reference_window = load_window(examples, *reference, name="reference")
    current_window = load_window(examples, *current, now_ms=now_ms, name="current")
    verdict = audit_windows(reference_window, current_window, config, long_dwell_ms)
    model = None
    if candidate is not None and verdict.status is not Status.INCONCLUSIVE:
        model = audit_models(current_window, score(candidate, current_window),
                             score(production, current_window) if production is not None else None, config,
                             long_dwell_ms)
        verdict = with_models(verdict, model)
    window = f"{_hour(current[0])}..{_hour(current[1])}"
    out.mkdir(parents=True, exist_ok=True)
    report = {**verdict.as_dict(), "window": window, "reference": f"{_hour(reference[0])}..{_hour(reference[1])}",
              "now_ms": now_ms, "impressions": {"reference": reference_window.size, "current": current_window.size},
              "maturity": maturity(reference_window, current_window, config),
              "models": {"candidate": _named(candidate), "production": _named(production)},
              "config": config.model_dump(mode="json"), "long_dwell_ms": long_dwell_ms}
    if model is not None:
        report["model"] = model.as_dict()
        report["checks"] = [c for c in report["checks"] if not c["metric"].startswith("prediction.")]
    (out / "verdict.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    if report_html:
        plots = figures(reference_window, current_window, report, config, model.predictions if model else None,
                        long_dwell_ms)
        (out / "report.html").write_text(render(report, plots))
    if alert_book is not None:
        book, sinks = AlertBook(alert_book), sinks_from_environment()
        if verdict.status in (Status.BLOCK, Status.INCONCLUSIVE):
            blocked = verdict.status is Status.BLOCK
            book.trigger(Alert(CHECK, window, Severity.CRITICAL if blocked else Severity.WARNING,
                               f"promotion {verdict.status.value}: {verdict.reasons[0]}",
                               {"reasons": "; ".join(verdict.reasons)}, report_url=(out / "report.html").as_uri()),
                         sinks if blocked else [sink for sink in sinks if not pages(sink)])  # no data: no page
        else:
            book.resolve_passing([CHECK], window, sinks)
    return verdict
