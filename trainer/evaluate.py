"""Evaluation on a later event-time range than training: per-task metrics, re-ranked requests, hidden truth.

Each model re-ranks every logged request (the slate its impressions came from) by its value score. Observed
labels give per-task AUC, log loss and calibration, and NDCG@k. Where the simulator's ground truth is at hand,
each re-ranked slate is scored by what the world would truly do: expected clicks, carts and purchases per 1000
impressions in the top k at their new positions, and the share of clickbait there. The logged policy's own
order is reported beside the models.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from config.join import LabelStrategy
from config.trainer import TASKS, ModelConfig
from pipelines.labeling import bounce_probability, long_dwell
from trainer import metrics
from trainer.data import find_partitions, label_strategy, load_columns
from trainer.exported import ExportedModel

RELEVANCE = {"purchase": 3, "add_to_cart": 2, "long_dwell": 1}  # graded gain of a logged outcome for NDCG
LOGGED = "logged policy"


def observed_labels(columns: dict, long_dwell_ms: int) -> dict[str, np.ndarray]:
    clicked = columns["clicked"] > 0
    return {"click": clicked, "long_dwell": long_dwell(clicked, columns["dwell_ms"], long_dwell_ms),
            "add_to_cart": columns["added_to_cart"] > 0, "purchase": columns["purchased"] > 0}


def task_metrics(labels: dict[str, np.ndarray], predictions: dict[str, np.ndarray], trained: list[str]) -> dict:
    out = {}
    for task in trained:
        y, p = labels[task], predictions[task]
        out[task] = {"auc": metrics.auc(y, p), "log_loss": metrics.log_loss(y, p),
                     "ece": metrics.expected_calibration_error(y, p), "positives": int(y.sum()),
                     "mean_prediction": float(p.mean()), "observed_rate": float(y.mean())}
    return out


def true_long_dwell_probability(world, items: np.ndarray, long_dwell_s: float) -> np.ndarray:
    """p(dwell >= long_dwell_s | click) under the world's log-normal dwell."""
    z = (np.log(long_dwell_s) - world.dwell_log_median(items)) / world.config.behaviour.dwell_sigma
    return 0.5 * np.vectorize(math.erfc)(z / math.sqrt(2.0))


def true_outcomes_of_top(world, users: np.ndarray, items: np.ndarray, ranks: np.ndarray, k: int,
                         long_dwell_s: float, value_weights: dict[str, float]) -> dict:
    """What the world would do with each request's top k at positions 0..k-1, per 1000 impressions."""
    top = ranks < k
    u, i, r = users[top], items[top], ranks[top]
    outcome = world.expected_outcomes(u, i, r)
    long_dwell = outcome["click"] * true_long_dwell_probability(world, i, long_dwell_s)
    truth = {"click": outcome["click"], "long_dwell": long_dwell, "add_to_cart": outcome["add_to_cart"],
             "purchase": outcome["purchase"], "bounce": bounce_probability(outcome["click"], long_dwell)}
    per_1000 = {f"true_{name}s_per_1000": float(1000 * values.mean()) for name, values in truth.items()}
    per_1000["true_value_per_1000"] = float(1000 * sum(w * truth[t].mean() for t, w in value_weights.items()))
    per_1000[f"bait_share_top{k}"] = float(world.item_is_bait[i].mean())
    per_1000[f"mean_true_quality_top{k}"] = float(world.item_quality[i].mean())
    return per_1000


def ranking_metrics(request_ids: np.ndarray, ranks: np.ndarray, labels: dict[str, np.ndarray], k: int) -> dict:
    relevance = np.zeros(len(ranks))
    for task, grade in RELEVANCE.items():
        relevance = np.maximum(relevance, grade * labels[task])
    top = ranks < k
    return {f"ndcg@{k}": metrics.ndcg_at_k(request_ids, ranks, relevance, k),
            "ndcg@10": metrics.ndcg_at_k(request_ids, ranks, relevance, 10),
            f"logged_purchases_per_1000_top{k}": float(1000 * labels["purchase"][top].mean()),
            f"logged_clicks_per_1000_top{k}": float(1000 * labels["click"][top].mean())}


def evaluate(models: list, columns: dict, k: int = 3, world=None) -> dict:
    """Report for `models` (ExportedModel) on the examples in `columns`; the first model's config sets the
    dwell threshold and the value weights used to price the hidden truth."""
    reference = ModelConfig.model_validate(models[0].metadata["config"]["model"])
    labels = observed_labels(columns, reference.long_dwell_ms)
    request_ids = columns["request_id"]
    if world is not None:
        users = np.array([int(u[1:]) for u in columns["user_id"].astype(str)])
        items = np.array([int(i[1:]) for i in columns["item_id"].astype(str)])
    report = {"examples": int(len(request_ids)), "requests": int(len(np.unique(request_ids))), "k": k,
              "value_weights_for_truth": reference.value_weights, "models": {}}

    def rankings(name: str, ranks: np.ndarray, extra: dict) -> None:
        entry = {**extra, **ranking_metrics(request_ids, ranks, labels, k)}
        if world is not None:
            entry.update(true_outcomes_of_top(world, users, items, ranks, k, reference.long_dwell_s,
                                              reference.value_weights))
        report["models"][name] = entry

    rankings(LOGGED, columns["position"].astype(np.int64), {})
    for model in models:
        predictions = model.predict(columns)
        config = ModelConfig.model_validate(model.metadata["config"]["model"])
        trained = [t for t in TASKS if config.trains(t)]
        ranks = metrics.rank_within_groups(request_ids, predictions["value"])
        rankings(model.name, ranks, {"path": str(model.path), "trained_tasks": trained,
                                     "tasks": task_metrics(labels, predictions, trained),
                                     "calibration": {t: metrics.calibration_bins(labels[t], predictions[t])
                                                     for t in trained}})
    return report


