"""Metrics against values worked out by hand (and AUC against scikit-learn on random data)."""
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from trainer import metrics


def test_auc_counts_pairs_won_with_ties_as_half():
    # positives 0.9 and 0.3, negatives 0.8 and 0.1: 0.9 beats both, 0.3 beats 0.1 only -> 3 of 4 pairs
    assert metrics.auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.3, 0.1])) == 0.75
    # a positive tied with a negative wins half a pair: (1 + 0.5) / 2
    assert metrics.auc(np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.9, 0.1])) == pytest.approx(0.875)
    assert math.isnan(metrics.auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_auc_matches_scikit_learn_on_random_scores_with_ties():
    rng = np.random.default_rng(3)
    labels = rng.random(5000) < 0.2
    scores = np.round(rng.random(5000) + 0.3 * labels, 2)
    assert metrics.auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_log_loss_by_hand():
    assert metrics.log_loss(np.array([1, 0]), np.array([0.8, 0.7])) == pytest.approx(-(math.log(0.8) + math.log(0.3)) / 2)


def test_expected_calibration_error_by_hand():
    labels = np.array([1, 0, 1, 1])
    p = np.array([0.05, 0.05, 0.95, 0.95])
    # bin 0: predicted 0.05, observed 0.5; bin 9: predicted 0.95, observed 1.0; each holds half the rows
    assert metrics.expected_calibration_error(labels, p) == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)


def test_rank_within_groups_orders_by_descending_score_per_group():
    groups = np.array(["b", "a", "b", "a", "b"])
    scores = np.array([0.1, 0.9, 0.7, 0.2, 0.7])
    assert metrics.rank_within_groups(groups, scores).tolist() == [2, 0, 0, 1, 1]  # tie keeps row order


def test_ndcg_by_hand():
    groups = np.array(["r1", "r1", "r1", "r2", "r2"])
    relevance = np.array([0, 1, 0, 0, 0])  # r2 has nothing relevant: skipped
    ranks = np.array([0, 1, 2, 0, 1])  # the relevant row sits second
    assert metrics.ndcg_at_k(groups, ranks, relevance, k=3) == pytest.approx(1 / math.log2(3))
    assert metrics.ndcg_at_k(groups, ranks, relevance, k=1) == 0.0
    assert metrics.ndcg_at_k(groups, np.array([1, 0, 2, 0, 1]), relevance, k=1) == 1.0
