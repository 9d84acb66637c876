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


def test_logged_arrays_of_the_wrong_shape_or_ids_are_refused_with_what_is_wrong_pure_function():
    with pytest.raises(ValueError, match="3 slate ids for 4 logged rows"):
        ips(SLATES[:3], REWARDS, LOGGING, TARGET)
    with pytest.raises(ValueError, match="slate id is NaN"):
        ips(np.array([0.0, np.nan, 1.0, 1.0]), REWARDS, LOGGING, TARGET)
    with pytest.raises(ValueError, match=r"one value per row \(1-D\)"):
        ips(SLATES, REWARDS.reshape(2, 2), LOGGING.reshape(2, 2), TARGET.reshape(2, 2))
    with pytest.raises(ValueError, match=r"slate ids must be one per row"):
        direct(SLATES.reshape(2, 2), Q_TARGET)
    with pytest.raises(ValueError, match="draws must be at least 20"):
        ips(SLATES, REWARDS, LOGGING, TARGET, draws=0)
    with pytest.raises(ValueError, match="two rows at one position"):
        rips(SLATES, np.array([0, 0, 0, 1]), REWARDS, LOGGING, TARGET)


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
    from serving.propensities import plackett_luce_top_marginals as marginals

    logits, log = _serving_log(np.random.default_rng(3))
    saved = ServingLog.load(log.save(tmp_path / "serving_log.npz"))  # as the gate reads it
    assert saved.tables.surfaces == ["home_feed"] and np.isnan(saved.tables.item_rating).all()
    assert (saved.order == log.order).all() and saved.policy == log.policy
    log = saved
    production = marginals(logits, 3)

    same = offpolicy_check(log, production, production, production, None, drop=0.10)
    assert same.estimate.difference == 0 and same.estimate.interval == (0.0, 0.0) and same.passed and same.judged
    worse = logits.copy()
    worse[:, :2] -= 1.5  # the columns that sell pushed down
    check = offpolicy_check(log, marginals(worse, 3), production, production, None, drop=0.10)
    assert check.judged and not check.passed and check.estimate.relative_interval[1] < -0.10
    assert "below -10%" in check.reason and "production/v1" in check.reason
    clipped = offpolicy_check(log, marginals(worse, 3), production, production, None, drop=0.10, clip=20.0)
    assert "weights clipped at 20" in clipped.reason and "switch" not in clipped.reason and not clipped.passed
    better = logits.copy()
    better[:, :2] += 1.0
    assert offpolicy_check(log, marginals(better, 3), production, production, None, drop=0.10).estimate.relative > 0.10
    far = logits.copy()
    far[:, 4:] += 8.0  # two columns production seldom put on top, now always there: fewer rows carry the weight
    unjudged = offpolicy_check(log, marginals(far, 3), production, production, None, drop=0.10,
                               min_ess=1000)
    assert not unjudged.judged and not unjudged.passed and "inconclusive, effective sample size" in unjudged.reason


def test_a_candidate_close_to_the_margin_is_inconclusive_and_says_how_many_requests_would_decide_pure_function():
    from ope.check import offpolicy_check
    from serving.propensities import plackett_luce_top_marginals as marginals

    logits, log = _serving_log(np.random.default_rng(4), n=1500)
    production = marginals(logits, 3)
    slightly_worse = logits.copy()
    slightly_worse[:, :2] -= 0.3
    check = offpolicy_check(log, marginals(slightly_worse, 3), production, production, None, drop=0.10)
    low, high = check.estimate.relative_interval
    assert low < -0.10 < high, (low, high)
    assert not check.judged and not check.passed and "straddles -10%" in check.reason
    assert check.requests_to_decide > 1500 and f"{check.requests_to_decide:,} requests" in check.reason


