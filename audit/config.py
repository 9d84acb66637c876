"""Every threshold of the drift audit, in one typed config: the `audit` section of the settings file.

Thresholds are explicit and do not move with sample size: a rate check fails when the 95% interval of the
difference lies wholly beyond its threshold, a distance check when the lower bound of its interval passes it
(`stattests`). Below the minimum sample a check is inconclusive, and an inconclusive window blocks promotion.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
    bounce_s: float = Field(10.0, gt=0, description="A click with less dwell than this bounced.")
    long_dwell_s: float = Field(30.0, gt=0, description="A click with at least this much dwell is long.")

    @property
    def ages_ms(self) -> tuple[int, ...]:
        return tuple(int(h * 3_600_000) for h in self.ages_h)
