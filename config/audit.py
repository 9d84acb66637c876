"""Every threshold of the drift audit, in one typed config: the `audit` section of the settings file.

Thresholds are explicit and do not move with sample size: a rate check fails when the 95% interval of the
difference lies wholly beyond its threshold, a distance check when the lower bound of its interval passes it
(`stattests`). Below the minimum sample a check is inconclusive, and an inconclusive window blocks promotion.
"""
from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict, Field

from schemas.units import HOUR_MS


class Better(str, enum.Enum):
    HIGHER = "higher"
    LOWER = "lower"


class Threshold(BaseModel):
    """One bound of the model gate, in the manner of TFMA: a metric of a slice, which way is better, and an
    absolute bound on the candidate's value and bounds on its change against production (absolute, or relative
    to production's value), each applied to the worse end of the change's bootstrap interval."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(description="auc.<task>, log_loss.<task>, ece.<task> or purchases_top3_per_1000")
    better: Better
    absolute: float | None = Field(None, description="The candidate's value must be at least (higher is better) "
                                   "or at most (lower is better) this.")
    change: float | None = Field(None, ge=0, description="The change may be worse than production by at most this.")
    relative_change: float | None = Field(None, ge=0, description="... or by at most this share of production's "
                                          "value.")
    slice: str = Field("all", description="The slice it applies to (`all`, `surface=search`, `device=mobile`, ...).")


TASKS = ("click", "purchase")
# Absolute bounds keep out a broken model; the changes against production are computed and reported, with their
# intervals, but bound nothing by default: on the day's window their noise is wider than any margin that would
# still catch a harmful candidate, and they measure production's own log, not what the candidate would serve
# (`bench gate` and docs/audit.md). What the candidate would serve is the served and off-policy checks' to judge.
DEFAULT_GATE = (
    *(Threshold(metric=f"auc.{task}", better=Better.HIGHER, absolute=0.55) for task in TASKS),
    *(Threshold(metric=f"log_loss.{task}", better=Better.LOWER) for task in TASKS),
    *(Threshold(metric=f"ece.{task}", better=Better.LOWER, absolute=0.05) for task in TASKS),
    Threshold(metric="purchases_top3_per_1000", better=Better.HIGHER),
)


class AuditConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ages_h: tuple[float, ...] = Field((1.0, 6.0, 24.0), description="Label ages after the click at which "
                                      "conversion is compared, in hours; the full window is compared too when "
                                      "both windows are settled.")
    min_impressions: int = Field(2_000, ge=1, description="A current window with fewer impressions is inconclusive.")
    min_slice_impressions: int = Field(500, ge=1, description="A slice with fewer impressions on a side is not "
                                       "judged on its own.")
    ctr_rise: float = Field(0.005, ge=0, description="Absolute rise in CTR that counts as engagement up.")
    conversion_drop_per_impression: float = Field(0.0005, ge=0, description="Absolute drop in carts or purchases "
                                                  "per impression, at equal age, that counts as conversion down.")
    conversion_drop_per_click: float = Field(0.005, ge=0, description="Absolute drop in carts or purchases per "
                                             "click, at equal age, that counts as conversion down.")
    engagement_rate_change: float = Field(0.02, ge=0, description="Absolute change in bounce or long-dwell rate "
                                          "that is reported (a warning).")
    dwell_psi: float = Field(0.2, ge=0, description="PSI of the dwell distribution that is reported (a warning).")
    mix_js: float = Field(0.1, ge=0, description="Jensen-Shannon distance of a traffic mix (surface, device, "
                          "category) that is reported (a warning, never a block).")
    alpha: float = Field(0.05, gt=0, lt=1, description="False discovery rate across an audit's checks "
                         "(Benjamini-Hochberg).")
    prediction_psi: float = Field(0.25, ge=0, description="PSI between production's and the candidate's "
                                  "predictions of a task on the same window that is reported (a warning).")
    model_ctr_rise: float = Field(0.10, ge=0, description="Relative rise of the candidate's mean p(click) over "
                                  "production's that counts as predicted engagement up.")
    model_purchase_drop: float = Field(0.05, ge=0, description="Relative drop of the candidate's predicted purchases "
                                       "per impression, or of the logged purchases in its top 3, that counts as "
                                       "predicted conversion down (with the rise: the model-side clickbait signature, "
                                       "which blocks).")
    offpolicy_slots: int = Field(3, ge=1, description="Slots of production's serving log the off-policy check "
                                 "estimates the candidate's purchases in (ope.check).")
    offpolicy_purchase_drop: float = Field(0.10, ge=0, lt=1, description="How far below production's the "
                                           "candidate's off-policy purchases may be: the check passes when its 95% "
                                           "interval's lower end is above this drop, blocks when its upper end is "
                                           "below it, and is inconclusive between.")
    offpolicy_min_ess: float = Field(100.0, ge=0, description="The effective sample size of the off-policy "
                                     "weights, at the slot where it is least, below which the check reports its "
                                     "estimate but does not judge: the candidate ranks too differently from "
                                     "production for production's log to say.")
    offpolicy_switch: float = Field(5.0, gt=0, description="Switch-DR's threshold: a logged item whose off-policy "
                                    "weight is above it adds no correction, the reward model alone speaks for it. "
                                    "Sized by `bench gate`'s coverage of the truth (docs/audit.md).")
    offpolicy_clip: float | None = Field(20.0, gt=0, description="The off-policy weights are clipped at it "
                                         "(doubly robust with clipped weights); null switches them at "
                                         "`offpolicy_switch` instead (Switch-DR). At 20,000 requests a day "
                                         "clipped weights' intervals held the truth where Switch-DR's did not; "
                                         "a candidate they cannot decide goes to a canary (docs/audit.md).")
    offpolicy_bootstrap_draws: int = Field(1000, ge=20, description="Poisson bootstrap draws over requests for the "
                                           "off-policy check's interval.")
    canary_purchase_drop: float = Field(0.10, ge=0, lt=1, description="How far below production's the canary's "
                                        "purchases per impression may be: it promotes when the split test's 95% "
                                        "interval of the relative change is above this drop.")
    served_purchase_drop: float = Field(0.05, ge=0, lt=1, description="How far below production's the "
                                        "candidate's predicted purchases in its top `offpolicy_slots` slots, at the "
                                        "95% lower bound, may be before the served check blocks (gate.served).")
    served_bait_points: float = Field(3.0, ge=0, description="How many points more of its top slots than "
                                      "production's may show sensational headlines, at the 95% upper bound, "
                                      "before the served check blocks.")
    bait_headline_score: float = Field(0.65, ge=0, le=1, description="The headline score from which a served item "
                                       "counts as sensational, the served check's proxy for bait. Sized against the "
                                       "truth on seeds the gate's benchmark does not score (docs/audit.md).")
    served_bootstrap_draws: int = Field(400, ge=20, description="Poisson bootstrap draws over requests for the "
                                        "served check's intervals.")
    gate: tuple[Threshold, ...] = Field(DEFAULT_GATE, description="The model gate's thresholds; a failed one blocks.")
    gate_bootstrap_draws: int = Field(200, ge=20, description="Poisson bootstrap draws over requests for the "
                                      "intervals of the gate's changes.")

    @property
    def ages_ms(self) -> tuple[int, ...]:
        return tuple(int(h * HOUR_MS) for h in self.ages_h)

