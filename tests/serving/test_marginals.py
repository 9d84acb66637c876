"""The top slots' marginals in closed form, against sums over every prefix worked out one by one."""
import itertools

import numpy as np
import pytest

from serving.propensities import (epsilon_greedy_probability, plackett_luce_marginals, standardised_logits,
                                  top_slot_marginals)


def enumerated_epsilon_greedy(scores: np.ndarray, slots: int, epsilon: float) -> np.ndarray:
    """P(column at slot) by summing the probability of every ordered prefix, one row at a time."""
    n, m = scores.shape
    out = np.zeros((n, m, slots))
    for row in range(n):
        for prefix in itertools.permutations(range(m), slots):
            probability = epsilon_greedy_probability(scores[row:row + 1], np.array([prefix]), epsilon).prod()
            for slot, column in enumerate(prefix):
                out[row, column, slot] += probability
    return out


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_plackett_luce_top_marginals_equal_the_sum_over_prefixes_pure_function(slots):
    scores = np.random.default_rng(slots).normal(size=(6, 8))
    closed = top_slot_marginals(scores, slots, "plackett-luce", 0.5, 0.1)
    assert closed == pytest.approx(plackett_luce_marginals(standardised_logits(scores, 0.5), slots), abs=1e-12)
    assert closed.sum(axis=1) == pytest.approx(np.ones((6, slots)))


@pytest.mark.parametrize("slots", [1, 2, 3])
def test_epsilon_greedy_top_marginals_equal_the_sum_over_prefixes_pure_function(slots):
    scores = np.random.default_rng(10 + slots).normal(size=(4, 6))
    closed = top_slot_marginals(scores, slots, "epsilon-greedy", 0.5, 0.3)
    assert closed == pytest.approx(enumerated_epsilon_greedy(scores, slots, 0.3), abs=1e-12)


def test_a_greedy_ranker_shows_its_top_three_in_order_pure_function():
    scores = np.array([[0.1, 0.9, 0.5, 0.7]])
    marginals = top_slot_marginals(scores, 3, "epsilon-greedy", 0.5, 0.0)
    assert marginals[0].argmax(axis=0).tolist() == [1, 3, 2] and marginals.max() == 1.0


def test_more_than_three_slots_or_too_few_candidates_are_refused_pure_function():
    with pytest.raises(ValueError, match="slots must be 1, 2 or 3"):
        top_slot_marginals(np.zeros((1, 5)), 4, "plackett-luce", 0.5, 0.1)
    with pytest.raises(ValueError, match="2 candidates cannot fill 3 slots"):
        top_slot_marginals(np.zeros((1, 2)), 3, "epsilon-greedy", 0.5, 0.1)


@pytest.mark.parametrize("exploration", ["plackett-luce", "epsilon-greedy"])
def test_the_support_floor_is_sampled_as_its_marginals_and_logged_propensities_say_pure_function(exploration):
    from serving.policies import sample
    from serving.propensities import Sampling, conditional_probability, slot_marginals

    rng = np.random.default_rng(5)
    scores = np.tile(np.array([[2.0, 1.0, 0.0, -1.0, -3.0]]), (60_000, 1))
    sampling = Sampling(exploration, temperature=0.5, epsilon=0.2, floor=0.2)
    order, propensity = sample(scores, 3, sampling, rng)
    assert np.allclose(propensity, conditional_probability(scores, order, sampling))
    expected = slot_marginals(scores[:1], 3, sampling)[0]
    for slot in range(3):
        seen = np.bincount(order[:, slot], minlength=5) / len(order)
        assert np.allclose(seen, expected[:, slot], atol=0.01), (slot, seen, expected[:, slot])
    # every column keeps at least floor / columns of every slot
    assert expected.min() >= 0.2 / 5 - 1e-12
    # the logged propensities of a slate multiply to its probability: over the draws, the slates' frequencies
    first_slate = order[0]
    frequency = np.mean((order == first_slate).all(axis=1))
    assert frequency == pytest.approx(np.prod(propensity[0]), abs=0.01)
