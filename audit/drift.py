"""The drift audit of a window against a reference: every check, the clickbait signature, and the verdict.

Checks, per slice (`windows.slices`): CTR, bounce and long dwell per click, the dwell distribution, and carts and
purchases per impression and per click at each label age; overall, the traffic mix (surface, device, category).
Their p-values are adjusted together (Benjamini-Hochberg). The verdict:

- block: the clickbait signature, overall or in a slice: CTR up while carts or purchases per impression or per
  click, at equal age, go down, each beyond its threshold. The reasons say where.
- inconclusive: the current window has fewer impressions than the audit's minimum (or none); it blocks too.
- warn: anything else drifted (a traffic mix alone, dwell, a conversion drop without the engagement rise).
- pass: nothing drifted.
"""
from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field

from config.audit import AuditConfig
from config.trainer import LONG_DWELL_MS
from audit.stattests import TestResult, adjust, run_test
from audit.windows import MIX, Window, dwell_of_clicks, mix, rates, slices

ENGAGEMENT = ("ctr", "bounce_per_click", "long_dwell_per_click")


class Status(str, enum.Enum):
    PASS = "pass"
    WARN = "warn"
    BLOCK = "block"
    INCONCLUSIVE = "inconclusive"

    @property
    def exit_code(self) -> int:
        """0: promotion may go ahead (pass, warn); 1: blocked; 2: inconclusive, which promotes nothing."""
        return {Status.PASS: 0, Status.WARN: 0, Status.BLOCK: 1, Status.INCONCLUSIVE: 2}[self]


@dataclass(frozen=True)
class Check:
    slice: str
    metric: str
    result: TestResult

    @property
    def name(self) -> str:
        return f"{self.metric}.{self.slice}"


@dataclass
class Verdict:
    status: Status
    reasons: list[str]
    checks: list[Check] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"status": self.status.value, "exit_code": self.status.exit_code, "reasons": self.reasons,
                "checks": [{"slice": c.slice, "metric": c.metric, **asdict(c.result)} for c in self.checks]}


def _threshold(metric: str, config: AuditConfig) -> float:
    if metric == "ctr":
        return config.ctr_rise
    if metric in ("bounce_per_click", "long_dwell_per_click"):
        return config.engagement_rate_change
    return config.conversion_drop_per_click if "_per_click" in metric else config.conversion_drop_per_impression


def run_checks(reference: Window, current: Window, config: AuditConfig,
               long_dwell_ms: int = LONG_DWELL_MS) -> list[Check]:
    """Every check of the audit, p-values adjusted across them. Long dwell and bounce are the labels the model
    learns (`pipelines.labeling`, at `trainer.model.long_dwell_s`)."""
    checks: list[Check] = []
    ref_slices, cur_slices = slices(reference), slices(current)
    ages = config.ages_ms
    for name, cur_mask in cur_slices.items():
        ref_mask = ref_slices.get(name)
        if ref_mask is None or min(ref_mask.sum(), cur_mask.sum()) < config.min_slice_impressions:
            continue
        ref_rates = rates(reference, ref_mask, ages, long_dwell_ms)
        cur_rates = rates(current, cur_mask, ages, long_dwell_ms)
        for metric, cur_rate in cur_rates.items():
            if metric in ref_rates:
                checks.append(Check(name, metric, run_test("two_proportion", ref_rates[metric], cur_rate,
                                                           _threshold(metric, config))))
        checks.append(Check(name, "dwell", run_test("psi", dwell_of_clicks(reference, ref_mask),
                                                    dwell_of_clicks(current, cur_mask), config.dwell_psi)))
    for dimension in MIX:
        checks.append(Check("all", f"mix.{dimension}", run_test("jensenshannon", mix(reference, dimension),
                                                                mix(current, dimension), config.mix_js)))
    adjusted = adjust([c.result for c in checks], config.alpha)
    return [Check(c.slice, c.metric, r) for c, r in zip(checks, adjusted)]


def clickbait_signatures(checks: list[Check]) -> list[str]:
    """Each slice where CTR rose beyond its threshold while a conversion rate at equal age fell beyond its own."""
    found = []
    by_slice: dict[str, list[Check]] = {}
    for check in checks:
        by_slice.setdefault(check.slice, []).append(check)
    for name, group in by_slice.items():
        ctr_up = any(c.metric == "ctr" and c.result.drifted and c.result.effect > 0 for c in group)
        drops = [c for c in group if c.metric.startswith(("cart_", "purchase_")) and c.result.drifted
                 and c.result.effect < 0]
        if ctr_up and drops:
            ctr = next(c for c in group if c.metric == "ctr")
            worst = min(drops, key=lambda c: c.result.effect)
            found.append(f"clickbait signature in {name}: CTR {ctr.result.effect:+.4f} while {worst.metric} "
                         f"{worst.result.effect:+.5f} ({len(drops)} conversion rates down)")
    return found


def audit_windows(reference: Window, current: Window, config: AuditConfig | None = None,
                  long_dwell_ms: int = LONG_DWELL_MS) -> Verdict:
    """The verdict on `current` against `reference` (`Status`)."""
    config = config or AuditConfig()
    if current.size < config.min_impressions or reference.size < config.min_impressions:
        return Verdict(Status.INCONCLUSIVE, [f"too few impressions to judge: {reference.size:,} in the reference, "
                                             f"{current.size:,} in the current window (at least "
                                             f"{config.min_impressions:,} each)"])
    checks = run_checks(reference, current, config, long_dwell_ms)
    signatures = clickbait_signatures(checks)
    if signatures:
        return Verdict(Status.BLOCK, signatures, checks)
    drifted = [f"{c.name}: {c.result.test} {c.result.effect:+.4f} beyond {c.result.threshold}" for c in checks
               if c.result.drifted]
    if drifted:
        return Verdict(Status.WARN, drifted, checks)
    return Verdict(Status.PASS, [], checks)
