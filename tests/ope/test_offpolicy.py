"""Off-policy estimators on hand-worked arrays, and on a seeded bandit whose target value is known exactly: the
truth inside the 95% interval in at least 90% of 60 trials, and doubly robust closer to it than IPS on average."""
import numpy as np
import pytest

from ope.estimators import direct, doubly_robust, ips, rips, snips

SLATES = np.array([0, 0, 1, 1])
POSITIONS = np.array([0, 1, 0, 1])
REWARDS = np.array([1.0, 0.0, 0.0, 1.0])
LOGGING = np.array([0.5, 0.5, 0.25, 0.5])
TARGET = np.array([0.25, 0.5, 0.5, 1.0])  # weights 0.5, 1, 2, 2
Q_TARGET = np.array([0.3, 0.2, 0.4, 0.1])
Q_LOGGED = np.array([0.6, 0.1, 0.2, 0.5])


def test_each_estimator_equals_its_value_worked_out_by_hand_pure_function():
    assert ips(SLATES, REWARDS, LOGGING, TARGET).value == pytest.approx((0.5 * 1 + 0) / 2 + (0 + 2 * 1) / 2)
    assert ips(SLATES, REWARDS, LOGGING, TARGET).effective_sample_size == pytest.approx(5.5 ** 2 / 9.25)
    assert snips(SLATES, REWARDS, LOGGING, TARGET).value == pytest.approx(2.5 / (5.5 / 2))
    assert direct(SLATES, Q_TARGET).value == pytest.approx(0.5)
    # per row q_target + w (r - q_logged): 0.5, 0.1, 0.0, 1.1; per slate 0.6 and 1.1
    assert doubly_robust(SLATES, REWARDS, LOGGING, TARGET, Q_LOGGED, Q_TARGET).value == pytest.approx(0.85)
    # cascade weights: slate 0: 0.5, 0.5 x 1; slate 1: 2, 2 x 2; per slate 0.5 and 4
    assert rips(SLATES, POSITIONS, REWARDS, LOGGING, TARGET).value == pytest.approx(2.25)
    shuffled = np.array([3, 1, 2, 0])  # row order does not matter
    assert rips(SLATES[shuffled], POSITIONS[shuffled], REWARDS[shuffled], LOGGING[shuffled],
                TARGET[shuffled]).value == pytest.approx(2.25)


def test_bad_propensities_are_refused_pure_function():
    with pytest.raises(ValueError, match="logging propensity outside"):
        ips(SLATES, REWARDS, np.array([0.5, 0.0, 0.25, 0.5]), TARGET)
    with pytest.raises(ValueError, match="differ in length"):
        ips(SLATES, REWARDS[:3], LOGGING[:3], TARGET)
    with pytest.raises(ValueError, match="NaN"):
        ips(SLATES, np.array([1.0, np.nan, 0.0, 1.0]), LOGGING, TARGET)


