"""What a ranker's exploration gives each logged choice: the conditional probability of each slot's item given
the items above it, as a ranking service logs it and as off-policy evaluation recomputes it for a target
policy, and each candidate's marginal probability of each top slot. Plackett-Luce over standardised scores at a
temperature, or epsilon-greedy, either with a support floor: a share of requests served a uniformly random
slate of their candidates, so that every candidate keeps a chance of every slot and a log of production's
serving can evaluate any candidate (`Sampling`).
"""
from __future__ import annotations

import enum
import itertools
import math
from dataclasses import dataclass

import numpy as np

from config.loop import LoopSettings


class Exploration(str, enum.Enum):
    PLACKETT_LUCE = "plackett-luce"
    EPSILON_GREEDY = "epsilon-greedy"


@dataclass(frozen=True)
class Sampling:
    """How a ranker samples its slates from its scores: Plackett-Luce at `temperature` or epsilon-greedy at
    `epsilon`; and on a `floor` share of requests, drawn apart from the scores, a uniformly random slate of the
    candidates. The floor bounds every candidate's chance of every slot below by floor / candidates, and so
    bounds the off-policy weights of any candidate judged on the log; it costs the purchases the random slates
    do not make."""

    exploration: Exploration = Exploration.PLACKETT_LUCE
    temperature: float = 0.5
    epsilon: float = 0.1
    floor: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "exploration", Exploration(self.exploration))
        if self.temperature <= 0 or not 0 <= self.epsilon <= 1 or not 0 <= self.floor < 1:
            raise ValueError(f"sampling needs a positive temperature, epsilon within [0, 1] and a floor within "
                             f"[0, 1): {self}")

    @classmethod
    def of(cls, loop: LoopSettings) -> Sampling:
        """How production serves, from the settings' `loop.serving_*`."""
        return cls(Exploration(loop.serving_exploration), loop.serving_temperature, loop.serving_epsilon,
                   loop.serving_floor)


def slot_marginals(scores: np.ndarray, slots: int, sampling: Sampling) -> np.ndarray:
    """P(column c at slot k) for k < `slots` <= 3, (rows, columns, slots), for a ranker of `scores` sampling as
    `sampling` says: what it would show in expectation, with no sampling noise."""
    marginals = top_slot_marginals(scores, slots, sampling.exploration, sampling.temperature, sampling.epsilon)
    return floored_marginals(marginals, sampling.floor)


def floored_marginals(marginals: np.ndarray, floor: float) -> np.ndarray:
    """Slot marginals (rows, columns, slots) of a policy whose requests are, with probability `floor`, served a
    uniformly random slate instead: each column has 1 / columns of every slot there."""
    return marginals if floor == 0 else (1 - floor) * marginals + floor / marginals.shape[1]


def conditional_probability(scores: np.ndarray, order: np.ndarray, sampling: Sampling) -> np.ndarray:
    """Each slot's conditional probability of the columns `order` chose, given the columns above it, for a
    ranker of `scores` sampling as `sampling` says: the propensity a ranking service logs. With a floor, the
    slate is a mixture of the policy's and a uniform one, so slot k's probability is the ratio of the mixture's
    probabilities of the prefixes through k and through k - 1."""
    policy = target_probability(scores, order, sampling.exploration, sampling.temperature, sampling.epsilon)
    return floored_conditional(policy, scores.shape[1], sampling.floor)


def floored_conditional(policy: np.ndarray, columns: int, floor: float) -> np.ndarray:
    """`conditional_probability` from the policy's own conditional probabilities (rows, slots) of a slate of
    `columns` candidates, mixed with a uniformly random slate on a `floor` share of requests."""
    if floor == 0:
        return policy
    uniform = 1.0 / (columns - np.arange(policy.shape[1]))
    mixed = (1 - floor) * np.cumprod(policy, axis=1) + floor * np.cumprod(uniform)[None, :]
    before = np.concatenate([np.ones((len(policy), 1)), mixed[:, :-1]], axis=1)
    return mixed / before


