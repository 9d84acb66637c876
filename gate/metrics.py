"""The model gate: a candidate against production on the same evaluation window, in the manner of TFMA's
thresholds, applied to the bootstrap confidence bound of each change rather than to its point estimate.

Each threshold names a metric, which way is better, and bounds: an absolute bound on the candidate's value, and
bounds on its change against production, absolute or relative. The change's 95% interval comes from a seeded
Poisson bootstrap over requests (each request's rows weighted alike, the same weights for both models, so the
interval is of the paired difference). A bound passes only when the interval's worse end passes it. A metric a
threshold names but the candidate lacks fails. The first model, with no production to compare with, is judged
on the absolute bounds alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy import sparse

from config.audit import AuditConfig, Better, Threshold

BOOTSTRAP_DRAWS = 200
__all__ = ["Better", "Threshold", "MetricCheck", "gate", "model_metrics", "clickbait_model_signature"]


DEFAULT_THRESHOLDS = AuditConfig().gate


@dataclass(frozen=True)
class MetricCheck:
    metric: str
    slice: str
    candidate: float | None
    production: float | None
    change: float | None
    interval: tuple[float, float] | None
    passed: bool
    reason: str


def _top_k(request_ids: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Whether each row is among its request's top k by `scores`."""
    order = np.lexsort((-scores, request_ids))
    ids = request_ids[order]
    starts = np.r_[0, np.flatnonzero(ids[1:] != ids[:-1]) + 1]
    rank = np.arange(len(ids)) - np.repeat(starts, np.diff(np.r_[starts, len(ids)]))
    top = np.zeros(len(ids), bool)
    top[order] = rank < k
    return top


def _top_k_per_1000(request_ids, scores, outcome, weights, k: int) -> float:
    """Logged outcomes among each request's top k by `scores`, per 1000 impressions shown, requests weighted."""
    top = _top_k(np.asarray(request_ids), np.asarray(scores), k)
    shown = np.sum(weights[top])
    return float(1000 * np.sum(outcome[top] * weights[top]) / shown) if shown > 0 else float("nan")


