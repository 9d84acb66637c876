"""The serving policies: what a model scores is what the events carry, the logged propensities are the
probabilities the policy sampled with, and a split keeps each user in one arm."""
import numpy as np
import pytest

from simulator import Simulation, SimulatorConfig
from simulator.served import ServedLog
from serving.policies import LoggingPolicy, SplitPolicy, arm_of, candidate_features, epsilon_greedy, retrieve

CONFIG = SimulatorConfig.model_validate({"seed": 4, "requests": 600, "days": 0.25,
                                         "catalogue": {"users": 500, "items": 120}})


def test_a_models_candidate_features_are_the_features_the_impressions_carry():
    simulation = Simulation(CONFIG)
    impressions = [e.datum for e in simulation.events() if e.name == "Impression"][:300]
    world = simulation.world
    users = np.array([int(d["user_id"][1:]) for d in impressions])
    items = np.array([int(d["item_id"][1:]) for d in impressions])
    surfaces = list(CONFIG.surfaces)
    columns = candidate_features(world, users, items[:, None], surfaces,
                                 np.array([surfaces.index(d["surface"]) for d in impressions]), list(CONFIG.devices),
                                 np.array([d["event_time_ms"] for d in impressions]))
    for k, datum in enumerate(impressions):
        logged = {**datum["features"], "user_id": datum["user_id"], "item_id": datum["item_id"],
                  "surface": datum["surface"]}
        for name, value in logged.items():
            served = columns[name][k]
            if value is None:
                assert np.isnan(served), name
            elif isinstance(value, float):
                assert np.float32(served) == np.float32(value), name
            else:
                assert served == value, name


def test_epsilon_greedy_propensities_are_its_choice_frequencies_pure_function():
    rng = np.random.default_rng(0)
    scores = np.tile(np.array([[0.9, 0.5, 0.1, 0.3]]), (20_000, 1))
    order, propensity = epsilon_greedy(scores, 2, 0.2, rng)
    first = np.bincount(order[:, 0], minlength=4) / 20_000
    assert first == pytest.approx([0.8 + 0.05, 0.05, 0.05, 0.05], abs=0.01)
    assert propensity[order[:, 0] == 0, 0] == pytest.approx(0.85)
    assert propensity[order[:, 0] == 2, 0] == pytest.approx(0.05)
    # second slot after the best: three left, the best of them (column 1) has 0.8 + 0.2 / 3
    after_best = order[:, 0] == 0
    assert propensity[after_best & (order[:, 1] == 1), 1] == pytest.approx(0.8 + 0.2 / 3)
    assert (order[:, 0] != order[:, 1]).all()


def test_a_split_keeps_each_user_in_one_arm_and_logs_the_arms_policy():
    policy, surfaces = CONFIG.logging_policy, list(CONFIG.surfaces)
    split = SplitPolicy([LoggingPolicy(policy, surfaces),
                         LoggingPolicy(policy.model_copy(update={"name": "treatment"}), surfaces)], seed=3)
    served = ServedLog()
    events = [e.datum for e in Simulation(CONFIG, policy=split, served=served).events() if e.name == "Impression"]
    arm_by_user = {}
    for datum in events:
        arm_by_user.setdefault(datum["user_id"], set()).add(datum["policy"])
    assert all(len(arms) == 1 for arms in arm_by_user.values())
    users = np.array([int(u[1:]) for u in arm_by_user])
    expected = arm_of(users, [0.5, 0.5], 3)
    names = np.array(split.names)[expected]
    assert [next(iter(arm_by_user[f"u{u:07d}"])) for u in users] == names.tolist()
    assert 0.4 < (expected == 1).mean() < 0.6
    with pytest.raises(ValueError, match="distinct names"):
        SplitPolicy([LoggingPolicy(policy, surfaces), LoggingPolicy(policy, surfaces)])


def test_the_served_log_knows_the_oracle_is_never_worse_than_what_was_served():
    served = ServedLog()
    simulation = Simulation(CONFIG, served=served)
    for _ in simulation.events():
        pass
    a = served.arrays()
    assert (a["oracle"] >= a["utility"] - 1e-12).all()
    metrics = served.metrics(simulation.world)
    assert metrics["impressions"] == 600 * 10 and 0 < metrics["bait_share"] < 1 and metrics["regret"] > 0
    candidates = retrieve(simulation.world, np.zeros(3, np.int64), 50, np.random.default_rng(0))
    assert all(len(set(row)) == 50 for row in candidates.tolist())