def standardised_logits(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Plackett-Luce logits of a model's scores: standardised within each request (row), over the temperature,
    so one temperature explores alike whatever the score's scale."""
    spread = scores.std(axis=1, keepdims=True)
    return (scores - scores.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0) / temperature


def plackett_luce_probability(logits: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Each slot's conditional probability of the columns `order` chose under Plackett-Luce with `logits`
    (rows of candidates): what a target policy would have had of showing the logged slate, slot by slot."""
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    chosen = np.take_along_axis(weights, order, axis=1)
    remaining = weights.sum(axis=1, keepdims=True) - np.cumsum(chosen, axis=1) + chosen
    return chosen / remaining


def plackett_luce_marginals(logits: np.ndarray, slate_size: int, most_prefixes: int = 100_000) -> np.ndarray:
    """P(column c at slot k) under Plackett-Luce, exactly, (rows, columns, slate_size): the marginals
    position-wise IPS weighs by. Sums over every ordered prefix above slot k, so it is for small candidate sets
    (refused beyond `most_prefixes` prefixes)."""
    n, m = logits.shape
    if sum(math.perm(m, k) for k in range(slate_size)) > most_prefixes:
        raise ValueError(f"{m} candidates and {slate_size} slots have too many prefixes to sum exactly")
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    total = weights.sum(axis=1)
    marginals = np.zeros((n, m, slate_size))
    for k in range(slate_size):
        for prefix in itertools.permutations(range(m), k):
            probability, left = np.ones(n), total.copy()
            for c in prefix:
                probability *= weights[:, c] / left
                left -= weights[:, c]
            share = probability[:, None] * weights / left[:, None]
            share[:, list(prefix)] = 0.0
            marginals[:, :, k] += share
    return marginals


def epsilon_greedy_probability(scores: np.ndarray, order: np.ndarray, epsilon: float) -> np.ndarray:
    """Each slot's conditional probability of the columns `order` chose under epsilon-greedy on `scores`: the
    best remaining column with probability 1 - epsilon, any remaining one uniformly with probability epsilon."""
    n, m = scores.shape
    taken = np.zeros((n, m), bool)
    rows = np.arange(n)
    probability = np.empty(order.shape)
    for slot in range(order.shape[1]):
        best = np.argmax(np.where(taken, -np.inf, scores), axis=1)
        probability[:, slot] = epsilon / (m - slot) + (1 - epsilon) * (order[:, slot] == best)
        taken[rows, order[:, slot]] = True
    return probability


def target_probability(scores: np.ndarray, order: np.ndarray, exploration: str, temperature: float,
                       epsilon: float) -> np.ndarray:
    """The candidate's conditional probability of each logged slot's choice, serving as production serves:
    Plackett-Luce over standardised scores at `temperature`, or epsilon-greedy."""
    if Exploration(exploration) is Exploration.EPSILON_GREEDY:
        return epsilon_greedy_probability(scores, order, epsilon)
    return plackett_luce_probability(standardised_logits(scores, temperature), order)


def top_slot_marginals(scores: np.ndarray, slots: int, exploration: str, temperature: float,
                       epsilon: float) -> np.ndarray:
    """P(column c at slot k) for k < `slots` <= 3, (rows, columns, slots), serving as production serves
    (`target_probability`'s policies): what a ranker would show in expectation, with no sampling noise."""
    if Exploration(exploration) is Exploration.EPSILON_GREEDY:
        _check_slots(scores, slots)
        return _epsilon_greedy_marginals(scores, slots, epsilon)
    return plackett_luce_top_marginals(standardised_logits(scores, temperature), slots)


def _check_slots(scores: np.ndarray, slots: int) -> None:
    if not 1 <= slots <= 3:
        raise ValueError(f"slots must be 1, 2 or 3, not {slots}")
    if scores.shape[1] < slots:
        raise ValueError(f"{scores.shape[1]} candidates cannot fill {slots} slots")


def plackett_luce_top_marginals(logits: np.ndarray, slots: int) -> np.ndarray:
    """`plackett_luce_marginals` for the first `slots` <= 3 slots in closed form, O(columns^2) a row rather than
    a sum over every prefix: for a day's requests of fifty candidates."""
    _check_slots(logits, slots)
    n, m = logits.shape
    out = np.empty((n, m, slots))
    diagonal = np.arange(m)
    for start in range(0, n, 2048):  # rows in blocks: the third slot holds (rows, columns, columns) at once
        block = slice(start, start + 2048)
        w = np.exp(logits[block] - logits[block].max(axis=1, keepdims=True))
        total = w.sum(axis=1, keepdims=True)
        first = w / total
        out[block, :, 0] = first
        if slots > 1:
            after = first / (total - w)  # P(a first) over what is left after a
            out[block, :, 1] = w * (after.sum(axis=1, keepdims=True) - after)
        if slots > 2:
            pair = after[:, :, None] * w[:, None, :] / (total[:, :, None] - w[:, :, None] - w[:, None, :])
            pair[:, diagonal, diagonal] = 0.0  # P(a first, b second) over what is left after both
            out[block, :, 2] = w * (pair.sum(axis=(1, 2))[:, None] - pair.sum(axis=2) - pair.sum(axis=1))
    return out


def _epsilon_greedy_marginals(scores: np.ndarray, slots: int, epsilon: float) -> np.ndarray:
    """`top_slot_marginals` under epsilon-greedy: each slot the best remaining column with probability
    1 - epsilon, else a uniform remaining one. Which column is best depends only on which of the top three went
    above, so three cases cover every prefix."""
    n, m = scores.shape
    rows = np.arange(n)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :3]
    g1, g2 = top[:, 0], top[:, min(1, m - 1)]
    out = np.zeros((n, m, slots))
    first = np.full((n, m), epsilon / m)
    first[rows, g1] += 1 - epsilon
    out[:, :, 0] = first
    if slots > 1:
        second = epsilon / (m - 1) * (1 - first)
        second[rows, g1] += (1 - epsilon) * (1 - first[rows, g1])  # g1 is best unless it went first
        second[rows, g2] += (1 - epsilon) * first[rows, g1]  # then g2 is
        out[:, :, 1] = second
    if slots > 2:
        g3 = top[:, 2]
        shown = first + second  # P(column among the first two)
        follows = epsilon / (m - 1) + (1 - epsilon)  # g2 after g1, or g1 after g2: each the best left
        both = first[rows, g1] * follows + first[rows, g2] * follows  # {g1, g2} went first, in either order
        third = epsilon / (m - 2) * (1 - shown)
        third[rows, g1] += (1 - epsilon) * (1 - shown[rows, g1])
        third[rows, g2] += (1 - epsilon) * (shown[rows, g1] - both)
        third[rows, g3] += (1 - epsilon) * both
        out[:, :, 2] = third
    return out
