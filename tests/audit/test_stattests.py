"""The drift tests: equal to scipy on the same arrays, PSI, JS distance and Benjamini-Hochberg equal to values
worked out by hand, verdicts on effect sizes rather than p-values, and too little data inconclusive."""
import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from audit import stattests
from audit.stattests import Rate, adjust, benjamini_hochberg, get_test, psi_of_counts, run_test


def test_psi_of_counts_by_hand_pure_function():
    # Shares 0.5/0.5 against 0.25/0.75: (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5)
    expected = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert psi_of_counts(np.array([50.0, 50.0]), np.array([25.0, 75.0])) == pytest.approx(expected)
    assert psi_of_counts(np.array([10.0, 10.0]), np.array([3.0, 3.0])) == pytest.approx(0.0)
    # An empty bin counts as a share of 1e-4: (1e-4 - 0.5) ln(1e-4 / 0.5) + (1 - 0.5) ln(1 / 0.5)
    floor = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.5 * math.log(2)
    assert psi_of_counts(np.array([5.0, 5.0]), np.array([0.0, 8.0])) == pytest.approx(floor)


def test_psi_bins_at_the_reference_quantiles_pure_function():
    reference = np.arange(1000, dtype=float)
    edges = stattests.quantile_bins(reference)
    assert len(edges) == 9 and stattests.binned(reference, edges).tolist() == [100.0] * 10
    shifted = run_test("psi", reference, reference + 500)
    # Half the current lies above the reference's top bin's lower edge: shares 0.5 in bins 5-8 ... worked out:
    ref_share = np.full(10, 0.1)
    cur_share = np.array([0, 0, 0, 0, 0, 0.1, 0.1, 0.1, 0.1, 0.6])
    cur_share = np.maximum(cur_share, 1e-4)
    assert shifted.effect == pytest.approx(float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share))))
    assert shifted.drifted is True and shifted.interval[0] > 0.2


def test_jensen_shannon_by_hand_and_equal_to_scipy_pure_function():
    # p = (1, 0), q = (0.5, 0.5), m = (0.75, 0.25): JS divergence = 0.5 KL(p||m) + 0.5 KL(q||m), base 2
    divergence = 0.5 * math.log2(1 / 0.75) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
    result = run_test("jensenshannon", {"a": 200}, {"a": 100, "b": 100})
    assert result.effect == pytest.approx(math.sqrt(divergence))
    reference, current = {"home": 600, "search": 300, "related": 100}, {"home": 500, "search": 380, "related": 120}
    assert run_test("jensenshannon", reference, current).effect == pytest.approx(
        jensenshannon([600, 100, 300], [500, 120, 380], base=2))  # home, related, search


def test_numeric_statistics_equal_scipys_on_the_same_arrays_pure_function():
    rng = np.random.default_rng(4)
    reference, current = rng.normal(0, 1, 3000), rng.normal(0.3, 1.2, 2500)
    ks = run_test("ks", reference, current)
    expected = stats.ks_2samp(reference, current)
    assert (ks.statistic, ks.p_value) == (pytest.approx(expected.statistic), pytest.approx(expected.pvalue))
    w = run_test("wasserstein", reference, current)
    assert w.effect == pytest.approx(stats.wasserstein_distance(reference, current) / np.std(reference))
    assert w.interval[0] <= w.effect <= w.interval[1]


def test_chi_square_equals_scipys_and_its_effect_is_cramers_v_pure_function():
    reference, current = {"app": 700, "web": 250, "tv": 50}, {"app": 550, "web": 400, "tv": 50}
    result = run_test("chisquare", reference, current)
    table = np.array([[700, 50, 250], [550, 50, 400]])  # app, tv, web
    expected = stats.chi2_contingency(table, correction=False)
    assert result.statistic == pytest.approx(expected.statistic) and result.p_value == pytest.approx(expected.pvalue)
    assert result.effect == pytest.approx(math.sqrt(expected.statistic / table.sum()))
    assert result.interval[0] <= result.effect <= result.interval[1]


