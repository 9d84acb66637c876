"""The gate's off-policy check: would the candidate, had it served the audited day, have sold less than
production did? Estimated from production's own serving log, on the same requests for both.

The Impression events carry each shown item's propensity but not the candidates it was chosen from, and a
target policy's chance of a logged item needs them all; so the check reads a serving log
(`serving.log.ServingLog`: per request the candidates, the slots' choices among them and the drawn clicks and
purchases, with the feature tables serving read), as a ranking service keeps for counterfactual evaluation.

The chances of every candidate at every one of the first `offpolicy_slots` slots
(`serving.propensities.slot_marginals`, exploration and support floor included) under the candidate, under
production and under the policy that served the log (production's predecessor when production was promoted
after the day was served) weigh the log, and `ope.estimators.paired_difference` estimates the candidate's
purchases minus production's, on the same requests and resamples: doubly robust with a reward model of both
models' purchase predictions (their mean, calibrated per slot on the log), every weight clipped at
`offpolicy_clip`, or, with no clip, the logged items whose weight is above `offpolicy_switch` left to the reward
model (Switch-DR). The support floor keeps every candidate's chance of every slot above floor / candidates, so the weights
stay bounded whatever the candidate ranks.

Three outcomes, by the 95% interval of the relative change against `offpolicy_purchase_drop`:
- **passed**: the interval's lower end is above -drop: the candidate is shown to sell no less than that;
- **failed**: its upper end is below -drop: the candidate is shown to sell less, and is blocked;
- **inconclusive**: the interval straddles -drop, or the weights' effective sample size is below
  `offpolicy_min_ess` (a bootstrap over a handful of huge weights gives intervals that look tight and mean
  nothing). It does not pass; the reason says how many requests would decide it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ope.estimators import PairedEstimate, paired_difference
from serving.log import ServingLog


@dataclass(frozen=True)
class OffPolicyCheck:
    estimate: PairedEstimate  # the candidate's (target) purchases per request in the first slots against production's
    slots: int
    drop: float
    judged: bool  # False: the interval straddles the margin, or too little overlap: inconclusive, so not passed
    passed: bool
    reason: str
    requests_to_decide: int | None  # about how many logged requests would decide an inconclusive check

    def as_dict(self) -> dict:
        return {"slots": self.slots, "drop": self.drop, "judged": self.judged, "passed": self.passed,
                "reason": self.reason, "requests_to_decide": self.requests_to_decide,
                "estimate": asdict(self.estimate)}


def reward_model(log: ServingLog, purchase: np.ndarray | None, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """The reward model of purchases at each (request, candidate, slot): `purchase` (a model's p(purchase) of
    every candidate, (requests, candidates); None for none) times a per-slot factor that makes its sum over the
    logged items equal the logged purchases there. Returns (the model at every candidate and slot, at the logged
    items)."""
    n, m = log.candidates.shape
    if purchase is None:
        return np.zeros((n, m, slots)), np.zeros((n, slots))
    rows = np.arange(n)[:, None]
    at_logged = purchase[rows, log.order[:, :slots]]
    bought = log.bought[:, :slots].astype(np.float64).sum(axis=0)
    factor = np.divide(bought, at_logged.sum(axis=0), out=np.zeros(slots), where=at_logged.sum(axis=0) > 0)
    return purchase[:, :, None] * factor, at_logged * factor


def offpolicy_check(log: ServingLog, candidate: np.ndarray, production: np.ndarray, logged: np.ndarray,
                    purchase: np.ndarray | None, drop: float, min_ess: float = 0.0, switch: float = 5.0,
                    draws: int = 1000, seed: int = 0, clip: float | None = None) -> OffPolicyCheck:
    """The candidate against production on purchases in the first slots of a serving log, given each ranker's
    P(candidate at slot) (requests, candidates, slots), the same of the policy that served the log (`logged`:
    production's own array when it served it) and a reward model's p(purchase) of every candidate (requests,
    candidates; None for none). With `clip`, the weights are clipped at it rather than switched."""
    if not candidate.shape == production.shape == logged.shape or candidate.shape[:2] != log.candidates.shape:
        raise ValueError(f"marginals of shapes {candidate.shape}, {production.shape} and {logged.shape} for "
                         f"candidates of shape {log.candidates.shape}")
    slots = candidate.shape[2]
    order = log.order[:, :slots]
    rows = np.arange(len(order))[:, None]
    positions = np.arange(slots)[None, :]
    model, at_logged = reward_model(log, purchase, slots)
    estimate = paired_difference(log.bought[:, :slots], logged[rows, order, positions],
                                 candidate[rows, order, positions], production[rows, order, positions], at_logged,
                                 (candidate * model).sum(axis=(1, 2)), (production * model).sum(axis=(1, 2)),
                                 self_normalise=False, switch=math.inf if clip is not None else switch,
                                 clip=math.inf if clip is None else clip, draws=draws, seed=seed)
    low, high = estimate.relative_interval
    said = (f"off-policy: the candidate's purchases in the top {slots} ({estimate.estimator}) "
            f"{estimate.relative:+.1%} [{low:+.1%}, {high:+.1%}] against production's on {log.policy}'s log "
            f"({estimate.slates:,} requests)")
    if estimate.effective_sample_size < min_ess:
        return OffPolicyCheck(estimate, slots, drop, False, False,
                              f"{said}: inconclusive, effective sample size {estimate.effective_sample_size:,.0f} "
                              f"is below {min_ess:,.0f} (the candidate ranks too differently from production for "
                              "its log to tell)", None)
    if low >= -drop:
        return OffPolicyCheck(estimate, slots, drop, True, True, f"{said}: at least {-drop:+.0%}", None)
    if high < -drop:
        return OffPolicyCheck(estimate, slots, drop, True, False, f"{said}: below {-drop:+.0%}", None)
    needed = requests_to_decide(estimate.slates, estimate.relative, (low, high), -drop)
    return OffPolicyCheck(estimate, slots, drop, False, False,
                          f"{said}: inconclusive, the interval straddles {-drop:+.0%}"
                          + (f"; about {needed:,} requests would decide it" if needed else ""), needed)


def requests_to_decide(requests: int, value: float, interval: tuple[float, float], margin: float) -> int | None:
    """About how many requests would shrink the interval (its width falling as one over the root of the
    requests) until it no longer straddles `margin`; None when the estimate sits on the margin."""
    half = (interval[1] - interval[0]) / 2
    distance = abs(value - margin)
    if not math.isfinite(half) or distance == 0:
        return None
    return int(math.ceil(requests * (half / distance) ** 2))
