"""The audit's report: one HTML page, readable from the file alone (plots inline as SVG, no script, no server),
with the verdict and its reasons, the model gate's metrics, every check's value, interval and verdict, the
slice table, and a plot of reference against current for each compared distribution and the maturity curves.

`figures` reduces the windows to what the plots show (shares per bin, rates per age), so the page's size does
not grow with the windows; `render` draws them with matplotlib and lays out the page.
"""
from __future__ import annotations

import html
import io
import json

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from audit.stattests import binned, quantile_bins
from audit.windows import MIX, Window, dwell_of_clicks, mix, rates, slices
from config.audit import AuditConfig
from config.trainer import LONG_DWELL_MS
from schemas.units import HOUR_MS, seconds

COLOURS = {"reference": "#7f7f7f", "current": "#d62728", "production": "#7f7f7f", "candidate": "#1f77b4"}


def _histogram(sides: dict[str, np.ndarray], bins: int = 10) -> dict | None:
    """Shares per bin of each side, bins from the first side's quantiles (as PSI bins them)."""
    first = next(iter(sides.values()))
    if len(first) == 0 or any(len(v) == 0 for v in sides.values()):
        return None
    edges = quantile_bins(np.asarray(first, np.float64), bins)
    labels = [f"{edges[i]:.3g}" for i in range(len(edges))] if len(edges) else []
    series = {}
    for name, values in sides.items():
        counts = binned(np.asarray(values, np.float64), edges)
        series[name] = (counts / max(counts.sum(), 1)).tolist()
    bin_labels = ["<" + labels[0]] + [f"{labels[i]}.." for i in range(len(labels) - 1)] + ["≥" + labels[-1]] \
        if labels else ["all"]
    return {"kind": "bars", "x": bin_labels[:len(next(iter(series.values())))], "series": series}


def figures(reference: Window, current: Window, verdict: dict, config: AuditConfig,
            predictions: dict[str, dict[str, np.ndarray]] | None = None,
            long_dwell_ms: int = LONG_DWELL_MS) -> list[dict]:
    """What each plot shows: the dwell distribution of each slice the audit checked, each traffic mix, conversion
    per click by label age (overall), the maturity curve, and each task's predictions, production against
    the candidate."""
    out = []
    ref_slices, cur_slices = slices(reference), slices(current)
    checked = [c["slice"] for c in verdict.get("checks", []) if c["metric"] == "dwell"]
    for name in checked:
        hist = _histogram({"reference": seconds(dwell_of_clicks(reference, ref_slices[name])),
                           "current": seconds(dwell_of_clicks(current, cur_slices[name]))})
        if hist:
            out.append({"id": f"dwell.{name}", "title": f"dwell per click (s), {name}", **hist})
    for dimension in MIX:
        ref_mix, cur_mix = mix(reference, dimension), mix(current, dimension)
        keys = sorted(ref_mix.keys() | cur_mix.keys())
        if keys:
            out.append({"id": f"mix.{dimension}", "title": f"traffic mix: {dimension}", "kind": "bars", "x": keys,
                        "series": {side: [m.get(k, 0) / max(sum(m.values()), 1) for k in keys]
                                   for side, m in (("reference", ref_mix), ("current", cur_mix))}})
    if reference.size and current.size:
        ages = config.ages_ms
        everything = (np.ones(reference.size, bool), np.ones(current.size, bool))
        by_side = {side: rates(w, m, ages, long_dwell_ms)
                   for side, w, m in (("reference", reference, everything[0]), ("current", current, everything[1]))}
        for label in ("cart", "purchase"):
            out.append({"id": f"maturity.{label}", "title": f"{label}s per click by label age (all)", "kind": "lines",
                        "x": [f"{a / HOUR_MS:g} h" for a in ages],
                        "series": {side: [r[f"{label}_per_click@{a / HOUR_MS:g}h"].value for a in ages]
                                   for side, r in by_side.items()}})
    curve = verdict.get("maturity", {}).get("curve")
    if curve:
        out.append({"id": "maturity.curve", "title": "maturity curve: share of final purchases arrived by age "
                    "(reference)", "kind": "lines", "x": [f"{a / HOUR_MS:g} h" for a in curve["ages_ms"]],
                    "series": {"reference": curve["shares"]}})
    for task in sorted(set().union(*[p.keys() for p in (predictions or {}).values()]) if predictions else []):
        sides = {side: p[task] for side, p in predictions.items() if task in p}
        hist = _histogram(dict(sorted(sides.items(), key=lambda kv: kv[0] != "production")))
        if hist:
            out.append({"id": f"prediction.{task}", "title": f"predicted {task} on the current window", **hist})
    return out


