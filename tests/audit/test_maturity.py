"""Conversion at equal label age: hand-worked cases, and a fresh window whose conversions are still arriving,
which a raw comparison calls a drop and the comparison at equal age does not."""
import numpy as np
import pytest

from audit.maturity import HOUR_MS, learn_curve, project_final_rate, rate_at_age
from audit.stattests import Rate, run_test

H = HOUR_MS


def test_rate_at_age_counts_only_clicks_old_enough_and_conversions_young_enough_pure_function():
    clicks = [0, 0, 10 * H, 20 * H, None]
    purchases = [30 * 60_000, 5 * H, 10 * H + 30 * 60_000, None, None]
    assert rate_at_age(clicks, purchases, H) == Rate(2, 4)  # settled: the first and third within an hour
    assert rate_at_age(clicks, purchases, 6 * H) == Rate(3, 4)
    # At 21 h, the click at 20 h is not yet an hour old: three clicks count.
    assert rate_at_age(clicks, purchases, H, now_ms=21 * H - 1) == Rate(2, 3)
    assert rate_at_age(clicks, purchases, 6 * H, now_ms=21 * H) == Rate(3, 3)
    with pytest.raises(ValueError, match="1 conversions come before their click"):
        rate_at_age([5 * H], [4 * H], H)


def test_the_curve_is_the_share_of_final_conversions_by_each_age_pure_function():
    clicks = [0] * 5
    purchases = [30 * 60_000, 2 * H, 5 * H, 20 * H, 40 * H]
    curve = learn_curve(clicks, purchases, ages_ms=(H, 6 * H, 24 * H), window_ms=24 * H)  # the 40 h one is out
    assert curve.shares == (0.25, 0.75, 1.0) and curve.conversions == 4
    assert curve.share_at(3.5 * H) == pytest.approx(0.25 + (0.75 - 0.25) * 2.5 / 5)
    with pytest.raises(ValueError, match="no conversion"):
        learn_curve([0, 0], [None, None])


def _window(rng, clicks: int, start_ms: int, rate: float, mean_delay_h: float):
    click_ms = start_ms + rng.integers(0, 24 * H, clicks)
    converts = rng.random(clicks) < rate
    delay = rng.exponential(mean_delay_h * H, clicks).astype(np.int64)
    purchase_ms = np.where(converts & (delay <= 7 * 24 * H), click_ms + delay, -1)
    return click_ms, purchase_ms


def test_a_fresh_window_still_converting_is_no_drop_at_equal_age_while_its_raw_rate_is_pure_function():
    rng = np.random.default_rng(11)
    reference = _window(rng, 40_000, 0, 0.10, 8.0)  # settled: every conversion has come
    clicks, purchases = _window(rng, 40_000, 30 * 24 * H, 0.10, 8.0)  # the same world, a month later
    now = 31 * 24 * H + 2 * H  # two hours after the fresh window's last click
    seen = np.where(purchases <= now, purchases, -1)  # what has arrived by now
    raw = run_test("two_proportion", Rate(int((reference[1] >= 0).sum()), len(reference[0])),
                   Rate(int((seen >= 0).sum()), len(clicks)), threshold=0.01)
    assert raw.drifted is True and raw.effect < -0.02  # the raw rates: a drop of a quarter, which is not there
    for age in (H, 2 * H):
        at_age = run_test("two_proportion", rate_at_age(*reference, age), rate_at_age(clicks, seen, age, now),
                          threshold=0.01)
        assert at_age.drifted is False, age
    curve = learn_curve(*reference, window_ms=7 * 24 * H)
    projection = project_final_rate(rate_at_age(clicks, seen, H, now), curve, H)
    final = (purchases >= 0).mean()
    assert projection.interval[0] <= final <= projection.interval[1]
    assert projection.interval[1] - projection.interval[0] < 0.03


def test_a_real_drop_in_conversion_shows_at_equal_age_pure_function():
    rng = np.random.default_rng(12)
    reference = _window(rng, 40_000, 0, 0.10, 8.0)
    clicks, purchases = _window(rng, 40_000, 30 * 24 * H, 0.05, 8.0)  # bait: clicked, and bought half as often
    now = 31 * 24 * H + 2 * H
    seen = np.where(purchases <= now, purchases, -1)
    at_age = run_test("two_proportion", rate_at_age(*reference, 2 * H), rate_at_age(clicks, seen, 2 * H, now),
                      threshold=0.005)
    assert at_age.drifted is True and at_age.effect < 0
