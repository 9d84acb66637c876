"""Off-policy estimates of a target policy's value from logged bandit feedback, for single actions and slates.

The inputs are plain arrays, one row per logged (slate, position): the slate (request) it belongs to, its
position, the reward observed there (a click, a purchase), the logging policy's probability of what it showed
there and the target policy's probability of the same. Nothing here knows valueloop's examples, so any logged
feedback with propensities can be evaluated.

Estimators, each returning the estimated value per slate with a seeded bootstrap interval over slates and the
effective sample size of its weights:
- `ips`: inverse propensity scoring, sum over positions of (target / logging) x reward (for slates: the
  independent, position-by-position IPS, whose weights are each position's marginal probabilities);
- `snips`: self-normalised IPS, the same weighted rewards divided by the mean weight;
- `direct`: the direct method, the reward model's prediction of the target's reward per position;
- `doubly_robust`: the direct method plus IPS of the reward model's residual at the logged items;
- `rips`: reward-interaction IPS for a cascade, where the reward at position k may depend on what was shown
  above it: position k's weight is the product of the (conditional) probability ratios of positions 1..k;
- `paired_difference`: the target's value minus the logging policy's, on the same logged slates and the same
  resamples, by self-normalised doubly robust estimation with position-wise (marginal) weights.

The slate forms follow Li et al. (2018) for position-wise IPS and McInerney et al. (2020) for RIPS. The
probabilities they weigh by, for the rankers valueloop serves, are `serving.propensities`'.

Values are per slate (the sum over its positions), where the Open Bandit Pipeline's `estimate_policy_value`
returns a mean per row (per logged position); divide by the positions per slate to compare with obp.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audit.stattests import poisson_bootstrap, poisson_bootstrap_many

BOOTSTRAP_DRAWS = 1000


@dataclass(frozen=True)
class Estimate:
    estimator: str
    value: float  # the target's estimated reward per slate (per row for single actions)
    interval: tuple[float, float]  # 95%, bootstrap over slates
    effective_sample_size: float  # (sum of weights)^2 / sum of squared weights, over rows
    slates: int


def _slate_index(slate_ids, rows: int) -> tuple[np.ndarray, int]:
    """Each row's slate as 0..slates-1, from slate ids one per row (a 1-D array of `rows` ids, none NaN)."""
    ids = np.asarray(slate_ids)
    if ids.ndim != 1:
        raise ValueError(f"slate ids must be one per row (1-D), not of shape {ids.shape}")
    if len(ids) != rows:
        raise ValueError(f"{len(ids)} slate ids for {rows} logged rows")
    if ids.dtype.kind == "f" and np.isnan(ids).any():
        raise ValueError("a slate id is NaN: every logged row must name its slate")
    _, index = np.unique(ids, return_inverse=True)
    return index, int(index.max()) + 1 if len(index) else 0


def _check(*arrays: np.ndarray) -> None:
    for a in arrays:
        if a.ndim != 1:
            raise ValueError(f"the logged arrays must be one value per row (1-D), not of shape {a.shape}")
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise ValueError(f"the logged arrays differ in length: {sorted(lengths)}")
    for a in arrays:
        if not np.all(np.isfinite(a)):
            raise ValueError("the logged arrays hold NaN or infinite values")


def _ratios(logging: np.ndarray, target: np.ndarray) -> np.ndarray:
    logging, target = np.asarray(logging, np.float64), np.asarray(target, np.float64)
    _check(logging, target)
    if np.any(logging <= 0) or np.any(logging > 1):
        raise ValueError("a logging propensity outside (0, 1]: an item shown with no chance of being shown")
    if np.any(target < 0) or np.any(target > 1):
        raise ValueError("a target probability outside [0, 1]")
    return target / logging


def _ess(weights: np.ndarray) -> float:
    squares = np.sum(weights ** 2)
    return float(np.sum(weights) ** 2 / squares) if squares > 0 else 0.0


def _estimate(name: str, per_slate: np.ndarray, weights: np.ndarray, seed: int, draws: int,
              normaliser: np.ndarray | None = None) -> Estimate:
    """The mean of `per_slate` (or, with `normaliser`, sum(per_slate) / sum(normaliser)) with its interval: a
    Poisson bootstrap over slates in blocks of draws, so memory stays at slates x a block whatever the draws
    (`audit.stattests.poisson_bootstrap`)."""
    n = len(per_slate)
    if n == 0:
        raise ValueError("no logged slates to estimate from")
    columns = np.column_stack([per_slate, np.ones(n) if normaliser is None else normaliser])
    value = per_slate.sum() / columns[:, 1].sum()
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample that drew nothing: left out
        interval = poisson_bootstrap(columns, lambda sums: sums[..., 0] / sums[..., 1], draws, seed)
    return Estimate(name, float(value), interval, _ess(weights), n)


