"""What a ranker's exploration gives each logged choice: the conditional probability of each slot's item given
the items above it, as a ranking service logs it and as off-policy evaluation recomputes it for a target
policy. Plackett-Luce over standardised scores at a temperature, or epsilon-greedy.
"""
from __future__ import annotations

import enum
import itertools
import math

import numpy as np


class Exploration(str, enum.Enum):
    PLACKETT_LUCE = "plackett-luce"
    EPSILON_GREEDY = "epsilon-greedy"


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
