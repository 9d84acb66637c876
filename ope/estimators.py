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
  above it: position k's weight is the product of the (conditional) probability ratios of positions 1..k.

The slate forms follow Li et al. (2018) for position-wise IPS and McInerney et al. (2020) for RIPS. The
probabilities they weigh by, for the rankers valueloop serves, are `serving.propensities`'.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_DRAWS = 1000


@dataclass(frozen=True)
class Estimate:
    estimator: str
    value: float  # the target's estimated reward per slate (per row for single actions)
    interval: tuple[float, float]  # 95%, bootstrap over slates
    effective_sample_size: float  # (sum of weights)^2 / sum of squared weights, over rows
    slates: int


def _slate_index(slate_ids: np.ndarray) -> tuple[np.ndarray, int]:
    _, index = np.unique(np.asarray(slate_ids), return_inverse=True)
    return index, int(index.max()) + 1 if len(index) else 0


def _check(*arrays: np.ndarray) -> None:
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
    """The mean of `per_slate` (or, with `normaliser`, sum(per_slate) / sum(normaliser)) with its bootstrap."""
    n = len(per_slate)
    if n == 0:
        raise ValueError("no logged slates to estimate from")
    value = per_slate.mean() if normaliser is None else per_slate.sum() / normaliser.sum()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, (draws, n))
    if normaliser is None:
        boot = per_slate[picks].mean(axis=1)
    else:
        boot = per_slate[picks].sum(axis=1) / normaliser[picks].sum(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return Estimate(name, float(value), (float(low), float(high)), _ess(weights), n)


def ips(slate_ids, rewards, logging_pscore, target_pscore, seed: int = 0, draws: int = BOOTSTRAP_DRAWS) -> Estimate:
    """Sum over a slate's positions of (target / logging) x reward, averaged over slates."""
    w = _ratios(logging_pscore, target_pscore)
    r = np.asarray(rewards, np.float64)
    _check(r, w)
    index, slates = _slate_index(slate_ids)
    return _estimate("ips", np.bincount(index, w * r, slates), w, seed, draws)


def snips(slate_ids, rewards, logging_pscore, target_pscore, seed: int = 0,
          draws: int = BOOTSTRAP_DRAWS) -> Estimate:
    """IPS divided by the mean weight per position (self-normalised): biased, but bounded by the rewards."""
    w = _ratios(logging_pscore, target_pscore)
    r = np.asarray(rewards, np.float64)
    _check(r, w)
    index, slates = _slate_index(slate_ids)
    positions = np.bincount(index, minlength=slates).astype(np.float64)
    # sum of w r over slates / (sum of w over rows / rows per slate): the weights' mean is 1 in expectation
    return _estimate("snips", np.bincount(index, w * r, slates), w, seed, draws,
                     normaliser=np.bincount(index, w, slates) / positions.mean())


def direct(slate_ids, target_reward_model, seed: int = 0, draws: int = BOOTSTRAP_DRAWS) -> Estimate:
    """The reward model's expected reward of the target policy at each row (summed over the target's
    distribution of items there by the caller), summed per slate and averaged."""
    q = np.asarray(target_reward_model, np.float64)
    _check(q)
    index, slates = _slate_index(slate_ids)
    return _estimate("direct", np.bincount(index, q, slates), np.ones(len(q)), seed, draws)


def doubly_robust(slate_ids, rewards, logging_pscore, target_pscore, logged_reward_model, target_reward_model,
                  seed: int = 0, draws: int = BOOTSTRAP_DRAWS) -> Estimate:
    """The direct method plus IPS of the reward model's error at the logged items: unbiased when either the
    propensities or the reward model are right."""
    w = _ratios(logging_pscore, target_pscore)
    r, q_logged, q_target = (np.asarray(a, np.float64) for a in (rewards, logged_reward_model, target_reward_model))
    _check(r, w, q_logged, q_target)
    index, slates = _slate_index(slate_ids)
    return _estimate("doubly_robust", np.bincount(index, q_target + w * (r - q_logged), slates), w, seed, draws)


def rips(slate_ids, positions, rewards, logging_conditional, target_conditional, seed: int = 0,
         draws: int = BOOTSTRAP_DRAWS) -> Estimate:
    """Reward-interaction IPS for a cascade: position k's reward weighted by the product, over positions 1..k
    of its slate, of target over logging probability of the item shown there given the items above it."""
    ratio = _ratios(logging_conditional, target_conditional)
    r, k = np.asarray(rewards, np.float64), np.asarray(positions)
    _check(r, ratio, k.astype(np.float64))
    index, slates = _slate_index(slate_ids)
    order = np.lexsort((k, index))  # each slate's rows, top position first
    sorted_ratio, sorted_slate = ratio[order], index[order]
    starts = np.flatnonzero(np.r_[True, sorted_slate[1:] != sorted_slate[:-1]])
    cumulative = np.empty(len(r))
    for start, end in zip(starts, np.r_[starts[1:], len(r)]):
        cumulative[start:end] = np.cumprod(sorted_ratio[start:end])
    weights = np.empty(len(r))
    weights[order] = cumulative
    return _estimate("rips", np.bincount(index, weights * r, slates), weights, seed, draws)
