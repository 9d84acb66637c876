"""Evaluation metrics: AUC and log loss from scikit-learn; calibration and per-request ranking in numpy."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss as sklearn_log_loss
from sklearn.metrics import roc_auc_score

_EPSILON = 1e-7


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn's): the chance a random positive outscores a random negative, ties
    counting half; NaN when the labels hold one class only."""
    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy (scikit-learn's), with probabilities clipped to [1e-7, 1 - 1e-7] first so that a
    saturated prediction costs a large loss rather than an infinite one."""
    p = np.clip(np.asarray(probabilities, np.float64), _EPSILON, 1 - _EPSILON)
    return float(sklearn_log_loss(np.asarray(labels, np.float64), p, labels=[0.0, 1.0]))


def calibration_bins(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> list[dict]:
    """Equal-width probability bins: count, mean prediction and observed rate of each non-empty bin."""
    p = np.asarray(probabilities, np.float64)
    y = np.asarray(labels, np.float64)
    index = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        member = index == b
        if member.any():
            out.append({"bin": b, "count": int(member.sum()), "predicted": float(p[member].mean()),
                        "observed": float(y[member].mean())})
    return out


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> float:
    """Bin-count-weighted mean of |mean prediction - observed rate| over equal-width bins."""
    n = len(labels)
    return float(sum(b["count"] / n * abs(b["predicted"] - b["observed"]) for b in calibration_bins(labels, probabilities, bins)))


def rank_within_groups(groups: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Zero-based rank of each row by descending score within its group (ties keep row order)."""
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores, np.float64), groups))
    sorted_groups = np.asarray(groups)[order]
    starts = np.r_[0, np.flatnonzero(sorted_groups[1:] != sorted_groups[:-1]) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    ranks = np.empty(len(order), np.int64)
    ranks[order] = np.arange(len(order)) - group_start
    return ranks


def ndcg_at_k(groups: np.ndarray, ranks: np.ndarray, relevance: np.ndarray, k: int) -> float:
    """Mean over groups of DCG@k / ideal DCG@k, gain 2^rel - 1; groups without any relevant row are skipped."""
    groups = np.asarray(groups)
    relevance = np.asarray(relevance, np.float64)
    gain = (2.0 ** relevance - 1.0)
    discount = 1.0 / np.log2(np.asarray(ranks) + 2.0)
    dcg = _group_sum(groups, np.where(ranks < k, gain * discount, 0.0))
    ideal_ranks = rank_within_groups(groups, relevance)
    ideal = _group_sum(groups, np.where(ideal_ranks < k, gain / np.log2(ideal_ranks + 2.0), 0.0))
    keep = ideal > 0
    return float(np.mean(dcg[keep] / ideal[keep])) if keep.any() else float("nan")


def _group_sum(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    _, inverse = np.unique(groups, return_inverse=True)
    return np.bincount(inverse, weights=values)