def ips(slate_ids, rewards, logging_pscore, target_pscore, seed: int = 0, draws: int = BOOTSTRAP_DRAWS) -> Estimate:
    """Sum over a slate's positions of (target / logging) x reward, averaged over slates."""
    w = _ratios(logging_pscore, target_pscore)
    r = np.asarray(rewards, np.float64)
    _check(r, w)
    index, slates = _slate_index(slate_ids, len(r))
    return _estimate("ips", np.bincount(index, w * r, slates), w, seed, draws)


def snips(slate_ids, rewards, logging_pscore, target_pscore, seed: int = 0,
          draws: int = BOOTSTRAP_DRAWS) -> Estimate:
    """IPS divided by the mean weight per position (self-normalised): biased, but bounded by the rewards."""
    w = _ratios(logging_pscore, target_pscore)
    r = np.asarray(rewards, np.float64)
    _check(r, w)
    index, slates = _slate_index(slate_ids, len(r))
    positions = np.bincount(index, minlength=slates).astype(np.float64)
    # sum of w r over slates / (sum of w over rows / rows per slate): the weights' mean is 1 in expectation
    return _estimate("snips", np.bincount(index, w * r, slates), w, seed, draws,
                     normaliser=np.bincount(index, w, slates) / positions.mean())


def direct(slate_ids, target_reward_model, seed: int = 0, draws: int = BOOTSTRAP_DRAWS) -> Estimate:
    """The reward model's expected reward of the target policy at each row (summed over the target's
    distribution of items there by the caller), summed per slate and averaged."""
    q = np.asarray(target_reward_model, np.float64)
    _check(q)
    index, slates = _slate_index(slate_ids, len(q))
    return _estimate("direct", np.bincount(index, q, slates), np.ones(len(q)), seed, draws)


def doubly_robust(slate_ids, rewards, logging_pscore, target_pscore, logged_reward_model, target_reward_model,
                  seed: int = 0, draws: int = BOOTSTRAP_DRAWS) -> Estimate:
    """The direct method plus IPS of the reward model's error at the logged items: unbiased when either the
    propensities or the reward model are right."""
    w = _ratios(logging_pscore, target_pscore)
    r, q_logged, q_target = (np.asarray(a, np.float64) for a in (rewards, logged_reward_model, target_reward_model))
    _check(r, w, q_logged, q_target)
    index, slates = _slate_index(slate_ids, len(r))
    return _estimate("doubly_robust", np.bincount(index, q_target + w * (r - q_logged), slates), w, seed, draws)


def rips(slate_ids, positions, rewards, logging_conditional, target_conditional, seed: int = 0,
         draws: int = BOOTSTRAP_DRAWS) -> Estimate:
    """Reward-interaction IPS for a cascade: position k's reward weighted by the product, over positions 1..k
    of its slate, of target over logging probability of the item shown there given the items above it."""
    ratio = _ratios(logging_conditional, target_conditional)
    r, k = np.asarray(rewards, np.float64), np.asarray(positions)
    _check(r, ratio, k.astype(np.float64))
    index, slates = _slate_index(slate_ids, len(r))
    if len(np.unique(np.column_stack([index, k]), axis=0)) < len(r):
        raise ValueError("a slate has two rows at one position: a cascade's weights need each position once")
    order = np.lexsort((k, index))  # each slate's rows, top position first
    sorted_ratio, sorted_slate = ratio[order], index[order]
    starts = np.flatnonzero(np.r_[True, sorted_slate[1:] != sorted_slate[:-1]])
    cumulative = np.empty(len(r))
    for start, end in zip(starts, np.r_[starts[1:], len(r)]):
        cumulative[start:end] = np.cumprod(sorted_ratio[start:end])
    weights = np.empty(len(r))
    weights[order] = cumulative
    return _estimate("rips", np.bincount(index, weights * r, slates), weights, seed, draws)


@dataclass(frozen=True)
class PairedEstimate:
    """A target policy's value against a baseline's on the same logged slates, per slate (summed over the
    positions evaluated); the difference's interval comes from the same resamples for both sides."""

    estimator: str
    target: float
    baseline: float
    difference: float  # target minus baseline
    interval: tuple[float, float]  # 95%, of the difference, Poisson bootstrap over slates
    relative: float  # difference / baseline
    relative_interval: tuple[float, float]
    effective_sample_size: float  # of the weights, at the position and side where it is least
    slates: int