def test_two_proportions_by_hand_pure_function():
    # 100 of 1000 against 150 of 1000: difference 0.05; unpooled se sqrt(.1*.9/1000 + .15*.85/1000)
    result = run_test("two_proportion", Rate(100, 1000), Rate(150, 1000), threshold=0.01)
    se = math.sqrt(0.1 * 0.9 / 1000 + 0.15 * 0.85 / 1000)
    z = stats.norm.ppf(0.975)
    assert result.effect == pytest.approx(0.05)
    assert result.interval == (pytest.approx(0.05 - z * se), pytest.approx(0.05 + z * se))
    pooled = 250 / 2000
    z_stat = 0.05 / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert result.p_value == pytest.approx(2 * stats.norm.sf(z_stat))
    # scipy's own two-sample z statistic agrees: statsmodels-free, from the chi-square of the 2x2 table.
    chi2 = stats.chi2_contingency([[100, 900], [150, 850]], correction=False)
    assert result.p_value == pytest.approx(chi2.pvalue)
    assert result.drifted is True
    assert run_test("two_proportion", Rate(100, 1000), Rate(104, 1000), threshold=0.01).drifted is False


def test_benjamini_hochberg_by_hand_and_equal_to_scipys_pure_function():
    p = [0.01, 0.04, 0.03, 0.20]
    # sorted 0.01, 0.03, 0.04, 0.20 -> x4/1, x4/2, x4/3, x4/4 = 0.04, 0.06, 0.0533, 0.20; monotone from the top:
    # 0.04, 0.0533, 0.0533, 0.20; back in the given order:
    assert benjamini_hochberg(p) == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])
    rng = np.random.default_rng(1)
    many = rng.random(50) ** 3
    assert benjamini_hochberg(many) == pytest.approx(stats.false_discovery_control(many))


def test_large_samples_with_a_trivial_shift_do_not_drift_while_their_p_value_is_tiny_pure_function():
    rng = np.random.default_rng(2)
    reference, current = rng.normal(0, 1, 400_000), rng.normal(0.02, 1, 400_000)
    ks = run_test("ks", reference, current)
    assert ks.p_value < 1e-6 and ks.drifted is False  # significant, and far too small to matter
    assert run_test("psi", reference, current).drifted is False
    assert run_test("two_proportion", Rate(40_000, 400_000), Rate(40_500, 400_000), threshold=0.005).drifted is False


def test_too_little_data_is_inconclusive_and_nans_are_refused_pure_function():
    assert run_test("psi", np.arange(50.0), np.arange(500.0)).drifted is None
    assert run_test("jensenshannon", {"a": 20}, {"a": 500}).drifted is None
    assert run_test("two_proportion", Rate(1, 10), Rate(50, 500)).drifted is None
    with pytest.raises(ValueError, match="current: 1 NaN values"):
        run_test("ks", np.arange(200.0), np.r_[np.arange(199.0), np.nan])


def test_an_unknown_test_lists_the_registered_ones_pure_function():
    with pytest.raises(KeyError, match=r"no drift test 'ttest'; the tests are \['chisquare', 'jensenshannon', 'ks', "
                                       r"'psi', 'two_proportion', 'wasserstein'\]"):
        get_test("ttest")
    assert get_test("psi").kinds == {stattests.Kind.NUMERIC} and get_test("psi").default_threshold == 0.2


def test_adjusting_an_audits_p_values_withdraws_drifts_they_do_not_support_pure_function():
    borderline = run_test("two_proportion", Rate(100, 1000), Rate(130, 1000), threshold=0.0)
    assert borderline.drifted is True and 0.01 < borderline.p_value < 0.05
    nulls = [run_test("ks", np.arange(300.0), np.arange(300.0) + 1)] * 19
    shift = run_test("psi", np.arange(300.0), np.arange(300.0) + 200)
    adjusted = adjust([borderline, *nulls, shift])
    # One p-value of about 0.03 among twenty: adjusted to about twenty times as much, no longer a discovery.
    assert adjusted[0].p_value == pytest.approx(borderline.p_value * 20) and adjusted[0].drifted is False
    assert adjusted[-1] == shift  # no p-value: left as it was
