"""The model gate on synthetic windows whose truth is known: a better candidate passes, a worse one fails on the
bootstrap bound of its change, the first model is judged on absolute bounds, a missing metric fails."""
import numpy as np
import pytest

from gate.metrics import Better, Scored, Threshold, _judge, _top_k_per_1000, gate, model_metrics


def synthetic(seed: int = 0, requests: int = 1500, slate: int = 10):
    rng = np.random.default_rng(seed)
    n = requests * slate
    p_click = rng.uniform(0.02, 0.4, n)
    p_purchase = p_click * rng.uniform(0.0, 0.2, n)
    window = {"request_id": np.repeat(np.arange(requests), slate),
              "click": (rng.random(n) < p_click).astype(float), "purchase": (rng.random(n) < p_purchase).astype(float)}

    def model(noise: float, seed: int):
        r = np.random.default_rng(seed)
        click = np.clip(p_click + r.normal(0, noise, n), 0.001, 0.999)
        purchase = np.clip(p_purchase + r.normal(0, noise / 5, n), 0.0001, 0.999)
        return {"click": click, "purchase": purchase, "value": purchase}

    return window, model


def by_metric(checks):
    return {c.metric: c for c in checks}


# bounds on the changes against production, as a user sets them (the defaults bound none: config.audit)
CHANGE_BOUNDS = (*(Threshold(metric=f"auc.{task}", better=Better.HIGHER, absolute=0.55, change=0.01)
                   for task in ("click", "purchase")),
                 Threshold(metric="log_loss.click", better=Better.LOWER, relative_change=0.02),
                 Threshold(metric="purchases_top3_per_1000", better=Better.HIGHER, relative_change=0.05))


def test_a_better_candidate_passes_and_a_worse_one_fails_on_its_bound_pure_function():
    window, model = synthetic()
    production, better, worse = model(0.08, 1), model(0.02, 2), model(0.30, 3)
    assert all(c.passed for c in gate(window, better, production, CHANGE_BOUNDS, draws=60)), \
        [c for c in gate(window, better, production, CHANGE_BOUNDS, draws=60) if not c.passed]
    checks = by_metric(gate(window, worse, production, CHANGE_BOUNDS, draws=60))
    assert not checks["auc.click"].passed and "worse bound" in checks["auc.click"].reason
    low, high = checks["auc.click"].interval
    assert low <= checks["auc.click"].change <= high < 0


def test_the_first_model_is_judged_on_absolute_bounds_alone_pure_function():
    window, model = synthetic(seed=4)
    checks = by_metric(gate(window, model(0.05, 5), None))
    assert checks["auc.click"].passed and checks["auc.click"].reason == "absolute bounds only: no production model"
    noise = {"click": np.random.default_rng(6).random(len(window["click"])) * 0.98 + 0.01,
             "purchase": np.full(len(window["click"]), 0.02), "value": np.zeros(len(window["click"]))}
    assert not by_metric(gate(window, noise, None))["auc.click"].passed


def test_a_metric_the_candidate_lacks_fails_pure_function():
    window, model = synthetic(seed=7)
    candidate = {k: v for k, v in model(0.05, 8).items() if k != "purchase"}
    checks = by_metric(gate(window, candidate, model(0.05, 9), draws=20))
    assert not checks["auc.purchase"].passed and checks["auc.purchase"].reason == "the candidate lacks this metric"


def test_bounds_read_the_worse_end_of_the_interval_pure_function():
    higher = Threshold(metric="auc.click", better=Better.HIGHER, absolute=0.6, change=0.01)
    assert _judge(higher, 0.70, 0.70, (-0.005, 0.004)) == (True, "within bounds")
    assert not _judge(higher, 0.70, 0.70, (-0.02, 0.004))[0]
    assert not _judge(higher, 0.59, None, None)[0]
    lower = Threshold(metric="log_loss.click", better=Better.LOWER, relative_change=0.02)
    assert _judge(lower, 0.300, 0.300, (-0.01, 0.005))[0]  # 0.005 within 2% of 0.3
    assert not _judge(lower, 0.300, 0.300, (-0.01, 0.007))[0]