def svg_plot(figure: dict) -> str:
    matplotlib.rcParams["svg.fonttype"] = "none"  # text as text: small, and searchable in the page
    fig = Figure(figsize=(4.6, 2.6), dpi=100)
    ax = fig.add_subplot()
    x = np.arange(len(figure["x"]))
    names = list(figure["series"])
    if figure["kind"] == "bars":
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            ax.bar(x + (i - (len(names) - 1) / 2) * width, figure["series"][name], width, label=name,
                   color=COLOURS.get(name))
        ax.set_ylabel("share")
    else:
        for name in names:
            ax.plot(x, figure["series"][name], "o-", label=name, color=COLOURS.get(name))
    ax.set_xticks(x, figure["x"], rotation=30 if len(figure["x"]) > 4 else 0, ha="right", fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(figure["title"], fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def number(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.{digits}g}" if isinstance(value, float) else html.escape(str(value))


def html_table(header: list[str], rows: list[list], cls: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _said(drifted) -> str:
    return {True: '<b class="bad">drifted</b>', False: "ok", None: '<b class="warn">too little data</b>'}[drifted]


def slice_rows(verdict: dict, age_tag: str) -> list[list]:
    """The slice table: per slice, CTR and purchases per impression at `age_tag`, reference against current."""
    by_slice: dict[str, dict[str, dict]] = {}
    for check in verdict.get("checks", []):
        by_slice.setdefault(check["slice"], {})[check["metric"]] = check
    rows = []
    for name, metrics in by_slice.items():
        ctr, bought = metrics.get("ctr"), metrics.get(f"purchase_per_impression@{age_tag}")
        if ctr is None:
            continue
        row = [html.escape(name), number(ctr["n_reference"]), number(ctr["n_current"]), number(ctr["detail"]),
               number(ctr["effect"])]
        row += [number(bought["detail"]), number(bought["effect"])] if bought else ["–", "–"]
        row.append(_said(ctr["drifted"] if not bought else (ctr["drifted"] or bought["drifted"])))
        rows.append(row)
    return rows


def render(report: dict, plots: list[dict]) -> str:
    """The page for `report` (verdict.json's content) with `plots` (`figures`)."""
    status = report["status"]
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in report["reasons"]) or "<li>nothing drifted</li>"
    parts = [f"<header><h1>valueloop audit of {html.escape(report['window'])}</h1>",
             f"<p>against the reference {html.escape(report['reference'])}; "
             f"{report['impressions']['current']:,} impressions audited, {report['impressions']['reference']:,} in "
             "the reference</p>",
             f'<p class="verdict {status}" id="status">{status.upper()}: '
             f'{"promotion may go ahead" if report["exit_code"] == 0 else "promotion blocked"}</p>',
             f"<ul id='reasons'>{reasons}</ul></header>"]
    model = report.get("model")
    if model:
        rows = [[html.escape(c["metric"]), html.escape(c["slice"]), number(c["candidate"]), number(c["production"]),
                 number(c["change"]), "–" if not c["interval"] else f"[{number(c['interval'][0])}, "
                 f"{number(c['interval'][1])}]", "pass" if c["passed"] else '<b class="bad">fail</b>',
                 html.escape(c["reason"])] for c in model["gate"]]
        parts.append("<section id='gate'><h2>Model gate: candidate against production</h2>"
                     + (f"<p class='bad'>{html.escape(model['signature'])}</p>" if model["signature"] else "")
                     + html_table(["metric", "slice", "candidate", "production", "change", "95% interval", "verdict",
                               "why"], rows, "gate") + "</section>")
    maturity = report.get("maturity", {})
    if maturity.get("projection"):
        p = maturity["projection"]
        parts.append(f"<section id='projection'><h2>Conversion still arriving</h2><p>purchases per click at "
                     f"{p['age_ms'] / HOUR_MS:g} h: {p['observed']:.4f}; the reference's curve has "
                     f"{p['share']:.0%} of final purchases by then, so the final rate is projected at "
                     f"{p['projected']:.4f} (95% interval {p['interval'][0]:.4f} to {p['interval'][1]:.4f}).</p>"
                     "</section>")
    tag = f"{report['config']['ages_h'][-1]:g}h"
    parts.append("<section id='slices'><h2>Slices</h2>" + html_table(
        ["slice", "impressions (reference)", "impressions (current)", "CTR (reference -> current)", "change",
         f"purchases per impression @{tag}", "change", "verdict"], slice_rows(report, tag), "slices") + "</section>")
    checks = report.get("checks", []) + (model["prediction_checks"] if model else [])
    rows = [[html.escape(c["slice"]), html.escape(c["metric"]), html.escape(c["test"]), number(c["effect"]),
             "–" if not c["interval"] else f"[{number(c['interval'][0])}, {number(c['interval'][1])}]",
             number(c["p_value"]), number(c["threshold"]), _said(c["drifted"])] for c in checks]
    parts.append("<section id='checks'><h2>Every check</h2>" + html_table(
        ["slice", "metric", "test", "effect", "95% interval", "p (adjusted)", "threshold", "verdict"], rows,
        "checks") + "</section>")
    figures_html = "".join(f'<figure class="plot" id="plot-{html.escape(f["id"])}" data-plot="{html.escape(f["id"])}">'
                           f"{svg_plot(f)}<figcaption>{html.escape(f['title'])}</figcaption></figure>" for f in plots)
    parts.append(f"<section id='plots'><h2>Reference against current</h2><div class='grid'>{figures_html}</div>"
                 "</section>")
    verdict_json = json.dumps(report, default=float).replace("</", "<\\/")  # a script's text is not unescaped
    parts.append(f'<script type="application/json" id="verdict">{verdict_json}</script>')
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>valueloop audit: "
            f"{html.escape(report['window'])} {status}</title><style>{STYLE}</style></head><body>"
            + "".join(parts) + "</body></html>\n")


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
.verdict { font-size: 1.3em; font-weight: bold; padding: .4em .6em; display: inline-block; }
.verdict.pass { background: #dff0d8; } .verdict.warn { background: #fcf8e3; }
.verdict.block, .verdict.inconclusive { background: #f2dede; }
.bad { color: #a94442; } .warn { color: #8a6d3b; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: 12px; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f5f5f5; } td:first-child, td:nth-child(2) { text-align: left; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; }
figure.plot { margin: 0; border: 1px solid #eee; } figure.plot svg { width: 460px; height: 260px; display: block; }
figcaption { font-size: 11px; color: #666; padding: 0 4px 4px; }
"""
