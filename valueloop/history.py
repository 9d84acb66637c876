"""`valueloop audit history`: one HTML page of every audited day under the loop's work directory, for the on-call
who wants to know how the gate has been deciding before acting on today's page.

Per day, from what the loop's audit wrote there (`<day>/audit/`: audited.json, verdict.json and, where they
ran, served.json, offpolicy.json and the closed loop's truth.json): the candidate and the production it was
judged against, the verdict and its top reason, the data's CTR and purchases per impression at equal age, the
served and off-policy estimates of the candidate against production, and, where the world's truth is known,
whether the candidate was healthy or harmful. Beside them: the registry's promotions (the canaries' among them)
and the alerts still open. The trends are drawn as the audit report draws its plots (`audit.report`).
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

from audit.report import STYLE, html_table, number, svg_plot
from config import Settings, alert_book
from promotion.alerts import AlertBook
from promotion.registry import Registry

DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
RATE = re.compile(r"^\s*([-+0-9.eE]+)\s*->\s*([-+0-9.eE]+)")  # a rate check's "reference -> current"


@dataclass(frozen=True)
class AuditedDay:
    day: str
    candidate: int
    production: int | None
    status: str
    promotable: bool
    reasons: list[str]
    report: str
    ctr: float | None  # the audited day's, all impressions
    purchases_per_impression: float | None  # at the audit's longest equal age
    served_purchases: float | None  # the served check's relative change of predicted purchases
    offpolicy: float | None  # the off-policy estimate's relative change of purchases
    offpolicy_interval: tuple[float, float] | None
    health: str | None  # the world's truth, where the closed loop knows it


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _current_rate(verdict: dict | None, metric: str) -> float | None:
    """The audited window's value of a rate check on all impressions ("0.146 -> 0.104" reads 0.104)."""
    for check in (verdict or {}).get("checks", []):
        if check["slice"] == "all" and check["metric"] == metric:
            found = RATE.match(check.get("detail") or "")
            return float(found.group(2)) if found else None
    return None


def audited_days(work_dir: Path) -> list[AuditedDay]:
    """Every day under `work_dir` whose candidate was audited, oldest first."""
    days = []
    for directory in sorted(p for p in Path(work_dir).iterdir() if p.is_dir() and DAY.match(p.name)):
        audit = directory / "audit"
        audited = _read(audit / "audited.json")
        if audited is None:
            continue
        verdict = _read(audit / "verdict.json")
        ages = (verdict or {}).get("config", {}).get("ages_h") or []
        bought = f"purchase_per_impression@{ages[-1]:g}h" if ages else "purchase_per_impression@full"
        served = _read(audit / "served.json")
        offpolicy = _read(audit / "offpolicy.json")
        estimate = (offpolicy or {}).get("estimate")
        truth = _read(audit / "truth.json")
        days.append(AuditedDay(
            directory.name, audited["version"], audited["production"], audited["status"], audited["promotable"],
            audited["reasons"], audited["report"], _current_rate(verdict, "ctr"), _current_rate(verdict, bought),
            served["purchases"]["change"] if served else None, estimate["relative"] if estimate else None,
            tuple(estimate["relative_interval"]) if estimate else None, truth["health"] if truth else None))
    return days


def render_history(days: list[AuditedDay], promotions: list[dict], open_alerts: dict[str, dict]) -> str:
    """The page: the days' table, the trends, the promotions and the open alerts."""
    rows = [[html.escape(d.day), f"v{d.candidate}", "–" if d.production is None else f"v{d.production}",
             f'<b class="verdict {html.escape(d.status)}">{html.escape(d.status)}</b>',
             "yes" if d.promotable else "no", html.escape(d.reasons[0]) if d.reasons else "–",
             number(d.ctr), number(d.purchases_per_impression), number(d.served_purchases), number(d.offpolicy),
             "–" if d.offpolicy_interval is None else
             f"[{number(d.offpolicy_interval[0])}, {number(d.offpolicy_interval[1])}]",
             html.escape(d.health or "–"), f'<a href="{html.escape(Path(d.report).as_uri())}">report</a>']
            for d in days]
    x = [d.day[5:] for d in days]

    def series(values):
        return [float("nan") if v is None else v for v in values]

    plots = [
        {"id": "engagement", "title": "the audited days' CTR", "kind": "lines", "x": x,
         "series": {"current": series(d.ctr for d in days)}},
        {"id": "conversion", "title": "purchases per impression at equal age", "kind": "lines", "x": x,
         "series": {"current": series(d.purchases_per_impression for d in days)}},
        {"id": "candidate", "title": "the candidate against production: relative change of purchases",
         "kind": "lines", "x": x, "series": {"off-policy": series(d.offpolicy for d in days),
                                             "served (predicted)": series(d.served_purchases for d in days)}},
    ]
    figures = "".join(f'<figure class="plot" data-plot="{p["id"]}">{svg_plot(p)}'
                      f"<figcaption>{html.escape(p['title'])}</figcaption></figure>" for p in plots if days)
    promoted = [[html.escape(str(p.get("at", p.get("time", "–")))), html.escape(p.get("kind", "–")),
                 "–" if p.get("from") is None else f"v{p['from']}", f"v{p.get('to')}",
                 html.escape(p.get("reason", ""))] for p in promotions if p.get("outcome") == "committed"]
    alerts = [[html.escape(a["window"]), html.escape(a["check"]), html.escape(a["severity"]),
               html.escape(a["summary"])] for a in open_alerts.values()]
    counts = {status: sum(d.status == status for d in days) for status in ("pass", "warn", "inconclusive", "block")}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "nothing audited yet"
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>valueloop audit history: "
            f"{len(days)} days</title><style>{STYLE}</style></head><body>"
            f"<header><h1>valueloop audit history</h1><p id='summary'>{len(days)} audited days: {summary}</p>"
            "</header><section id='days'><h2>Every audited day</h2>"
            + html_table(["day", "candidate", "production", "verdict", "promotable", "top reason", "CTR",
                          "purchases per impression", "served change", "off-policy change", "95% interval",
                          "truth", ""], rows, "days")
            + f"</section><section id='plots'><h2>Trends</h2><div class='grid'>{figures}</div></section>"
            "<section id='promotions'><h2>Promotions</h2>"
            + html_table(["when", "kind", "from", "to", "why"], promoted, "promotions")
            + "</section><section id='alerts'><h2>Alerts still open</h2>"
            + html_table(["day", "check", "severity", "summary"], alerts, "alerts")
            + "</section></body></html>\n")


def write_history(settings: Settings, out: Path) -> Path:
    """Writes the page of the loop's work directory (`loop.work_dir`) to `out`."""
    days = audited_days(Path(settings.loop.work_dir))
    page = render_history(days, Registry(settings.registry).promotions(), AlertBook(alert_book(settings)).open_alerts())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out