def test_the_paired_difference_equals_its_value_worked_out_by_hand_pure_function():
    from ope.estimators import paired_difference

    rewards = np.array([[1.0, 0.0], [0.0, 1.0]])
    logging = np.array([[0.5, 0.5], [0.25, 0.5]])
    target = np.array([[0.25, 0.5], [0.5, 1.0]])  # weights 0.5, 1 / 2, 2: mean 1.25 and 1.5 per position
    q = np.array([[0.6, 0.1], [0.2, 0.5]])
    target_direct, baseline_direct = np.array([0.5, 0.4]), np.array([0.4, 0.6])
    plain = paired_difference(rewards, logging, target, None, q, target_direct, baseline_direct,
                              self_normalise=False, draws=40)
    # per slate, direct + sum of w (r - q): target 0.5 + 0.5 x 0.4 + 1 x -0.1 = 0.6, 0.4 + 2 x -0.2 + 2 x 0.5 = 1.0;
    # the logging policy itself (weights 1): 0.4 + 0.4 - 0.1 = 0.7, 0.6 - 0.2 + 0.5 = 0.9
    assert (plain.target, plain.baseline, plain.difference) == pytest.approx((0.8, 0.8, 0.0))
    normalised = paired_difference(rewards, logging, target, None, q, target_direct, baseline_direct, draws=40)
    target_value = (0.9 + (0.5 * 0.4 + 2 * -0.2) / 1.25 + (1 * -0.1 + 2 * 0.5) / 1.5) / 2
    assert normalised.target == pytest.approx(target_value) and normalised.baseline == pytest.approx(0.8)
    assert normalised.relative == pytest.approx(target_value / 0.8 - 1)
    # a baseline other than the logging policy is weighed as the target is
    swapped = paired_difference(rewards, logging, logging, target, q, baseline_direct, target_direct, draws=40)
    assert swapped.difference == pytest.approx(-normalised.difference)


def test_clipped_and_switched_weights_equal_their_values_worked_out_by_hand_pure_function():
    from ope.estimators import paired_difference

    rewards = np.array([[1.0, 0.0], [0.0, 1.0]])
    logging = np.array([[0.5, 0.5], [0.25, 0.5]])
    target = np.array([[0.25, 0.5], [0.5, 1.0]])  # weights 0.5, 1 / 2, 2
    q = np.array([[0.6, 0.1], [0.2, 0.5]])
    target_direct, baseline_direct = np.array([0.5, 0.4]), np.array([0.4, 0.6])
    args = (rewards, logging, target, None, q, target_direct, baseline_direct)
    # clipped at 1.5: the weights of 2 count as 1.5; per slate 0.5 + 0.5 x 0.4 - 0.1 = 0.6, 0.4 + 1.5 x (-0.2 + 0.5)
    clipped = paired_difference(*args, self_normalise=False, clip=1.5, draws=40)
    assert clipped.target == pytest.approx((0.6 + 0.85) / 2) and clipped.estimator.endswith("clipped at 1.5")
    # switched at 1.5: the weights of 2 add no correction; per slate 0.6 and 0.4
    switched = paired_difference(*args, self_normalise=False, switch=1.5, draws=40)
    assert switched.target == pytest.approx((0.6 + 0.4) / 2)
    # clipping above every weight changes nothing
    assert paired_difference(*args, self_normalise=False, clip=10, draws=40).target == pytest.approx(0.8)
    with pytest.raises(ValueError, match="clip must be above 0"):
        paired_difference(*args, clip=0, draws=40)


def test_the_paired_difference_refuses_what_it_cannot_weigh_pure_function():
    from ope.estimators import paired_difference

    ones = np.ones((3, 2)) * 0.5
    with pytest.raises(ValueError, match=r"must be \(slates, positions\)"):
        paired_difference(np.zeros(3), ones, ones)
    with pytest.raises(ValueError, match="target_marginal is of shape"):
        paired_difference(np.zeros((3, 2)), ones, ones[:2])
    with pytest.raises(ValueError, match="NaN"):
        paired_difference(np.array([[np.nan, 0], [0, 0], [0, 0]]), ones, ones)
    with pytest.raises(ValueError, match="logging marginal outside"):
        paired_difference(np.zeros((3, 2)), ones * 0, ones)
    with pytest.raises(ValueError, match="draws must be at least 20"):
        paired_difference(np.zeros((3, 2)), ones, ones, draws=0)
    with pytest.raises(ValueError, match="one finite value per slate"):
        paired_difference(np.zeros((3, 2)), ones, ones, None, np.zeros((3, 2)), np.zeros(2))


def test_epsilon_greedy_probability_by_hand_pure_function():
    from serving.propensities import epsilon_greedy_probability

    scores = np.array([[0.9, 0.5, 0.1, 0.3]])
    # best first (0.75 + 0.25/4), then a column that is not the best of the three left (0.25/3), then the best of
    # the two left (0.75 + 0.25/2)
    order = np.array([[0, 2, 1]])
    assert epsilon_greedy_probability(scores, order, 0.25) == pytest.approx(np.array([[0.8125, 0.25 / 3, 0.875]]))
