"""The simulated world behaves as its config says, measured on the events it delivers."""
import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from simulator import Simulation, SimulatorConfig, World

CONFIG = SimulatorConfig.model_validate({
    "seed": 11, "requests": 16_000, "days": 40.0, "chunk_s": 6 * 3600,
    "catalogue": {"users": 3_000, "items": 400},
    "delivery": {"disorder_rate": 0.08, "disorder_max_s": 600, "duplicate_rate": 0.02},
})
PURCHASE_WINDOW_S = 7 * 86_400


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    simulation = Simulation(CONFIG)
    events = list(simulation.events())
    truth = World.load(simulation.world.save(tmp_path_factory.mktemp("truth") / "ground_truth.npz"))
    return simulation, events, truth


def unique(events, name):
    seen = {}
    for e in events:
        if e.name == name:
            seen.setdefault(e.datum["event_id"], e.datum)
    return seen


def item_index(item_id: str) -> int:
    return int(item_id[1:])


def test_ground_truth_round_trips_and_stays_out_of_the_events(run):
    simulation, events, truth = run
    assert np.array_equal(truth.item_bait, simulation.world.item_bait)
    assert truth.config == CONFIG
    impression = next(e.datum for e in events if e.name == "Impression")
    assert not {"bait", "quality", "is_bait"} & (set(impression) | set(impression["features"]))


def test_bait_items_get_more_clicks_but_fewer_carts_purchases_and_shorter_dwell(run):
    _, events, truth = run
    per_kind = defaultdict(Counter)
    dwell = defaultdict(list)
    for name in ("Impression", "Click", "AddToCart"):
        for datum in unique(events, name).values():
            per_kind[bool(truth.item_is_bait[item_index(datum["item_id"])])][name] += 1
    for datum in unique(events, "Purchase").values():
        if "organic" not in datum["event_id"]:
            per_kind[bool(truth.item_is_bait[item_index(datum["item_id"])])]["Purchase"] += 1
    for datum in unique(events, "Dwell").values():
        dwell[bool(truth.item_is_bait[item_index(datum["item_id"])])].append(datum["dwell_ms"])
    bait, honest = per_kind[True], per_kind[False]
    assert bait["Click"] / bait["Impression"] > 1.5 * honest["Click"] / honest["Impression"]
    assert bait["AddToCart"] / bait["Click"] < 0.3 * honest["AddToCart"] / honest["Click"]
    assert bait["Purchase"] / bait["Click"] < 0.3 * honest["Purchase"] / honest["Click"]
    assert np.median(dwell[True]) < 0.5 * np.median(dwell[False])


def test_position_bias_lowers_clicks_down_the_slate(run):
    _, events, _ = run
    impressions = unique(events, "Impression")
    clicks_at = Counter(impressions[c["impression_id"]]["position"] for c in unique(events, "Click").values())
    shown_at = Counter(d["position"] for d in impressions.values())
    ctr = [clicks_at[p] / shown_at[p] for p in range(CONFIG.logging_policy.slate_size)]
    assert ctr[0] > 2 * ctr[-1]


def _log_delays(later: dict, earlier: dict, later_prefix: str, earlier_prefix: str, before_ms: int) -> np.ndarray:
    delays = []
    for event_id, datum in later.items():
        cause = earlier.get(event_id.replace(later_prefix, earlier_prefix, 1))
        if cause is not None and cause["event_time_ms"] < before_ms:
            delays.append((datum["event_time_ms"] - cause["event_time_ms"]) / 1000)
    return np.log(np.maximum(delays, 1e-3))


@pytest.mark.parametrize("later,earlier,delay", [
    (("AddToCart", "atc-"), ("Click", "clk-"), CONFIG.delays.cart_after_click),
    (("Purchase", "pur-"), ("AddToCart", "atc-"), CONFIG.delays.purchase_after_cart),
])
def test_conversion_delays_follow_the_configured_heavy_tail(run, later, earlier, delay):
    _, events, _ = run
    # Causes from the first quarter only, so that long delays are not cut off by the simulated horizon.
    cutoff = CONFIG.start_ms + int(CONFIG.days * 86_400_000 / 4)
    logs = _log_delays(unique(events, later[0]), unique(events, earlier[0]), later[1], earlier[1], cutoff)
    assert len(logs) > 150
    stderr = delay.sigma / math.sqrt(len(logs))
    assert abs(np.median(logs) - math.log(delay.median_s)) < 4 * 1.25 * stderr
    assert abs(np.std(logs) / delay.sigma - 1) < 0.15


def test_some_purchases_land_beyond_a_seven_day_window(run):
    simulation, _, _ = run
    d = CONFIG.delays
    delays = np.array(simulation.summary.purchase_delays_s)
    z = (math.log(PURCHASE_WINDOW_S) - math.log(d.purchase_after_cart.median_s)) / d.purchase_after_cart.sigma
    expected = 0.5 * math.erfc(z / math.sqrt(2))
    assert expected > 0.02
    assert abs((delays > PURCHASE_WINDOW_S).mean() - expected) < 0.02


def test_late_deliveries_and_duplicates_at_the_configured_rates(run):
    _, events, _ = run
    first_copy = {}
    late = duplicates = 0
    for e in events:
        key = (e.name, e.datum["event_id"])
        if key in first_copy:
            duplicates += 1
            continue
        first_copy[key] = e
        late += e.delivery_ms > e.datum["event_time_ms"]
    originals = len(first_copy)
    assert abs(late / originals - CONFIG.delivery.disorder_rate) < 0.006
    assert abs(duplicates / originals - CONFIG.delivery.duplicate_rate) < 0.003
    out_of_order = sum(1 for a, b in zip(events, events[1:]) if b.datum["event_time_ms"] < a.datum["event_time_ms"])
    assert out_of_order > 0.01 * len(events)


def test_delivery_order_and_per_user_event_time_at_delivery(run):
    _, events, _ = run
    assert all(a.delivery_ms <= b.delivery_ms for a, b in zip(events, events[1:]))
    assert all(e.delivery_ms >= e.datum["event_time_ms"] for e in events)
    assert all(e.key == e.datum["user_id"].encode() for e in events)
    assert all(e.delivery_ms < CONFIG.end_ms for e in events)


def test_logged_propensities_are_the_logging_policys_probabilities(run):
    """Inverse-propensity weights at slot k average to the number of candidates left for that slot."""
    _, events, _ = run
    inverse = defaultdict(list)
    for d in unique(events, "Impression").values():
        assert 0.0 < d["propensity"] <= 1.0
        inverse[d["position"]].append(1.0 / d["propensity"])
    for position in (0, 1, 5):
        left = CONFIG.logging_policy.candidates - position
        assert np.mean(inverse[position]) == pytest.approx(left, rel=0.15)


def test_the_same_seed_gives_the_same_events():
    small = CONFIG.model_copy(update={"requests": 300, "days": 1.0})
    first, second = list(Simulation(small).events()), list(Simulation(small).events())
    assert first == second
    other = list(Simulation(small.model_copy(update={"seed": 12})).events())
    assert first != other
