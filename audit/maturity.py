"""Conversion at equal label age: what a fresh window's conversion rate can be compared with, and what it will be.

Conversions arrive late: the newest window always looks as if conversions fell, because many have not arrived
yet. So valueloop counts a click's conversions only up to a fixed age after the click (1 h, 6 h, 24 h, the whole
window), and only for the clicks already that old. A fresh window and a settled reference then say the same thing
at the same age, and a maturity curve learned from settled windows (the share of the final conversions that have
arrived by each age) projects the fresh window's final rate from what it shows now, with an interval.

The inputs are the join's columns (LabeledExample v2): the click time and the event time of the first
attributed conversion, with -1 or None for none.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from audit.stattests import Rate
from schemas.units import HOUR_MS

DEFAULT_AGES_MS = (HOUR_MS, 6 * HOUR_MS, 24 * HOUR_MS)


def _times(values) -> np.ndarray:
    """Event times as int64 milliseconds, -1 where there is none (None, NaN or a negative number)."""
    array = values.astype(np.float64) if isinstance(values, np.ndarray) else \
        np.array([np.nan if v is None else v for v in values], np.float64)
    return np.where(np.isnan(array) | (array < 0), -1, array).astype(np.int64)


def delays_ms(click_time_ms, conversion_time_ms) -> np.ndarray:
    """Each click's delay to its first conversion, -1 where it has none; raises on a conversion before its click."""
    clicks, conversions = _times(click_time_ms), _times(conversion_time_ms)
    if clicks.shape != conversions.shape:
        raise ValueError(f"{len(clicks)} click times but {len(conversions)} conversion times")
    converted = conversions >= 0
    if (converted & (clicks < 0)).any():
        raise ValueError(f"{int((converted & (clicks < 0)).sum())} conversions have no click")
    delay = np.where(converted, conversions - clicks, -1)
    if (converted & (delay < 0)).any():
        raise ValueError(f"{int((converted & (delay < 0)).sum())} conversions come before their click")
    return delay[clicks >= 0]


def rate_at_age(click_time_ms, conversion_time_ms, age_ms: int, now_ms: int | None = None) -> Rate:
    """Conversions within `age_ms` of their click, out of the clicks at least `age_ms` old at `now_ms` (all clicks
    when `now_ms` is None: a settled window)."""
    clicks = _times(click_time_ms)
    delay = delays_ms(click_time_ms, conversion_time_ms)
    clicked = clicks[clicks >= 0]
    old_enough = np.ones(len(clicked), bool) if now_ms is None else clicked + age_ms <= now_ms
    converted = (delay >= 0) & (delay <= age_ms)
    return Rate(int((converted & old_enough).sum()), int(old_enough.sum()))


@dataclass(frozen=True)
class MaturityCurve:
    """The share of a settled window's final conversions that had arrived by each age after the click."""

    ages_ms: tuple[int, ...]
    shares: tuple[float, ...]
    conversions: int  # how many final conversions the curve was learned from

    def share_at(self, age_ms: int) -> float:
        """The share at `age_ms`, interpolated linearly between the ages learned (1 past the last, 0 at zero)."""
        ages = np.r_[0, self.ages_ms]
        shares = np.r_[0.0, self.shares]
        return float(np.interp(age_ms, ages, shares, right=1.0))


def learn_curve(click_time_ms, conversion_time_ms, ages_ms=DEFAULT_AGES_MS, window_ms: int | None = None) -> MaturityCurve:
    """The maturity curve of settled windows: the share of the conversions (within `window_ms` of the click, or
    all) that came within each age. Raises when there is no conversion to learn from."""
    delay = delays_ms(click_time_ms, conversion_time_ms)
    final = delay[(delay >= 0) & ((delay <= window_ms) if window_ms is not None else True)]
    if len(final) == 0:
        raise ValueError("no conversion in the settled windows: no maturity curve to learn")
    ages = tuple(int(a) for a in sorted(ages_ms))
    return MaturityCurve(ages, tuple(float((final <= a).mean()) for a in ages), len(final))


@dataclass(frozen=True)
class Projection:
    """A fresh window's final conversion rate, projected from its rate at one age and the curve's share there."""

    age_ms: int
    observed: Rate
    share: float
    projected: float
    interval: tuple[float, float]


def project_final_rate(observed: Rate, curve: MaturityCurve, age_ms: int, draws: int = 2000,
                       seed: int = 0) -> Projection:
    """observed rate / the curve's share at `age_ms`, with a 95% interval from a seeded bootstrap of both (the
    observed successes and the conversions the share was learned from, binomially)."""
    share = curve.share_at(age_ms)
    if observed.trials == 0 or share <= 0:
        raise ValueError(f"nothing to project from: {observed.trials} clicks {age_ms / HOUR_MS:g} h old, "
                         f"share {share:.3f} of conversions by then")
    rng = np.random.default_rng(seed)
    rates = rng.binomial(observed.trials, observed.value, draws) / observed.trials
    shares = np.maximum(rng.binomial(curve.conversions, share, draws) / curve.conversions, 1 / curve.conversions)
    low, high = np.percentile(rates / shares, [2.5, 97.5])
    return Projection(age_ms, observed, share, observed.value / share, (float(low), float(high)))