def _bandit(seed: int, n: int = 2_000, actions: int = 4):
    """A contextual bandit: logging picks uniformly, the target picks the action its score favours (with
    probability 0.8, else uniformly); its true value is known from the reward probabilities."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    means = 1 / (1 + np.exp(-(np.outer(x, np.linspace(-1, 1, actions)) + np.linspace(-0.5, 0.5, actions))))
    logged = rng.integers(0, actions, n)
    reward = (rng.random(n) < means[np.arange(n), logged]).astype(float)
    favoured = np.argmax(means, axis=1)
    target = np.full((n, actions), 0.2 / actions)
    target[np.arange(n), favoured] += 0.8
    truth = float(np.sum(target * means, axis=1).mean())
    model = means + rng.normal(0, 0.05, means.shape)  # a decent reward model
    return (np.arange(n), reward, np.full(n, 1 / actions), target[np.arange(n), logged],
            model[np.arange(n), logged], np.sum(target * model, axis=1), truth)


def test_intervals_cover_the_truth_and_doubly_robust_beats_ips_on_a_known_bandit_pure_function():
    covered, ips_errors, dr_errors = 0, [], []
    for seed in range(60):
        ids, reward, logging, target, q_logged, q_target, truth = _bandit(seed)
        by_ips = ips(ids, reward, logging, target, seed=seed, draws=400)
        by_dr = doubly_robust(ids, reward, logging, target, q_logged, q_target, seed=seed, draws=400)
        covered += by_ips.interval[0] <= truth <= by_ips.interval[1]
        ips_errors.append(abs(by_ips.value - truth))
        dr_errors.append(abs(by_dr.value - truth))
    assert covered >= 54, covered  # at least 90% of 60
    assert np.mean(dr_errors) < np.mean(ips_errors)


def _serving_log(rng, n=4000, m=6, k=3):
    from serving.log import FeatureTables, ServingLog
    from serving.propensities import plackett_luce_probability

    logits = rng.normal(size=(n, m))
    order = np.argsort(-(logits + rng.gumbel(size=logits.shape)), axis=1)[:, :k]
    good = np.arange(m) < 2  # columns 0 and 1 sell; the others never do
    bought = good[order] & (rng.random((n, k)) < 0.3)
    tables = FeatureTables(["home_feed"], ["mobile"], np.zeros(m, int), np.zeros(m), np.ones(m), np.zeros(m, int),
                           np.full(m, np.nan), np.zeros((n, 1)), np.zeros(n, int), np.zeros(n, int))
    return logits, ServingLog("production/v1", tables, np.arange(n), np.zeros(n, int), np.zeros(n, int),
                              np.tile(np.arange(m), (n, 1)), order, plackett_luce_probability(logits, order),
                              bought, bought)


def test_offpolicy_check_passes_production_against_itself_and_blocks_a_ranker_of_what_never_sells_pure_function(
        tmp_path):
    from ope.check import offpolicy_check
    from serving.log import ServingLog

    logits, log = _serving_log(np.random.default_rng(3))
    saved = ServingLog.load(log.save(tmp_path / "serving_log.npz"))  # as the gate reads it
    assert saved.tables.surfaces == ["home_feed"] and np.isnan(saved.tables.item_rating).all()
    assert (saved.order == log.order).all() and saved.policy == log.policy
    log = saved
    from serving.propensities import plackett_luce_probability as pl

    same = offpolicy_check(log, lambda order: pl(logits, order), slots=3, drop=0.10)
    assert same.candidate.value == pytest.approx(same.production.value) and same.passed
    worse = logits.copy()
    worse[:, :2] -= 1.5  # the columns that sell pushed down
    check = offpolicy_check(log, lambda order: pl(worse, order), slots=3, drop=0.10)
    assert not check.passed and check.candidate.interval[1] < check.production.value
    assert "below" in check.reason and "production/v1" in check.reason
    better = logits.copy()
    better[:, :2] += 1.0
    assert offpolicy_check(log, lambda order: pl(better, order), slots=3, drop=0.10).candidate.value > \
        same.production.value
    assert same.judged and check.judged and check.candidate.effective_sample_size > 1000
    far = logits.copy()
    far[:, 4:] += 8.0  # two columns production seldom put on top, now always there: a few rows carry the weight
    unjudged = offpolicy_check(log, lambda order: pl(far, order), slots=3, drop=0.10, min_ess=1000)
    assert not unjudged.judged and not unjudged.passed and "inconclusive, effective sample size" in unjudged.reason


def test_epsilon_greedy_probability_by_hand_pure_function():
    from serving.propensities import epsilon_greedy_probability

    scores = np.array([[0.9, 0.5, 0.1, 0.3]])
    # best first (0.75 + 0.25/4), then a column that is not the best of the three left (0.25/3), then the best of
    # the two left (0.75 + 0.25/2)
    order = np.array([[0, 2, 1]])
    assert epsilon_greedy_probability(scores, order, 0.25) == pytest.approx(np.array([[0.8125, 0.25 / 3, 0.875]]))