def evaluate_range(model_paths: list[Path], examples: Path, from_ms: int | None, to_ms: int | None,
                   world=None, k: int = 3, baseline: str | None = None, min_purchase_lift: float = 0.25) -> dict:
    """`evaluate` of the SavedModels at `model_paths` on the join's partitions in [from_ms, to_ms), with the
    `world`'s truth (the simulator's World, loaded by the caller: the trainer knows it only by what it answers);
    with `baseline` (a model's name), the trap verdict of the first model against it (`compare`). Raises
    ValueError for a range without final labels or a baseline it cannot judge."""
    partitions = find_partitions(examples, from_ms, to_ms)
    if label_strategy(partitions) != LabelStrategy.WAIT_FOR_WINDOW.value:
        raise ValueError("evaluation needs final labels: label the evaluation range with --strategy wait_for_window")
    loaded = [ExportedModel(path) for path in model_paths]
    report = evaluate(loaded, load_columns(partitions), k=k, world=world)
    report["data"] = {"examples_dir": str(examples), "partitions": [p.manifest["partition"] for p in partitions]}
    if baseline is not None:
        if baseline not in report["models"] or world is None:
            raise ValueError(f"--baseline {baseline!r} needs --ground-truth and one --model named so "
                             f"({list(report['models'])})")
        report["verdict"] = compare(report, loaded[0].name, baseline, k, min_purchase_lift)
    return report


def compare(report: dict, candidate: str, baseline: str, k: int, min_purchase_lift: float) -> dict:
    """The clickbait-trap verdict: the candidate sells more and shows less bait; the baseline gets more clicks."""
    c, b = report["models"][candidate], report["models"][baseline]
    lift = c["true_purchases_per_1000"] / b["true_purchases_per_1000"] - 1.0
    checks = {
        f"true purchases per 1000 up at least {min_purchase_lift:.0%}": lift >= min_purchase_lift,
        f"lower bait share in the top {k}": c[f"bait_share_top{k}"] < b[f"bait_share_top{k}"],
        "the CTR-only baseline wins on clicks": b["true_clicks_per_1000"] > c["true_clicks_per_1000"],
    }
    return {"candidate": candidate, "baseline": baseline, "purchase_lift": lift,
            "click_change": c["true_clicks_per_1000"] / b["true_clicks_per_1000"] - 1.0,
            "checks": checks, "passed": all(checks.values())}


def table(report: dict) -> str:
    k = report["k"]
    columns = [("true_clicks_per_1000", "clicks/1k"), ("true_purchases_per_1000", "buys/1k"),
               ("true_add_to_carts_per_1000", "carts/1k"), ("true_bounces_per_1000", "bounces/1k"),
               ("true_value_per_1000", "value/1k"), (f"bait_share_top{k}", f"bait top{k}"),
               (f"ndcg@{k}", f"ndcg@{k}")]
    rows = [f"{'ranking (top ' + str(k) + ')':<28}" + "".join(f"{label:>12}" for _, label in columns)]
    for name, entry in report["models"].items():
        rows.append(f"{name:<28}" + "".join(f"{entry[key]:>12.4f}" if key in entry else f"{'-':>12}"
                                            for key, _ in columns))
    for name, entry in report["models"].items():
        for task, m in entry.get("tasks", {}).items():
            rows.append(f"  {name} {task:<12} auc {m['auc']:.4f}  log loss {m['log_loss']:.4f}  ece {m['ece']:.4f}")
    return "\n".join(rows)


def plot(report: dict, out_dir: Path) -> list[Path]:
    matplotlib.use("Agg")

    out_dir.mkdir(parents=True, exist_ok=True)
    k, names = report["k"], list(report["models"])
    written = []
    if "true_purchases_per_1000" in report["models"][names[0]]:
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        for ax, (key, title) in zip(axes, [("true_clicks_per_1000", "true clicks per 1000"),
                                           ("true_purchases_per_1000", "true purchases per 1000"),
                                           (f"bait_share_top{k}", f"bait share in top {k}")]):
            ax.bar(names, [report["models"][n][key] for n in names], color=["grey", "tab:green", "tab:red"][:len(names)])
            ax.set_title(title)
            ax.tick_params(axis="x", rotation=20)
        fig.tight_layout()
        written.append(out_dir / "trap.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    fig, axes = plt.subplots(1, len(TASKS), figsize=(4 * len(TASKS), 4))
    for ax, task in zip(axes, TASKS):
        ax.plot([0, 1], [0, 1], ":", color="grey")
        for name in names:
            bins = report["models"][name].get("calibration", {}).get(task)
            if bins:
                ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], "o-", label=name)
        ax.set_title(f"calibration: {task}")
        ax.set_xlabel("predicted")
        ax.set_ylabel("observed")
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(out_dir / "calibration.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    return written


def write_report(report: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "evaluation.json"
    path.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return path


def verdict_lines(verdict: dict) -> list[str]:
    """The trap verdict as a reader reads it: the two lifts, then each check passed or failed."""
    lines = [f"{verdict['candidate']} vs {verdict['baseline']}: true purchases per 1000 "
             f"{verdict['purchase_lift']:+.1%}, true clicks per 1000 {verdict['click_change']:+.1%}"]
    return lines + [f"  [{'pass' if passed else 'FAIL'}] {check}" for check, passed in verdict["checks"].items()]
