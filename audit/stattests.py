"""Drift comparisons as a registry of named tests: one pure function each, of (reference, current, threshold).

Each test says which kind of data it applies to, its default threshold and the least sample it judges. A check
fails on its effect size, never on a p-value alone: with a million examples every difference is significant,
and a drift audit that calls everything drifted is switched off. The effect's 95% interval decides (its lower
bound must pass the threshold, or for a difference of rates the whole interval must lie beyond it), and where a
test has a p-value it is reported beside, adjusted across an audit's checks by Benjamini-Hochberg
(`benjamini_hochberg`). Below a test's minimum sample the verdict is inconclusive (None), which blocks promotion.

The statistics are scipy's where scipy has the test (Kolmogorov-Smirnov, Wasserstein, Jensen-Shannon,
chi-square); PSI and the two-proportion interval are a few lines of numpy, checked against values worked out
by hand. Intervals of the distances come from a seeded bootstrap of the binned counts (multinomial draws), which
costs the same for a thousand examples as for ten million.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon


class Kind(str, enum.Enum):
    NUMERIC = "numeric"  # a distribution of numbers: dwell, predictions, purchase value
    CATEGORICAL = "categorical"  # counts per category: surface, device, position band
    RATE = "rate"  # successes out of trials: clicks per impression, purchases per click


@dataclass(frozen=True)
class Rate:
    """Successes out of trials, the data of a RATE test."""

    successes: int
    trials: int

    @property
    def value(self) -> float:
        return self.successes / self.trials if self.trials else float("nan")


@dataclass(frozen=True)
class TestResult:
    """One comparison: the effect the verdict reads, its interval, the p-value beside it, and the verdict (True:
    drifted, False: not, None: too little data to say)."""

    __test__ = False  # not a pytest class

    test: str
    statistic: float
    effect: float
    interval: tuple[float, float] | None
    p_value: float | None
    threshold: float
    drifted: bool | None
    n_reference: int
    n_current: int
    detail: str = ""

    def with_adjusted_p(self, p_adjusted: float, alpha: float) -> "TestResult":
        """This result with its p-value adjusted across an audit: a drift the adjusted p-value does not support
        is no drift."""
        drifted = self.drifted if self.drifted is None else bool(self.drifted and p_adjusted < alpha)
        return TestResult(self.test, self.statistic, self.effect, self.interval, p_adjusted, self.threshold, drifted,
                          self.n_reference, self.n_current, self.detail)


@dataclass(frozen=True)
class StatTest:
    name: str
    kinds: frozenset[Kind]
    default_threshold: float
    min_samples: int
    run: Callable[..., TestResult] = field(repr=False)
    describes: str = ""


REGISTRY: dict[str, StatTest] = {}
BOOTSTRAP_DRAWS = 400
CONFIDENCE = 0.95


def register(name: str, kinds: set[Kind], default_threshold: float, min_samples: int, describes: str):
    def add(function):
        REGISTRY[name] = StatTest(name, frozenset(kinds), default_threshold, min_samples, function, describes)
        return function
    return add


def get_test(name: str) -> StatTest:
    """The registered test of that name; an unknown name is a KeyError that lists the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"no drift test {name!r}; the tests are {sorted(REGISTRY)}") from None


def run_test(name: str, reference, current, threshold: float | None = None, seed: int = 0) -> TestResult:
    """Runs the named test on (reference, current) at `threshold` (the test's default when None)."""
    test = get_test(name)
    return test.run(reference, current, test.default_threshold if threshold is None else threshold,
                    test.min_samples, seed)


def _inconclusive(test: str, threshold: float, n_ref: int, n_cur: int, least: int) -> TestResult:
    return TestResult(test, float("nan"), float("nan"), None, None, threshold, None, n_ref, n_cur,
                      f"fewer than {least} observations on a side: {n_ref} in the reference, {n_cur} now")


def _numbers(values, where: str) -> np.ndarray:
    array = np.asarray(values, np.float64).ravel()
    if np.isnan(array).any():
        raise ValueError(f"{where}: {int(np.isnan(array).sum())} NaN values; drop or impute them first")
    return array


