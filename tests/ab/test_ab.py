"""A/B analysis: the delta method and the sample-ratio check against scipy and the bootstrap; then on the
simulated world's own split tests: 200 seeded A/A splits, a real lift, CUPED, an injected 52/48 split."""
import datetime as dt

import numpy as np
import pytest
from scipy import stats

from ab.analysis import SRM_P, Arm, analyse, ratio_lift, sample_ratio
from simulator import Simulation, SimulatorConfig
from simulator.served import ServedLog
from serving.policies import LoggingPolicy, SplitPolicy, arm_of


def test_with_one_impression_per_user_the_delta_method_is_welchs_test_pure_function():
    rng = np.random.default_rng(0)
    a, b = rng.random(4000) < 0.10, rng.random(5000) < 0.115
    lift = ratio_lift("ctr", Arm("a", a.astype(float), np.ones(4000)), Arm("b", b.astype(float), np.ones(5000)))
    welch = stats.ttest_ind(b, a, equal_var=False)
    assert lift.difference == pytest.approx(b.mean() - a.mean())
    assert lift.difference / lift.standard_error == pytest.approx(welch.statistic, rel=1e-9)
    assert lift.p_value == pytest.approx(welch.pvalue, rel=3e-3)  # normal against t on 8,000 degrees of freedom


def test_delta_method_variance_of_a_ratio_is_the_bootstrap_over_users_pure_function():
    rng = np.random.default_rng(1)
    impressions = rng.geometric(0.1, 3000).astype(float)  # heavy and light users
    ctr = rng.beta(2, 12, 3000)  # each user's own click rate: impressions of one user are not independent
    clicks = rng.binomial(impressions.astype(int), ctr).astype(float)
    arm = Arm("a", clicks, impressions)
    delta_se = np.std(arm.linearised(), ddof=1) / np.sqrt(3000)
    picks = rng.integers(0, 3000, (2000, 3000))
    bootstrap_se = np.std(clicks[picks].sum(axis=1) / impressions[picks].sum(axis=1))
    assert delta_se == pytest.approx(bootstrap_se, rel=0.06)
    naive_se = np.sqrt(arm.ratio * (1 - arm.ratio) / impressions.sum())  # impressions taken as independent
    assert delta_se > 1.3 * naive_se


def test_sample_ratio_is_pearsons_chi_square_pure_function():
    check = sample_ratio({"a": 5200, "b": 4800})
    assert check.chi_square == pytest.approx((200 ** 2 + 200 ** 2) / 5000)
    assert check.p_value == pytest.approx(stats.chi2.sf(16.0, 1)) and check.mismatch
    assert not sample_ratio({"a": 5040, "b": 4960}).mismatch
    assert not sample_ratio({"a": 5200, "b": 4800}, {"a": 0.52, "b": 0.48}).mismatch


WORLD_CONFIG = SimulatorConfig.model_validate({"seed": 21, "requests": 24_000, "days": 1.0,
                                               "catalogue": {"users": 40_000, "items": 1_500}})


def _impressions(served: ServedLog) -> dict:
    a = served.arrays()
    k = a["slates"].shape[1]
    return {"user_id": np.repeat(a["users"], k), "arm": np.repeat(a["arm"], k).astype(str),
            "clicked": a["clicked"].ravel(), "purchased": a["bought"].ravel()}


def _serve(config, world=None, policy=None):
    served = ServedLog()
    simulation = Simulation(config, world=world, policy=policy, served=served)
    for _ in simulation.events():
        pass
    return simulation.world, _impressions(served)


@pytest.fixture(scope="module")
def days():
    """A pre-period day and a test day of the same world, both served by the logging policy."""
    world, pre = _serve(WORLD_CONFIG)
    test_config = WORLD_CONFIG.model_copy(update={"start": WORLD_CONFIG.start + dt.timedelta(days=1), "seed": 22})
    _, test = _serve(test_config, world)
    return world, test_config, pre, test


def test_two_hundred_seeded_a_a_splits_are_significant_about_five_percent_of_the_time(days):
    _, _, pre, test = days
    significant, reductions, invalid = {}, {}, 0
    for seed in range(200):
        result = analyse({**test, "arm": arm_of(test["user_id"], [0.5, 0.5], seed).astype(str)}, "0", "1", pre)
        invalid += not result.valid
        for lift in result.lifts:
            key = (lift.metric, lift.cuped)
            significant[key] = significant.get(key, 0) + (lift.p_value < 0.05)
            reductions.setdefault(key, []).append(lift.variance_reduction)
    print("A/A significant of 200:", significant, {k: round(float(np.mean(v)), 3) for k, v in reductions.items()})
    assert all(3 <= n <= 18 for n in significant.values()), significant  # 10 expected; 3..18 holds 99.7%
    assert invalid <= 1  # a healthy split is flagged once in 2,000
    # CUPED on pre-period engagement: per-user metrics narrow a lot, ratio metrics a little
    assert np.mean(reductions[("clicks_per_user", True)]) > 0.5
    assert np.mean(reductions[("purchases_per_user", True)]) > 0.2
    assert np.mean(reductions[("purchases_per_impression", True)]) > 0.0


def test_a_real_lift_is_detected_with_its_power_and_cuped_narrows_it(days):
    world, test_config, pre, _ = days
    policy = WORLD_CONFIG.logging_policy
    surfaces = list(WORLD_CONFIG.surfaces)
    treatment = LoggingPolicy(policy.model_copy(update={"name": "rating-first", "headline_weight": 1.0,
                                                        "rating_weight": 0.8}), surfaces)
    split = SplitPolicy([LoggingPolicy(policy, surfaces), treatment], seed=5)
    _, test = _serve(test_config, world, split)
    result = analyse(test, "0", "1", pre)
    assert result.valid
    lifts = {(lift.metric, lift.cuped): lift for lift in result.lifts}
    purchases = lifts[("purchases_per_user", False)]
    assert purchases.relative > 0 and purchases.p_value < 0.01 and purchases.power > 0.8
    assert lifts[("purchases_per_impression", False)].relative > 0
    assert lifts[("ctr", False)].relative < 0 and lifts[("ctr", False)].p_value < 0.01  # fewer headline clicks
    cuped = lifts[("purchases_per_user", True)]
    print("lift:", {k: (round(v.relative, 3), f"{v.p_value:.2g}", round(v.power, 3)) for k, v in lifts.items()})
    plain_width = purchases.interval[1] - purchases.interval[0]
    assert cuped.interval[1] - cuped.interval[0] < 0.85 * plain_width and cuped.p_value < purchases.p_value


def test_an_injected_52_48_split_is_flagged_as_a_sample_ratio_mismatch(days):
    world, test_config, pre, _ = days
    policy, surfaces = WORLD_CONFIG.logging_policy, list(WORLD_CONFIG.surfaces)
    other = LoggingPolicy(policy.model_copy(update={"name": "other"}), surfaces)
    split = SplitPolicy([LoggingPolicy(policy, surfaces), other], shares=[0.52, 0.48], seed=9)
    _, test = _serve(test_config, world, split)
    result = analyse(test, "0", "1", pre)
    assert result.sample_ratio.p_value < SRM_P and not result.valid
    assert result.as_dict()["valid"] is False
    assert analyse(test, "0", "1", pre, {"0": 0.52, "1": 0.48}).valid  # as designed, it is no mismatch
