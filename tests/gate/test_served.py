"""The served check on hand-made requests: what each ranker puts on top, priced by one yardstick."""
import numpy as np
import pytest

from gate.served import Served, served_check
from serving.log import FeatureTables, ServingLog
from serving.propensities import top_slot_marginals

REQUESTS, CANDIDATES = 2000, 6
# candidates 0-2 are sound (purchase 0.05, calm headlines), 3-5 sensational (purchase 0.01, headline 0.9)
PURCHASE = np.tile([0.05, 0.05, 0.05, 0.01, 0.01, 0.01], (REQUESTS, 1))
HEADLINE = np.array([0.1, 0.2, 0.1, 0.9, 0.95, 0.9])


def log() -> ServingLog:
    tables = FeatureTables(["home"], ["mobile"], np.zeros(CANDIDATES, np.int64), HEADLINE, np.ones(CANDIDATES),
                           np.zeros(CANDIDATES, np.int64), np.full(CANDIDATES, 4.0), np.zeros((1, 1)),
                           np.zeros(1, np.int64), np.zeros(1, np.int64))
    zeros = np.zeros(REQUESTS, np.int64)
    order = np.tile(np.arange(3), (REQUESTS, 1))
    return ServingLog("production", tables, zeros, zeros, zeros, np.tile(np.arange(CANDIDATES), (REQUESTS, 1)),
                      order, np.ones((REQUESTS, 3)), np.zeros((REQUESTS, 3), bool), np.zeros((REQUESTS, 3), bool))


def ranker(scores, purchase=PURCHASE) -> Served:
    return Served(top_slot_marginals(scores, 3, "epsilon-greedy", 0.5, 0.1), purchase)


def test_a_candidate_that_ranks_as_production_does_passes_pure_function():
    scores = PURCHASE + np.random.default_rng(0).normal(0, 1e-4, PURCHASE.shape)
    check = served_check(log(), ranker(scores), ranker(scores), 0.05, 3.0, 0.5, draws=200)
    assert check.passed and check.reasons == []
    assert check.purchases.change == pytest.approx(0.0) and check.bait_proxy.change == pytest.approx(0.0)


def test_a_candidate_that_puts_sensational_items_on_top_is_blocked_on_both_counts_pure_function():
    production = ranker(PURCHASE)
    bait_first = ranker(np.tile(HEADLINE, (REQUESTS, 1)))
    check = served_check(log(), bait_first, production, 0.05, 3.0, 0.5, draws=200)
    assert not check.passed and len(check.reasons) == 2
    # epsilon-greedy at 0.1 over 6 candidates: most slots show what each ranker ranks first
    assert check.purchases.interval[1] < -0.5 and check.bait_proxy.interval[0] > 50
    assert "predicted purchases" in check.reasons[0] and "sensational headlines" in check.reasons[1]


def test_with_no_purchase_predictions_the_check_cannot_decide_and_blocks_pure_function():
    check = served_check(log(), ranker(PURCHASE, None), ranker(PURCHASE, None), 0.05, 3.0, 0.5, draws=200)
    assert not check.passed and "cannot be compared" in check.reasons[0]


def test_production_without_a_model_is_priced_by_the_candidates_predictions_pure_function():
    check = served_check(log(), ranker(PURCHASE), ranker(PURCHASE, None), 0.05, 3.0, 0.5, draws=200)
    assert check.passed and check.purchases.candidate == pytest.approx(check.purchases.production)
