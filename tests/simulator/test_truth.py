"""The world's truth of a ranker: expected purchases and bait share of its top slots, and health against
production's."""
import numpy as np
import pytest

from config.simulator import SimulatorConfig
from serving.log import FeatureTables, ServingLog
from serving.propensities import Sampling
from simulator.truth import Health, ServedTruth, health, ranker_marginals, served_truth
from simulator.world import World

CONFIG = SimulatorConfig(seed=3)


@pytest.fixture(scope="module")
def world_and_log():
    world = World.create(CONFIG)
    rng = np.random.default_rng(0)
    n, m = 3000, 20
    users = rng.integers(0, len(world.user_device), n)
    candidates = np.stack([rng.choice(len(world.item_category), m, replace=False) for _ in range(n)])
    zeros = np.zeros(n, np.int64)
    tables = FeatureTables.of(world, list(CONFIG.surfaces), list(CONFIG.devices))
    log = ServingLog("logging", tables, users, zeros, zeros, candidates, np.tile(np.arange(3), (n, 1)),
                     np.ones((n, 3)), np.zeros((n, 3), bool), np.zeros((n, 3), bool))
    return world, log


def truth_of(world, log, scores):
    return served_truth(world, log, ranker_marginals(scores, 3, Sampling("epsilon-greedy", epsilon=0.0)))


def test_a_greedy_ranker_by_bait_shows_bait_and_one_by_worth_sells_more_pure_function(world_and_log):
    world, log = world_and_log
    bait = truth_of(world, log, world.item_bait[log.candidates])
    worth = truth_of(world, log, world.expected_outcomes(log.users[:, None], log.candidates,
                                                          np.zeros(log.candidates.shape, np.int64))["purchase"])
    assert bait.bait_share > 0.8 and worth.bait_share < 0.2
    assert worth.purchases_per_1000 > 2 * bait.purchases_per_1000
    assert health(bait, worth) is Health.HARMFUL and health(worth, bait) is Health.HEALTHY
    assert health(worth, worth) is Health.HEALTHY


def test_the_truth_of_one_slot_is_the_worlds_expectation_at_the_first_position_pure_function(world_and_log):
    world, log = world_and_log
    scores = world.item_quality[log.candidates]
    truth = served_truth(world, log, ranker_marginals(scores, 1, Sampling("epsilon-greedy", epsilon=0.0)))
    top = log.candidates[np.arange(len(log.candidates)), scores.argmax(axis=1)]
    expected = world.expected_outcomes(log.users, top, np.zeros(len(top), np.int64))["purchase"].mean() * 1000
    assert truth.purchases_per_1000 == pytest.approx(expected)
    assert truth.bait_share == pytest.approx(world.item_is_bait[top].mean())


def test_health_bounds_pure_function():
    production = ServedTruth(50.0, 0.10, 3, 1000)
    assert health(ServedTruth(49.5, 0.11, 3, 1000), production) is Health.HEALTHY
    assert health(ServedTruth(47.0, 0.10, 3, 1000), production) is Health.NEITHER
    assert health(ServedTruth(44.9, 0.10, 3, 1000), production) is Health.HARMFUL
    assert health(ServedTruth(55.0, 0.15, 3, 1000), production) is Health.HARMFUL