def _interval(draws: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def _resampled(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    total = int(counts.sum())
    return rng.multinomial(total, counts / total, size=BOOTSTRAP_DRAWS).astype(np.float64)


# -- numbers -----------------------------------------------------------------------------------------------------


def quantile_bins(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's quantiles, repeated values merged: a bin per tenth of the reference."""
    return np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))


def binned(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of `values` in the bins that inner `edges` make (the first and last open-ended)."""
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1).astype(np.float64)


PSI_FLOOR = 1e-4  # a bin empty on one side counts as this share, so that PSI stays finite


def psi_of_counts(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Population stability index of count vectors (the last axis holds the bins):
    sum over bins of (current share - reference share) * ln(current share / reference share)."""
    ref = np.maximum(reference / reference.sum(axis=-1, keepdims=True), PSI_FLOOR)
    cur = np.maximum(current / current.sum(axis=-1, keepdims=True), PSI_FLOOR)
    return np.sum((cur - ref) * np.log(cur / ref), axis=-1)


@register("psi", {Kind.NUMERIC}, 0.2, 100, "population stability index over ten reference-quantile bins")
def psi(reference, current, threshold: float, min_samples: int, seed: int = 0) -> TestResult:
    ref, cur = _numbers(reference, "reference"), _numbers(current, "current")
    if min(len(ref), len(cur)) < min_samples:
        return _inconclusive("psi", threshold, len(ref), len(cur), min_samples)
    edges = quantile_bins(ref)
    ref_counts, cur_counts = binned(ref, edges), binned(cur, edges)
    value = float(psi_of_counts(ref_counts, cur_counts))
    rng = np.random.default_rng(seed)
    low, high = _interval(psi_of_counts(_resampled(ref_counts, rng), _resampled(cur_counts, rng)))
    return TestResult("psi", value, value, (low, high), None, threshold, low > threshold, len(ref), len(cur))


@register("ks", {Kind.NUMERIC}, 0.1, 100, "Kolmogorov-Smirnov: the largest gap between the two CDFs")
def ks(reference, current, threshold: float, min_samples: int, seed: int = 0) -> TestResult:
    ref, cur = _numbers(reference, "reference"), _numbers(current, "current")
    if min(len(ref), len(cur)) < min_samples:
        return _inconclusive("ks", threshold, len(ref), len(cur), min_samples)
    result = stats.ks_2samp(ref, cur)
    # The statistic's interval: D less and more its critical gap at the confidence level (Smirnov's bound).
    gap = np.sqrt(-np.log((1 - CONFIDENCE) / 2) / 2 * (len(ref) + len(cur)) / (len(ref) * len(cur)))
    low, high = max(0.0, result.statistic - gap), min(1.0, result.statistic + gap)
    return TestResult("ks", float(result.statistic), float(result.statistic), (float(low), float(high)),
                      float(result.pvalue), threshold, bool(low > threshold), len(ref), len(cur))


@register("wasserstein", {Kind.NUMERIC}, 0.1, 100, "Wasserstein distance in units of the reference's deviation")
def wasserstein(reference, current, threshold: float, min_samples: int, seed: int = 0) -> TestResult:
    ref, cur = _numbers(reference, "reference"), _numbers(current, "current")
    if min(len(ref), len(cur)) < min_samples:
        return _inconclusive("wasserstein", threshold, len(ref), len(cur), min_samples)
    scale = float(np.std(ref)) or 1.0
    value = float(stats.wasserstein_distance(ref, cur)) / scale
    # Interval from the distance between resampled histograms on a fine grid of the pooled quantiles.
    grid = np.unique(np.quantile(np.concatenate([ref, cur]), np.linspace(0, 1, 201)))
    centres = np.concatenate([[grid[0]], (grid[:-1] + grid[1:]) / 2, [grid[-1]]])
    rng = np.random.default_rng(seed)
    ref_draws, cur_draws = _resampled(binned(ref, grid), rng), _resampled(binned(cur, grid), rng)
    distances = [stats.wasserstein_distance(centres, centres, r, c) / scale for r, c in zip(ref_draws, cur_draws)]
    low, high = _interval(np.asarray(distances))
    return TestResult("wasserstein", value, value, (low, high), None, threshold, low > threshold, len(ref), len(cur))


# -- categories --------------------------------------------------------------------------------------------------


def category_counts(reference: dict, current: dict) -> tuple[list, np.ndarray, np.ndarray]:
    """The categories of either side, sorted, with each side's counts (zero where a side lacks one)."""
    categories = sorted(set(reference) | set(current), key=str)
    ref = np.array([reference.get(c, 0) for c in categories], np.float64)
    cur = np.array([current.get(c, 0) for c in categories], np.float64)
    if (ref < 0).any() or (cur < 0).any():
        raise ValueError("category counts cannot be negative")
    return categories, ref, cur


@register("jensenshannon", {Kind.CATEGORICAL}, 0.1, 100, "Jensen-Shannon distance (base 2) of the category shares")
def jensen_shannon(reference: dict, current: dict, threshold: float, min_samples: int, seed: int = 0) -> TestResult:
    _, ref, cur = category_counts(reference, current)
    if min(ref.sum(), cur.sum()) < min_samples:
        return _inconclusive("jensenshannon", threshold, int(ref.sum()), int(cur.sum()), min_samples)
    value = float(jensenshannon(ref, cur, base=2))
    rng = np.random.default_rng(seed)
    draws = jensenshannon(_resampled(ref, rng), _resampled(cur, rng), base=2, axis=1)
    low, high = _interval(np.nan_to_num(draws))
    return TestResult("jensenshannon", value, value, (low, high), None, threshold, low > threshold,
                      int(ref.sum()), int(cur.sum()))


@register("chisquare", {Kind.CATEGORICAL}, 0.1, 100, "chi-square test of homogeneity; the effect is Cramer's V")
def chi_square(reference: dict, current: dict, threshold: float, min_samples: int, seed: int = 0) -> TestResult:
    _, ref, cur = category_counts(reference, current)
    if min(ref.sum(), cur.sum()) < min_samples:
        return _inconclusive("chisquare", threshold, int(ref.sum()), int(cur.sum()), min_samples)
    seen = (ref + cur) > 0
    table = np.vstack([ref[seen], cur[seen]])
    if table.shape[1] < 2:
        return TestResult("chisquare", 0.0, 0.0, (0.0, 0.0), 1.0, threshold, False, int(ref.sum()), int(cur.sum()),
                          "one category on both sides")
    result = stats.chi2_contingency(table, correction=False)
    n = table.sum()
    v = float(np.sqrt(result.statistic / n))  # Cramer's V of a 2 x k table
    rng = np.random.default_rng(seed)
    tables = np.stack([_resampled(ref[seen], rng), _resampled(cur[seen], rng)], axis=1)  # draws x 2 x categories
    expected = tables.sum(axis=2, keepdims=True) * tables.sum(axis=1, keepdims=True) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.nansum(np.where(expected > 0, (tables - expected) ** 2 / expected, 0.0), axis=(1, 2))
    draws = np.sqrt(chi2 / n)
    low, high = _interval(draws)
    return TestResult("chisquare", float(result.statistic), v, (low, high), float(result.pvalue), threshold,
                      low > threshold, int(ref.sum()), int(cur.sum()))


# -- rates -------------------------------------------------------------------------------------------------------


def two_proportion(reference: Rate, current: Rate) -> tuple[float, tuple[float, float], float]:
    """The difference of two rates (current less reference), its Wald interval at CONFIDENCE (unpooled standard
    error), and the two-sided p-value of the pooled z-test."""
    p1, p2 = reference.value, current.value
    diff = p2 - p1
    z_crit = stats.norm.ppf(1 - (1 - CONFIDENCE) / 2)
    se = np.sqrt(p1 * (1 - p1) / reference.trials + p2 * (1 - p2) / current.trials)
    pooled = (reference.successes + current.successes) / (reference.trials + current.trials)
    se_pooled = np.sqrt(pooled * (1 - pooled) * (1 / reference.trials + 1 / current.trials))
    p_value = 1.0 if se_pooled == 0 else float(2 * stats.norm.sf(abs(diff) / se_pooled))
    return float(diff), (float(diff - z_crit * se), float(diff + z_crit * se)), p_value


@register("two_proportion", {Kind.RATE}, 0.0, 30, "two-proportion z-test; the effect is the difference of rates")
def rate_difference(reference: Rate, current: Rate, threshold: float, min_samples: int, seed: int = 0) -> TestResult:
    """Drifted when the whole interval of the difference lies beyond `threshold` (an absolute difference) on one
    side; the minimum sample is of trials and of successes on each side."""
    for rate in (reference, current):
        if rate.successes < 0 or rate.trials < 0 or rate.successes > rate.trials:
            raise ValueError(f"a rate of {rate.successes} successes out of {rate.trials} trials is no rate")
    if min(reference.trials, current.trials) < min_samples:
        return _inconclusive("two_proportion", threshold, reference.trials, current.trials, min_samples)
    diff, (low, high), p_value = two_proportion(reference, current)
    drifted = low > threshold or high < -threshold
    return TestResult("two_proportion", diff, diff, (low, high), p_value, threshold, bool(drifted),
                      reference.trials, current.trials, f"{reference.value:.5f} -> {current.value:.5f}")


# -- many checks at once -----------------------------------------------------------------------------------------


BOOTSTRAP_BLOCK = 20  # draws resampled at once: memory is (rows x this), whatever the draws


def poisson_bootstrap(per_row: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], draws: int,
                      seed: int = 0) -> tuple[float, float]:
    """The 95% percentile interval of `statistic` of the columns' weighted sums under a seeded Poisson bootstrap
    over rows (`per_row` is rows x columns; `statistic` maps sums of shape (draws, columns) to (draws,)). Draws
    are taken `BOOTSTRAP_BLOCK` at a time, so memory stays at rows x the block whatever the draws: a day of 1.4
    million logged requests resamples in about a gigabyte."""
    return poisson_bootstrap_many(per_row, [statistic], draws, seed)[0]


def poisson_bootstrap_many(per_row: np.ndarray, statistics: list[Callable[[np.ndarray], np.ndarray]], draws: int,
                           seed: int = 0) -> list[tuple[float, float]]:
    """`poisson_bootstrap` of several statistics over the same resamples, in one pass over the rows."""
    if draws < 20:
        raise ValueError(f"draws must be at least 20 for a 95% interval, not {draws}")
    per_row = np.asarray(per_row, np.float64)
    if per_row.ndim != 2 or len(per_row) == 0:
        raise ValueError(f"the bootstrap needs a non-empty (rows, columns) array, not one of shape {per_row.shape}")
    rng = np.random.default_rng(seed)
    values: list[list[np.ndarray]] = [[] for _ in statistics]
    for start in range(0, draws, BOOTSTRAP_BLOCK):
        weights = rng.poisson(1.0, size=(min(BOOTSTRAP_BLOCK, draws - start), len(per_row))).astype(np.float64)
        sums = weights @ per_row
        for kept, statistic in zip(values, statistics):
            kept.append(statistic(sums))
    intervals = []
    for kept in values:
        low, high = np.nanpercentile(np.concatenate(kept), [2.5, 97.5])
        intervals.append((float(low), float(high)))
    return intervals


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values, in the order given (scipy's `false_discovery_control`): p(i) * m /
    rank, made monotone from the largest down and capped at 1. A check is significant at false discovery rate q
    when its adjusted p-value is below q."""
    p = np.asarray(p_values, np.float64)
    return stats.false_discovery_control(p, method="bh") if p.size else p


def adjust(results: list[TestResult], alpha: float = 0.05) -> list[TestResult]:
    """The results of one audit with their p-values adjusted together (`benjamini_hochberg`); results without a
    p-value are left as they are."""
    with_p = [i for i, r in enumerate(results) if r.p_value is not None]
    adjusted = benjamini_hochberg([results[i].p_value for i in with_p])
    out = list(results)
    for i, p in zip(with_p, adjusted):
        out[i] = results[i].with_adjusted_p(float(p), alpha)
    return out