def _logged_matrix(name: str, values, shape: tuple[int, ...] | None = None) -> np.ndarray:
    values = np.asarray(values, np.float64)
    if values.ndim != 2:
        raise ValueError(f"{name} must be (slates, positions), not of shape {values.shape}")
    if shape is not None and values.shape != shape:
        raise ValueError(f"{name} is of shape {values.shape}, the rewards of {shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return values


def _per_slate(name: str, values, slates: int) -> np.ndarray:
    values = np.zeros(slates) if values is None else np.asarray(values, np.float64)
    if values.shape != (slates,) or not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be one finite value per slate, not of shape {values.shape}")
    return values


def paired_difference(rewards, logging_marginal, target_marginal, baseline_marginal=None, reward_model=None,
                      target_direct=None, baseline_direct=None, self_normalise: bool = True,
                      switch: float = math.inf, clip: float = math.inf, draws: int = BOOTSTRAP_DRAWS,
                      seed: int = 0) -> PairedEstimate:
    """A target policy's value minus a baseline policy's, per slate, from slates a logging policy served
    (arrays of (slates, positions)): the rewards observed, and each position's marginal probability of the item
    shown there (P(item at position), not the conditional propensity) under the logging policy, the target and
    the baseline (None: the baseline is the logging policy itself). Optionally a reward model's prediction at
    the logged items, with each policy's direct-method value per slate (the sum over positions and items of its
    marginal x the reward model).

    Each side is doubly robust: its direct value plus, at each logged item, its weight (its marginal over the
    logging policy's) x the reward model's residual; self-normalised, each position's weights divided by their
    mean. Both sides read the same slates and the same resamples, so what they share cancels in the difference.
    Position-wise weights suit rewards that depend on the item and its position and not on the items around it
    (the simulated world's); they are far smaller than a cascade's products, so a log can judge a candidate it
    could not by RIPS. Without a reward model each side is position-wise SNIPS.

    With a `switch` threshold (Switch-DR, Wang et al. 2017, as the Open Bandit Pipeline has it), a logged item
    whose weight is above it adds no correction: the reward model alone speaks for it, trading a bias the
    reward model's error bounds for the variance of a few huge weights, which a bootstrap does not see (its
    intervals over a handful of weights in the hundreds look tight and miss the truth).

    With `clip` (doubly robust with clipped weights, the Open Bandit Pipeline's `DoublyRobust(lambda_=clip)`), a
    weight above it counts as `clip`: the large weights still correct the reward model, each at most `clip` times.
    Switch-DR drops their corrections and keeps the reward model's bias there whole; clipping keeps part of them,
    at more variance.
    """
    r = _logged_matrix("rewards", rewards)
    logging = _logged_matrix("logging_marginal", logging_marginal, r.shape)
    target = _logged_matrix("target_marginal", target_marginal, r.shape)
    baseline = logging if baseline_marginal is None else _logged_matrix("baseline_marginal", baseline_marginal,
                                                                        r.shape)
    if len(r) == 0:
        raise ValueError("no logged slates to estimate from")
    if np.any(logging <= 0) or np.any(logging > 1):
        raise ValueError("a logging marginal outside (0, 1]: an item shown with no chance of being shown there")
    if np.any(target < 0) or np.any(target > 1) or np.any(baseline < 0) or np.any(baseline > 1):
        raise ValueError("a target or baseline marginal outside [0, 1]")
    q = np.zeros_like(r) if reward_model is None else _logged_matrix("reward_model", reward_model, r.shape)
    target_dm = _per_slate("target_direct", target_direct, len(r))
    baseline_dm = _per_slate("baseline_direct", baseline_direct, len(r))
    residual = r - q
    if not clip > 0:
        raise ValueError(f"clip must be above 0, not {clip}")
    w_target, w_baseline = (np.where(w <= switch, np.minimum(w, clip), 0.0)
                            for w in (target / logging, baseline / logging))
    positions = r.shape[1]
    # per slate: each side's direct value, then per position its weighted residuals and its weights, then a one:
    # every quantity the estimate is a ratio of sums of
    columns = np.column_stack([target_dm, baseline_dm, w_target * residual, w_target, w_baseline * residual,
                               w_baseline, np.ones(len(r))])

    def totals(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slates = sums[..., -1:]
        sides = []
        for side in range(2):
            start = 2 + 2 * side * positions
            weighted, weights = sums[..., start:start + positions], sums[..., start + positions:start + 2 * positions]
            correction = weighted * (slates / weights) if self_normalise else weighted
            sides.append(sums[..., side] + correction.sum(axis=-1))
        return sides[0], sides[1]

    def per_slate(sums):
        t, b = totals(sums)
        return (t - b) / sums[..., -1]

    def relative(sums):
        t, b = totals(sums)
        return t / b - 1

    sums = columns.sum(axis=0)
    ess = min(_ess(w[:, k]) for w in (w_target, w_baseline) for k in range(positions))
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample that drew no weight or no reward: left out
        t, b = (float(v) / len(r) for v in totals(sums))
        name = "paired self-normalised doubly robust" if self_normalise else "paired doubly robust"
        if math.isfinite(switch):
            name = f"paired switch doubly robust, weights above {switch:g} left to the reward model"
        if math.isfinite(clip):
            name += f", weights clipped at {clip:g}"
        interval, relative_interval = poisson_bootstrap_many(columns, [per_slate, relative], draws, seed)
        return PairedEstimate(name, t, b, t - b, interval, t / b - 1 if b > 0 else float("nan"), relative_interval,
                              ess, len(r))

