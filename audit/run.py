"""`valueloop audit`: a window of the join's partitions against a reference window, the verdict written as JSON,
and on-call told when it blocks (and told again when a later audit of that window passes)."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from audit.alerts import Alert, AlertBook, Severity, sinks_from_environment
from audit.config import AuditConfig
from audit.drift import Status, Verdict, audit_windows
from audit.windows import load_window

CHECK = "drift_audit"


def _hour(ms: int | None) -> str:
    return "open" if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:00Z")


def run_audit(examples: Path, reference: tuple[int | None, int | None], current: tuple[int | None, int | None],
              now_ms: int | None, config: AuditConfig, out: Path, alert_book: Path | None = None) -> Verdict:
    """Audits `current` against `reference` (each an event-time range of the partitions under `examples`), writes
    `out/verdict.json`, and, with an `alert_book`, triggers an alert when promotion is blocked or inconclusive and
    resolves it when the same window passes."""
    reference_window = load_window(examples, *reference, name="reference")
    current_window = load_window(examples, *current, now_ms=now_ms, name="current")
    verdict = audit_windows(reference_window, current_window, config)
    window = f"{_hour(current[0])}..{_hour(current[1])}"
    out.mkdir(parents=True, exist_ok=True)
    report = {**verdict.as_dict(), "window": window, "reference": f"{_hour(reference[0])}..{_hour(reference[1])}",
              "now_ms": now_ms, "impressions": {"reference": reference_window.size, "current": current_window.size},
              "config": config.model_dump(mode="json")}
    (out / "verdict.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    if alert_book is not None:
        book, sinks = AlertBook(alert_book), sinks_from_environment()
        if verdict.status in (Status.BLOCK, Status.INCONCLUSIVE):
            severity = Severity.CRITICAL if verdict.status is Status.BLOCK else Severity.WARNING
            book.trigger(Alert(CHECK, window, severity, f"promotion {verdict.status.value}: {verdict.reasons[0]}",
                               {"reasons": "; ".join(verdict.reasons)}, report_url=(out / "verdict.json").as_uri()),
                         sinks)
        else:
            book.resolve_passing([CHECK], window, sinks)
    return verdict
