"""The gate's off-policy check: would the candidate, had it served the audited day, have sold less than
production did? Estimated from production's own serving log, with the propensities it logged.

The Impression events carry each shown item's propensity but not the candidates it was chosen from, and a
target policy's probability of a logged slate needs them all; so the check reads a serving log
(`serving.log.ServingLog`: per request the candidates, the slots' choices among them, the logged conditional
propensities and the drawn clicks and purchases), as a ranking service keeps for counterfactual evaluation. The candidate's chance of the
logged ranking comes from its own scores of the same candidates, sampled as production samples (Plackett-Luce
at the serving temperature, or epsilon-greedy), and
RIPS (`ope.estimators.rips`) over the first `offpolicy_slots` slots estimates its purchases per impression
there. The log carries the feature tables serving read (`FeatureTables`), so the candidate scores the candidates
from the same served features production did.

The check fails when that estimate's 95% lower bound is more than `offpolicy_purchase_drop` below the purchases
per impression production's slates actually earned in the same slots. Where the weights' effective sample size
is below `offpolicy_min_ess` (a candidate whose rankings production's log rarely shows), the check is
inconclusive and does not pass: a bootstrap over a handful of huge weights gives intervals that look tight and
mean nothing, and a candidate too different from production for its log to evaluate is exactly the one a gate
must not wave through.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ope.estimators import Estimate, ips, rips
from serving.log import ServingLog


@dataclass(frozen=True)
class OffPolicyCheck:
    candidate: Estimate  # purchases per impression in the first `slots` slots, had the candidate served
    production: Estimate  # what production's slates earned there (on-policy)
    slots: int
    drop: float
    judged: bool  # False: too little overlap (effective sample size) to judge: inconclusive, so not passed
    passed: bool
    reason: str

    def as_dict(self) -> dict:
        return {"slots": self.slots, "drop": self.drop, "judged": self.judged, "passed": self.passed,
                "reason": self.reason,
                **{name: {"value": e.value, "interval": list(e.interval), "effective_sample_size":
                          e.effective_sample_size, "slates": e.slates}
                   for name, e in (("candidate", self.candidate), ("production", self.production))}}


def _per_impression(estimate: Estimate, slots: int) -> Estimate:
    return Estimate(estimate.estimator, estimate.value / slots,
                    (estimate.interval[0] / slots, estimate.interval[1] / slots),
                    estimate.effective_sample_size, estimate.slates)


def offpolicy_check(log: ServingLog, target: Callable[[np.ndarray], np.ndarray], slots: int, drop: float,
                    min_ess: float = 0.0, seed: int = 0) -> OffPolicyCheck:
    """The candidate against production, on purchases per impression in the first `slots` slots of
    production's serving log; `target(order)` gives the candidate's conditional probability of each logged
    slot's choice (e.g. `plackett_luce_probability` of its logits)."""
    slots = min(slots, log.order.shape[1])
    order, propensity = log.order[:, :slots], log.propensity[:, :slots]
    n = len(order)
    ids = np.repeat(np.arange(n), slots)
    positions = np.tile(np.arange(slots), n)
    rewards = log.bought[:, :slots].astype(np.float64).ravel()
    target = np.asarray(target(order)).ravel()
    candidate = _per_impression(rips(ids, positions, rewards, propensity.ravel(), target, seed=seed), slots)
    production = _per_impression(ips(ids, rewards, propensity.ravel(), propensity.ravel(), seed=seed), slots)
    floor = production.value * (1 - drop)
    estimate = (f"off-policy: the candidate's purchases per impression in the top {slots} (RIPS) "
                f"{candidate.value:.5f} [{candidate.interval[0]:.5f}, {candidate.interval[1]:.5f}] against "
                f"production's {production.value:.5f} on {log.policy}'s log")
    if candidate.effective_sample_size < min_ess:
        return OffPolicyCheck(candidate, production, slots, drop, False, False,
                              f"{estimate}: inconclusive, effective sample size {candidate.effective_sample_size:,.0f} "
                              f"of {len(rewards):,} logged slots is below {min_ess:,.0f} (the candidate ranks too "
                              "differently from production for its log to tell)")
    passed = candidate.interval[0] >= floor
    reason = f"{estimate}: lower bound {'at or above' if passed else 'below'} {floor:.5f} ({drop:.0%} under production)"
    return OffPolicyCheck(candidate, production, slots, drop, True, passed, reason)