def test_purchases_in_the_top_k_by_hand_pure_function():
    ids = np.array([1, 1, 1, 2, 2, 2])
    scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.3])
    bought = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    # Top 2 of request 1: rows 0 and 2 (one purchase); of request 2: rows 4 and 5 (one): 2 in 4 shown.
    assert _top_k_per_1000(ids, scores, bought, np.ones(6), 2) == pytest.approx(500.0)
    window = {"request_id": ids, "click": np.array([1, 0, 1, 0, 1, 1.0]), "purchase": bought}
    metrics = model_metrics(window, {"click": np.array([0.9, 0.2, 0.7, 0.1, 0.8, 0.6]), "value": scores}, k=2)
    assert metrics["auc.click"] == 1.0 and metrics["purchases_top2_per_1000"] == pytest.approx(500.0)


def test_a_candidate_that_predicts_more_clicks_and_ranks_bait_shows_the_models_signature_pure_function():
    from gate.metrics import clickbait_model_signature

    window, model = synthetic(seed=10)
    production = model(0.05, 11)
    bait = dict(production, click=np.clip(production["click"] * 1.5, 0, 0.999),
                value=production["click"], purchase=production["purchase"] * 0.8)  # ranks by clicks, buys less
    found = clickbait_model_signature(window, bait, production)
    assert found is not None and found.startswith("clickbait signature in the candidate's predictions")
    assert clickbait_model_signature(window, model(0.04, 12), production) is None


def test_the_metrics_under_bootstrap_weights_equal_scikit_learns_pure_function():
    from sklearn.metrics import log_loss, roc_auc_score

    rng = np.random.default_rng(11)
    n = 5_000
    p = np.round(rng.uniform(0.01, 0.99, n), 2)  # rounded: many ties, which AUC counts as half
    labels = (rng.random(n) < p).astype(float)
    window = {"request_id": np.repeat(np.arange(n // 10), 10), "click": labels}
    for weights in (np.ones(n), rng.poisson(1.0, n).astype(float), rng.uniform(0, 3, n)):
        ours = model_metrics(window, {"click": p}, weights)
        assert ours["auc.click"] == pytest.approx(roc_auc_score(labels, p, sample_weight=weights), abs=1e-12)
        assert ours["log_loss.click"] == pytest.approx(log_loss(labels, p, sample_weight=weights), rel=1e-12)
        bins = np.minimum((p * 10).astype(int), 9)
        by_hand = sum(abs(np.sum(weights[bins == b] * (p - labels)[bins == b])) for b in range(10)) / weights.sum()
        assert ours["ece.click"] == pytest.approx(by_hand, rel=1e-12)
    untied = rng.uniform(0.01, 0.99, n)  # no two alike: the AUC's pass without grouping ties
    assert model_metrics(window, {"click": untied}, weights)["auc.click"] == pytest.approx(
        roc_auc_score(labels, untied, sample_weight=weights), abs=1e-12)


def test_a_block_of_draws_gives_each_draw_the_metrics_it_gives_alone_pure_function():
    rng = np.random.default_rng(12)
    n = 3_000
    window = {"request_id": np.repeat(np.arange(n // 10), 10), "click": (rng.random(n) < 0.2).astype(float),
              "purchase": (rng.random(n) < 0.02).astype(float)}
    scored = Scored(window, {"click": rng.random(n), "purchase": rng.random(n), "value": rng.random(n)})
    block = rng.poisson(1.0, (5, n)).astype(float)
    block[3, window["purchase"] > 0] = 0  # a draw without a purchase: no purchase AUC, as alone
    for row, metrics in zip(block, scored.metrics_many(block)):
        assert metrics.keys() == scored.metrics(row).keys()
        assert metrics == pytest.approx(scored.metrics(row), rel=1e-12)
    assert "auc.purchase" not in scored.metrics_many(block)[3]
