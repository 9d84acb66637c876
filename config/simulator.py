"""Every rate and weight of the simulated world, in one typed config. Times are in seconds unless named _ms."""
from __future__ import annotations

import datetime as dt
import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.units import DAY_MS, SECOND_MS, epoch_ms, ms


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CatalogueConfig(_Strict):
    users: int = Field(20_000, ge=1)
    items: int = Field(2_000, ge=20)
    categories: int = Field(12, ge=1, le=100)
    bait_share: float = Field(0.2, ge=0.0, le=1.0, description="Share of items written as clickbait.")
    taste_concentration: float = Field(0.3, gt=0, description="Dirichlet concentration of users' category tastes.")
    rating_missing_share: float = Field(0.2, ge=0.0, le=1.0, description="Items with too few ratings to show one.")
    headline_noise: float = Field(0.15, ge=0.0, description="Noise of the headline classifier around true bait.")


class BehaviourConfig(_Strict):
    """How hidden bait and quality turn into clicks, dwell, carts and purchases (logistic weights)."""

    position_bias_power: float = Field(0.8, ge=0.0, description="Examination probability is (1 / (1 + position))^power.")
    click_intercept: float = -2.2
    click_bait_weight: float = 3.0
    click_taste_weight: float = 2.5
    click_quality_weight: float = 0.5
    dwell_median_s: float = Field(45.0, gt=0)
    dwell_quality_weight: float = Field(1.5, description="Log-dwell shift per unit of quality.")
    dwell_bait_weight: float = Field(2.0, description="Log-dwell drop per unit of bait: bait clicks bounce.")
    dwell_sigma: float = Field(0.6, gt=0)
    cart_intercept: float = -4.0
    cart_quality_weight: float = 5.0
    cart_taste_weight: float = 1.5
    cart_bait_weight: float = -2.0
    purchase_intercept: float = -1.5
    purchase_quality_weight: float = 3.0
    organic_purchase_rate: float = Field(0.002, ge=0.0, le=1.0, description="Purchases per request that no click led to.")


class LogNormalDelay(_Strict):
    median_s: float = Field(gt=0)
    sigma: float = Field(ge=0)

    @property
    def log_median_ms(self) -> float:
        """The log of the median in milliseconds: a draw exp(N(log_median_ms, sigma)) is a delay in ms."""
        return math.log(self.median_s) + math.log(SECOND_MS)


class DelayConfig(_Strict):
    """Heavy-tailed conversion delays: most land within minutes or hours, some after any sensible window."""

    click_after_impression: LogNormalDelay = LogNormalDelay(median_s=8.0, sigma=1.0)
    cart_after_click: LogNormalDelay = LogNormalDelay(median_s=300.0, sigma=2.0)
    purchase_after_cart: LogNormalDelay = LogNormalDelay(median_s=7200.0, sigma=2.5)


class DeliveryConfig(_Strict):
    """How at-least-once producers deliver: some events late (event-time disorder), some twice."""

    disorder_rate: float = Field(0.05, ge=0.0, le=1.0, description="Share of events delivered late.")
    disorder_max_s: float = Field(900.0, ge=0.0, description="A late event is delayed by up to this much.")
    duplicate_rate: float = Field(0.01, ge=0.0, le=1.0, description="Share of events delivered a second time.")
    duplicate_max_s: float = Field(60.0, ge=0.0, description="A duplicate follows its original by up to this much.")

    @property
    def disorder_max_ms(self) -> int:
        return ms(self.disorder_max_s)

    @property
    def duplicate_max_ms(self) -> int:
        return ms(self.duplicate_max_s)


class LoggingPolicyConfig(_Strict):
    """The production ranker whose traffic we log: a click-trained scorer sampled with exploration."""

    name: str = "ctr-production-v1"
    candidates: int = Field(50, ge=1)
    slate_size: int = Field(10, ge=1)
    temperature: float = Field(0.5, gt=0, description="Plackett-Luce temperature; higher explores more.")
    headline_weight: float = Field(2.0, description="The click-trained scorer loves sensational headlines.")
    headline_weight_by_surface: dict[str, float] = Field(
        default_factory=dict, description="The headline weight on these surfaces instead: a policy that shows more "
                                          "bait on one surface only.")
    affinity_weight: float = 2.0
    rating_weight: float = 0.3


class SimulatorConfig(_Strict):
    seed: int = 7
    start: dt.datetime = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    days: float = Field(3.0, gt=0)
    requests: int = Field(10_000, ge=1)
    chunk_s: float = Field(3600.0, gt=0, description="Simulated time generated per step.")
    drain_s: float = Field(0.0, ge=0, description="Events of the simulated requests are still delivered up to this "
                                                  "long after the last request (late conversions); later ones are "
                                                  "counted beyond the horizon.")
    surfaces: dict[str, float] = Field(default_factory=lambda: {"home_feed": 0.6, "search": 0.25, "related": 0.15})
    devices: dict[str, float] = Field(default_factory=lambda: {"mobile": 0.55, "desktop": 0.3, "app": 0.15})
    catalogue: CatalogueConfig = CatalogueConfig()
    behaviour: BehaviourConfig = BehaviourConfig()
    delays: DelayConfig = DelayConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    logging_policy: LoggingPolicyConfig = LoggingPolicyConfig()

    @model_validator(mode="after")
    def _surfaces_known(self):
        unknown = set(self.logging_policy.headline_weight_by_surface) - set(self.surfaces)
        if unknown:
            raise ValueError(f"logging_policy.headline_weight_by_surface names surfaces {sorted(unknown)} that "
                             f"simulator.surfaces lacks ({sorted(self.surfaces)})")
        return self

    @property
    def start_ms(self) -> int:
        return epoch_ms(self.start)

    @property
    def end_ms(self) -> int:
        return self.start_ms + int(self.days * DAY_MS)

    @property
    def chunk_ms(self) -> int:
        return ms(self.chunk_s)

    @property
    def drain_ms(self) -> int:
        return ms(self.drain_s)