class Scored:
    """A model's predictions on a window, arranged once so that its metrics under any weights (bootstrap draws, a
    slice's mask) cost a few passes over the rows: predictions sorted per task with their ties grouped (AUC),
    each row's loss and calibration bin, each request's top k. `metrics_many` takes a block of weight vectors at
    once, so that the sums over rows are matrix products and each pass serves every draw of the block.

    The metrics equal scikit-learn's `roc_auc_score` and `log_loss` with `sample_weight` (tests/gate/test_gate.py);
    sklearn sorts again for each call, which over hundreds of draws of a day's impressions took minutes."""

    def __init__(self, window: dict, predictions: dict[str, np.ndarray], k: int = 3, bins: int = 10):
        self.k, self.tasks = k, {}
        for task, predicted in predictions.items():
            if task == "value":
                continue
            labels = np.asarray(window[task], np.float64)
            p = np.asarray(predicted, np.float64)
            order = np.argsort(p, kind="stable")
            sorted_p = p[order]
            starts = np.r_[0, np.flatnonzero(np.diff(sorted_p)) + 1]
            clipped = np.clip(p, 1e-7, 1 - 1e-7)
            loss = -(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
            # each row's predicted minus observed, in its calibration bin's column
            calibration = sparse.csc_matrix((p - labels, (np.arange(len(p)), np.minimum((p * bins).astype(int),
                                                                                         bins - 1))),
                                            shape=(len(p), bins))
            self.tasks[task] = {"order": order, "starts": starts, "sorted_labels": labels[order],
                                "ties": len(starts) < len(p), "sums": np.column_stack([labels, loss]),
                                "calibration": calibration}  # each summed over rows by a product with the weights
        self.top = None
        if "value" in predictions:
            top = _top_k(np.asarray(window["request_id"]), np.asarray(predictions["value"]), k)
            self.top = np.flatnonzero(top)
            self.bought_top = np.asarray(window["purchase"], np.float64)[self.top]

    @staticmethod
    def _auc(t: dict, weights: np.ndarray) -> np.ndarray:
        """The weighted AUC under each row of `weights` (draws x rows); ties count half."""
        w = weights[:, t["order"]]
        positive = w * t["sorted_labels"]
        negative = w - positive
        if t["ties"]:
            positive = np.add.reduceat(positive, t["starts"], axis=1)
            negative = np.add.reduceat(negative, t["starts"], axis=1)
        below = np.cumsum(negative, axis=1) - negative
        return np.sum(positive * (below + 0.5 * negative), axis=1) / (positive.sum(axis=1) * negative.sum(axis=1))

    def metrics(self, weights: np.ndarray) -> dict[str, float]:
        return self.metrics_many(np.asarray(weights, np.float64)[None, :])[0]

    def metrics_many(self, weights: np.ndarray) -> list[dict[str, float]]:
        """The metrics under each row of `weights` (draws x rows)."""
        out: list[dict[str, float]] = [{} for _ in range(len(weights))]
        total = weights.sum(axis=1)
        for task, t in self.tasks.items():
            sums = weights @ t["sums"]
            gaps = np.asarray((t["calibration"].T @ weights.T).T)
            rate, loss, ece = sums[:, 0] / total, sums[:, 1] / total, np.abs(gaps).sum(axis=1) / total
            informative = (rate > 0) & (rate < 1)
            auc = self._auc(t, weights[informative]) if informative.any() else np.empty(0)
            aucs = iter(auc)
            for row, draw in enumerate(out):
                if informative[row]:
                    draw[f"auc.{task}"] = float(next(aucs))
                draw[f"log_loss.{task}"] = float(loss[row])
                draw[f"ece.{task}"] = float(ece[row])
        if self.top is not None:
            shown_weights = weights[:, self.top]
            shown = shown_weights.sum(axis=1)
            bought = shown_weights @ self.bought_top
            for row, draw in enumerate(out):
                draw[f"purchases_top{self.k}_per_1000"] = float(1000 * bought[row] / shown[row]) \
                    if shown[row] > 0 else float("nan")
        return out


def model_metrics(window: dict, predictions: dict[str, np.ndarray], weights: np.ndarray | None = None,
                  k: int = 3) -> dict[str, float]:
    """A model's metrics on a window: per task in `predictions` AUC, log loss and calibration error against the
    window's labels, and the logged purchases in each request's top k by `predictions['value']`."""
    n = len(window["request_id"])
    return Scored(window, predictions, k).metrics(np.ones(n) if weights is None else np.asarray(weights, float))


DRAWS_A_BLOCK = 16  # bootstrap draws whose weights are held at once: 16 x rows x 8 bytes, 26 MB a 200,000-row day


def _request_weights(request_ids: np.ndarray, rng: np.random.Generator, draws: int) -> Iterator[np.ndarray]:
    """Poisson bootstrap weights over requests (each request's rows alike), `DRAWS_A_BLOCK` draws (rows) at a
    time: the same draws, in the same order, as one `rng.poisson(1.0, requests)` a draw."""
    _, inverse = np.unique(request_ids, return_inverse=True)
    requests = inverse.max() + 1
    for first in range(0, draws, DRAWS_A_BLOCK):
        block = min(DRAWS_A_BLOCK, draws - first)
        yield rng.poisson(1.0, (block, requests))[:, inverse].astype(np.float64)


def _judge(threshold: Threshold, candidate: float | None, production: float | None,
           interval: tuple[float, float] | None) -> tuple[bool, str]:
    if candidate is None:
        return False, "the candidate lacks this metric"
    sign = 1.0 if threshold.better is Better.HIGHER else -1.0
    if threshold.absolute is not None and sign * (candidate - threshold.absolute) < 0:
        return False, f"{candidate:.5f} is {'below' if sign > 0 else 'above'} the bound {threshold.absolute}"
    if production is None or interval is None:
        return True, "absolute bounds only: no production model" if production is None else "absolute bounds met"
    worst = interval[0] if sign > 0 else interval[1]  # the interval's worse end of the change
    for allowed, what in ((threshold.change, "absolute"), (threshold.relative_change, "relative")):
        if allowed is None:
            continue
        limit = allowed if what == "absolute" else allowed * abs(production)
        if sign * worst < -limit:
            return False, (f"the change's worse bound {worst:+.5f} is beyond the {what} limit "
                           f"{-sign * limit:+.5f}")
    return True, "within bounds"


def gate(window: dict, candidate: dict[str, np.ndarray], production: dict[str, np.ndarray] | None,
         thresholds=DEFAULT_THRESHOLDS, seed: int = 0, draws: int = BOOTSTRAP_DRAWS,
         slices: dict[str, np.ndarray] | None = None) -> list[MetricCheck]:
    """Each threshold judged for `candidate` against `production` (None: the first model) on `window`: a dict of
    columns (request_id and the label of each task), predictions by task name plus `value`. A threshold's slice
    is a mask of `slices` (`all` is the whole window); a slice the window lacks fails its thresholds."""
    n = len(window["request_id"])
    masks = {"all": np.ones(n, bool), **(slices or {})}
    wanted = sorted({t.slice for t in thresholds if t.slice in masks})

    def metrics_by_slice(scored: Scored, weights: np.ndarray) -> list[dict[str, dict[str, float]]]:
        """Per draw (a row of `weights`), the metrics of each slice the draw weighs at all."""
        by_draw: list[dict[str, dict[str, float]]] = [{} for _ in range(len(weights))]
        for name in wanted:
            masked = weights * masks[name]
            weighed = np.flatnonzero(masked.sum(axis=1) > 0)
            for row, metrics in zip(weighed, scored.metrics_many(masked[weighed])):
                by_draw[row][name] = metrics
        return by_draw

    ones = np.ones((1, n))
    scored_candidate = Scored(window, candidate)
    scored_production = Scored(window, production) if production is not None else None
    [ours] = metrics_by_slice(scored_candidate, ones)
    [theirs] = metrics_by_slice(scored_production, ones) if production is not None else [{}]
    intervals: dict[tuple[str, str], tuple[float, float]] = {}
    if production is not None:
        rng = np.random.default_rng(seed)
        changes: dict[tuple[str, str], list[float]] = {}
        for weights in _request_weights(np.asarray(window["request_id"]), rng, draws):
            for a, b in zip(metrics_by_slice(scored_candidate, weights), metrics_by_slice(scored_production, weights)):
                for name in a.keys() & b.keys():
                    for metric in a[name].keys() & b[name].keys():
                        changes.setdefault((name, metric), []).append(a[name][metric] - b[name][metric])
        intervals = {key: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for key, v in changes.items()}
    checks = []
    for threshold in thresholds:
        if threshold.slice not in masks:
            checks.append(MetricCheck(threshold.metric, threshold.slice, None, None, None, None, False,
                                      f"the window has no slice {threshold.slice}"))
            continue
        c = ours.get(threshold.slice, {}).get(threshold.metric)
        p = theirs.get(threshold.slice, {}).get(threshold.metric)
        interval = intervals.get((threshold.slice, threshold.metric))
        passed, reason = _judge(threshold, c, p, interval)
        checks.append(MetricCheck(threshold.metric, threshold.slice, c, p, None if c is None or p is None else c - p,
                                  interval, passed, reason))
    return checks


def clickbait_model_signature(window: dict, candidate: dict[str, np.ndarray], production: dict[str, np.ndarray],
                              ctr_rise: float = 0.1, purchase_drop: float = 0.05, k: int = 3) -> str | None:
    """The trap on the model side, on one window: the candidate predicts relatively more clicks than production
    (mean p(click) up by more than `ctr_rise`) while its predicted purchases per impression, or the logged
    purchases in its top k, go down by more than `purchase_drop`. Returns what it found, or None."""
    click_up = candidate["click"].mean() / production["click"].mean() - 1
    purchase_change = candidate["purchase"].mean() / production["purchase"].mean() - 1
    ids, bought = np.asarray(window["request_id"]), np.asarray(window["purchase"], np.float64)
    ones = np.ones(len(ids))
    top_ours = _top_k_per_1000(ids, candidate["value"], bought, ones, k)
    top_theirs = _top_k_per_1000(ids, production["value"], bought, ones, k)
    top_change = top_ours / top_theirs - 1 if top_theirs > 0 else 0.0
    if click_up > ctr_rise and min(purchase_change, top_change) < -purchase_drop:
        return (f"clickbait signature in the candidate's predictions: mean p(click) {click_up:+.1%} against "
                f"production, predicted purchases per impression {purchase_change:+.1%}, logged purchases in its "
                f"top {k} {top_change:+.1%}")
    return None
