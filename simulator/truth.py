"""What a ranker would truly earn on a day's requests, from the world's hidden truth: the yardstick every decision
of the gate is scored against, never an input to it.

A ranker is judged on production's serving log of the day: the same requests (user, surface, moment) and the same
candidates, each scored by the ranker and served as production serves (Plackett-Luce or epsilon-greedy, as
`serving.propensities` has it), in expectation over the exploration (`top_slot_marginals`), with no sampling
noise. Over the top `slots` slots, per 1000 impressions: the expected true purchases, and the share of
impressions that show bait (items written as clickbait).

A candidate is **healthy** when it earns at least `healthy_purchases` (98%) of production's purchases and
shows at most `healthy_bait_points` (2) points more bait; **harmful** when it earns at most
`harmful_purchases` (90%) of them or shows at least `harmful_bait_points` (5) points more bait; otherwise
neither, and no decision on it is counted right or wrong.
"""
from __future__ import annotations

import enum
from dataclasses import asdict, dataclass

import numpy as np

from serving.log import ServingLog
from serving.policies import LoggingPolicy
from serving.propensities import Sampling, slot_marginals
from simulator.world import World


@dataclass(frozen=True)
class ServedTruth:
    """What a ranker would truly earn over the top `slots` slots of a day's logged requests."""

    purchases_per_1000: float  # expected true purchases per 1000 impressions
    bait_share: float  # expected share of the impressions that show bait, 0..1
    slots: int
    requests: int

    def as_dict(self) -> dict:
        return asdict(self)


class Health(str, enum.Enum):
    HEALTHY = "healthy"
    HARMFUL = "harmful"
    NEITHER = "neither"


@dataclass(frozen=True)
class Bounds:
    """Where healthy and harmful begin, relative to production's truth."""

    healthy_purchases: float = 0.98
    healthy_bait_points: float = 2.0
    harmful_purchases: float = 0.90
    harmful_bait_points: float = 5.0


def served_truth(world: World, log: ServingLog, marginals: np.ndarray) -> ServedTruth:
    """The truth of serving the log's requests with P(candidate at slot) `marginals` (requests, candidates,
    slots): see `ranker_marginals` and `logging_marginals`."""
    if marginals.shape[:2] != log.candidates.shape:
        raise ValueError(f"marginals of shape {marginals.shape} for candidates of shape {log.candidates.shape}")
    slots = marginals.shape[2]
    users, items = log.users[:, None], log.candidates
    purchases = sum((marginals[:, :, k] * world.expected_outcomes(users, items, np.full(items.shape, k))["purchase"])
                    .sum() for k in range(slots))
    bait = (marginals.sum(axis=2) * world.item_is_bait[items]).sum()
    impressions = len(log.users) * slots
    return ServedTruth(float(1000 * purchases / impressions), float(bait / impressions), slots, len(log.users))


def ranker_marginals(scores: np.ndarray, slots: int, sampling: Sampling) -> np.ndarray:
    """How a model serving by `scores` of each request's candidates, sampled as `sampling` says, fills the first
    `slots` slots."""
    return slot_marginals(scores, slots, sampling)


def logging_marginals(policy: LoggingPolicy, log: ServingLog, slots: int) -> np.ndarray:
    """How the world's logging policy fills the first `slots` slots of the log's requests (Plackett-Luce over its
    logits, each surface's headline weight its own)."""
    return policy.slot_marginals(log.tables, log.users, log.candidates, log.surfaces, slots)


def health(candidate: ServedTruth, production: ServedTruth, bounds: Bounds = Bounds()) -> Health:
    """Whether the candidate, had it served instead of production, would have helped users or served them bait."""
    ratio = candidate.purchases_per_1000 / production.purchases_per_1000 if production.purchases_per_1000 > 0 \
        else float("inf")
    more_bait = round(100 * (candidate.bait_share - production.bait_share), 9)  # points, without float dust
    if ratio <= bounds.harmful_purchases or more_bait >= bounds.harmful_bait_points:
        return Health.HARMFUL
    if ratio >= bounds.healthy_purchases and more_bait <= bounds.healthy_bait_points:
        return Health.HEALTHY
    return Health.NEITHER
