"""The gate's served check: what would the candidate show on production's requests, against what production
shows there? A change of ranking weights leaves every head's predictions as they were, so comparing
predictions over a window cannot see it; comparing what each ranker puts on top can.

Both rankers serve the day's logged requests (production's serving log: the same users, surfaces, moments and
candidates) as production serves, in expectation over the exploration (`serving.propensities.
top_slot_marginals`), and over the first `slots` slots the check compares, request by request:
- **predicted purchases**: what each ranker's slots would sell, priced by one yardstick for both, the mean of
  the two models' purchase predictions (one model's alone when the other has none, e.g. the logging policy or
  a CTR-only model), so neither model grades its own ranking alone;
- **the bait proxy**: the share of the slots showing an item whose headline score (the served classifier of
  sensational headlines) is at least `headline_score`.

It is a non-inferiority test on the paired difference: it passes only when the 95% bootstrap interval over
requests shows the candidate's purchases no more than `purchase_drop` below production's and its bait proxy no
more than `bait_points` above. A candidate the interval cannot clear is blocked: a check that cannot decide
never lets a candidate through.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from audit.stattests import poisson_bootstrap
from serving.log import ServingLog

@dataclass(frozen=True)
class Served:
    """How one ranker would serve the log's requests: P(candidate at slot) (requests, candidates, slots), and
    its purchase predictions of every candidate (requests, candidates), None for a ranker that has none."""

    marginals: np.ndarray
    purchase: np.ndarray | None


@dataclass(frozen=True)
class Difference:
    candidate: float
    production: float
    change: float  # relative change of purchases; difference of shares, in points, for the bait proxy
    interval: tuple[float, float]


@dataclass(frozen=True)
class ServedCheck:
    purchases: Difference  # predicted purchases per impression in the first `slots` slots
    bait_proxy: Difference  # share of those impressions with a sensational headline
    slots: int
    requests: int
    passed: bool
    reasons: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def served_check(log: ServingLog, candidate: Served, production: Served, purchase_drop: float, bait_points: float,
                 headline_score: float, draws: int = 400, seed: int = 0) -> ServedCheck:
    """The candidate against production on the log's requests (see the module's docstring)."""
    if candidate.marginals.shape != production.marginals.shape or \
            candidate.marginals.shape[:2] != log.candidates.shape:
        raise ValueError(f"marginals of shapes {candidate.marginals.shape} and {production.marginals.shape} "
                         f"for candidates of shape {log.candidates.shape}")
    slots = candidate.marginals.shape[2]
    priced = [served.purchase for served in (candidate, production) if served.purchase is not None]
    if not priced:  # nothing to price the slots by: the check cannot decide, so it does not pass
        nothing = Difference(float("nan"), float("nan"), float("nan"), (float("nan"), float("nan")))
        return ServedCheck(nothing, nothing, slots, len(log.candidates), False,
                           ["served: neither the candidate nor production predicts purchases, so what their slots "
                            "would sell cannot be compared"])
    yardstick = sum(priced) / len(priced)
    shown = {side: served.marginals.sum(axis=2) for side, served in (("candidate", candidate),
                                                                     ("production", production))}
    sensational = (log.tables.item_headline_score[log.candidates] >= headline_score).astype(np.float64)
    # per request: the candidate's and production's predicted purchases and sensational slots, and the slots
    per_request = np.stack([(shown["candidate"] * yardstick).sum(axis=1), (shown["production"] * yardstick).sum(axis=1),
                            (shown["candidate"] * sensational).sum(axis=1),
                            (shown["production"] * sensational).sum(axis=1),
                            np.full(len(log.candidates), float(slots))], axis=1)
    sums = per_request.sum(axis=0)

    def purchase_change(s):
        return s[..., 0] / s[..., 1] - 1

    def bait_change(s):
        return 100 * (s[..., 2] - s[..., 3]) / s[..., 4]

    purchases = Difference(float(sums[0] / sums[4]), float(sums[1] / sums[4]), float(purchase_change(sums)),
                           poisson_bootstrap(per_request, purchase_change, draws, seed))
    bait = Difference(float(sums[2] / sums[4]), float(sums[3] / sums[4]), float(bait_change(sums)),
                      poisson_bootstrap(per_request, bait_change, draws, seed + 1))
    reasons = []
    if not purchases.interval[0] >= -purchase_drop:
        reasons.append(f"served: the candidate's top {slots} would sell {purchases.change:+.1%} "
                       f"[{purchases.interval[0]:+.1%}, {purchases.interval[1]:+.1%}] of production's predicted "
                       f"purchases, not shown to be within {purchase_drop:.0%} of them")
    if not bait.interval[1] <= bait_points:
        reasons.append(f"served: the candidate's top {slots} would show {bait.change:+.1f} points "
                       f"[{bait.interval[0]:+.1f}, {bait.interval[1]:+.1f}] of sensational headlines "
                       f"(score >= {headline_score}), not shown to be within {bait_points} points of production's")
    return ServedCheck(purchases, bait, slots, len(log.candidates), not reasons, reasons)
