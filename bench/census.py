"""`valueloop census`: the MMoE paper's real-data check on UCI census-income, beside shared-bottom and
single-task networks of the same budget and the published gradient-boosting reference (`docs/census.md`)."""
from __future__ import annotations

from bench.environment import describe

KINDS = ("mmoe", "shared_bottom", "single_task")  # trainer.census.KINDS, without importing TensorFlow


def run_census(seed: int, epochs: int, experts: int, ensemble: int, batch_size: int, dropout: float,
               kinds: tuple[str, ...], inner: bool, verbose: int) -> tuple[dict[str, dict[str, float]], dict | None]:
    """Trains each kind on the seeded split (with `inner`, an 80/20 split of the training rows alone, for
    choosing settings) and scores it; returns the AUC table by model and, for a recorded run (not `inner`),
    the result to write, with gradient boosting re-measured on the same split."""
    from trainer import census as run
    from config.trainer import ModelConfig

    rows = run.read_rows()
    if inner:
        rows, _test = run.split_rows(rows, seed=seed)
    data = run.split(rows, seed=seed + 1 if inner else seed)
    base = ModelConfig(experts=experts, expert_units=[64], tower_units=[32], dropout=dropout)
    seeds = tuple(range(7, 7 + ensemble))
    results = run.run(data, base, epochs=epochs, batch_size=batch_size, seeds=seeds, verbose=verbose, kinds=kinds)
    if inner:
        return results, None
    same_split = run.gradient_boosting(data, seed=seed)
    summary = {"mmoe": results["mmoe"], "reference": run.REFERENCE_AUC, "reference_this_split": same_split,
               "goal_met": all(results["mmoe"][t] >= run.REFERENCE_AUC[t] for t in run.TASKS),
               "beats_reference_this_split": all(results["mmoe"][t] >= same_split[t] for t in run.TASKS)}
    table = {**results, "gradient boosting, this split": same_split, "gradient boosting, published": run.REFERENCE_AUC}
    recorded = {"benchmark": "census", "environment": describe(("tensorflow", "tensorflow-recommenders")),
                "settings": {"seed": seed, "test_share": 0.2, "rows": len(data.x_train) + len(data.x_test),
                             "features": data.features, "epochs_at_most": epochs, "ensemble_seeds": list(seeds),
                             "batch_size": batch_size, "model": base.model_dump()},
                "results": {**results, "gradient_boosting_this_split": same_split}, "summary": summary}
    return table, recorded
