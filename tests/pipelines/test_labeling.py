import random
from collections import defaultdict

import pytest

from pipelines.labeling import label_user_events

from config.join import LabelConfig, LabelStrategy
from pipelines.reference_labeler import reference_labels
from simulator import Simulation, SimulatorConfig
from tests.pipelines.events import D, H, S, T0, cart, click, dwell, impression, purchase

CONFIG = LabelConfig(click_window_s=1800, cart_window_s=3600, purchase_window_s=7 * 86400)
SETTLED = T0 + 30 * D


def by_id(examples):
    return {e.impression_id: e for e in examples}


def test_clicks_and_dwell_join_by_impression_id():
    events = [impression("a", T0), click("a", T0 + 5 * S), dwell("a", T0 + 20 * S, 15_000),
              dwell("a", T0 + 90 * S, 4_000), impression("b", T0, item="i2", position=1)]
    a, b = by_id(label_user_events(events, CONFIG, SETTLED)).values()
    assert (a.clicked, a.click_time_ms, a.dwell_ms) == (True, T0 + 5 * S, 19_000)
    assert (b.clicked, b.click_time_ms, b.dwell_ms) == (False, None, None)


def test_a_click_after_the_click_window_does_not_count():
    events = [impression("a", T0), click("a", T0 + 1800 * S + 1)]
    assert not label_user_events(events, CONFIG, SETTLED)[0].clicked


@pytest.mark.parametrize("after_click_ms,attributed", [(3600 * S, True), (3600 * S + 1, False), (0, True)])
def test_cart_at_and_just_after_the_window_edge(after_click_ms, attributed):
    events = [impression("a", T0), click("a", T0 + 10 * S), cart("k", T0 + 10 * S + after_click_ms)]
    assert label_user_events(events, CONFIG, SETTLED)[0].added_to_cart is attributed


def test_purchase_with_two_candidate_clicks_goes_to_the_last():
    events = [impression("a", T0), click("a", T0 + 10 * S), impression("b", T0 + 2 * H),
              click("b", T0 + 2 * H + 10 * S), purchase("p", T0 + 3 * D, value=25.0)]
    labels = by_id(label_user_events(events, CONFIG, SETTLED))
    assert not labels["a"].purchased
    assert labels["b"].purchased and labels["b"].purchase_value == 25.0


def test_a_conversion_whose_click_lies_in_another_hour():
    events = [impression("a", T0 + 50 * 60 * S), click("a", T0 + 59 * 60 * S), cart("k", T0 + 61 * 60 * S),
              purchase("p", T0 + 5 * H)]
    (a,) = label_user_events(events, CONFIG, SETTLED)
    assert a.added_to_cart and a.purchased


def test_conversions_without_a_click_on_that_item_stay_unattributed():
    events = [impression("a", T0), click("a", T0 + 10 * S), purchase("early", T0 + 5 * S),
              purchase("other-item", T0 + H, item="i9")]
    (a,) = label_user_events(events, CONFIG, SETTLED)
    assert not a.purchased and a.purchase_value == 0.0


def test_duplicates_count_once_and_arrival_order_does_not_matter():
    events = [impression("a", T0), click("a", T0 + 10 * S), dwell("a", T0 + 40 * S, 30_000),
              purchase("p", T0 + D, value=12.5)]
    doubled = events + events[1:]
    random.Random(4).shuffle(doubled)
    assert label_user_events(doubled, CONFIG, SETTLED) == label_user_events(events, CONFIG, SETTLED)
    (a,) = label_user_events(doubled, CONFIG, SETTLED)
    assert (a.dwell_ms, a.purchase_value) == (30_000, 12.5)


def test_an_impression_waits_until_the_watermark_passes_its_longest_window():
    events = [impression("a", T0), click("a", T0 + 10 * S)]
    horizon = T0 + (1800 + 7 * 86400) * S
    assert label_user_events(events, CONFIG, horizon - 1) == []
    (a,) = label_user_events(events, CONFIG, horizon)
    assert a.label_time_ms == horizon and a.label_strategy == "wait_for_window" and not a.is_correction


def test_fake_negative_emits_at_the_click_then_corrects():
    config = CONFIG.model_copy(update={"strategy": LabelStrategy.FAKE_NEGATIVE})
    events = [impression("a", T0), click("a", T0 + 10 * S), cart("k", T0 + 20 * S), purchase("p", T0 + 2 * D, value=9.0),
              impression("b", T0, item="i2")]
    emitted = label_user_events(events, config, SETTLED)
    summary = [(e.impression_id, e.label_time_ms - T0, e.clicked, e.added_to_cart, e.purchased, e.is_correction)
               for e in emitted]
    assert summary == [
        ("a", 10 * S, True, False, False, False),
        ("a", 20 * S, True, True, False, True),
        ("b", 1800 * S, False, False, False, False),
        ("a", 2 * D, True, False, True, True),
    ]
    assert emitted[-1].purchase_value == 9.0 and all(e.label_strategy == "fake_negative" for e in emitted)


def test_examples_carry_the_event_times_of_the_conversions_they_report():
    events = [impression("a", T0), click("a", T0 + 10 * S), cart("k", T0 + 20 * S), cart("k2", T0 + 40 * S),
              purchase("p", T0 + 2 * D), impression("b", T0, item="i2")]
    final = by_id(label_user_events(events, CONFIG, SETTLED))
    assert (final["a"].cart_time_ms, final["a"].purchase_time_ms) == (T0 + 20 * S, T0 + 2 * D)  # the first cart
    assert (final["b"].cart_time_ms, final["b"].purchase_time_ms) == (None, None)
    config = CONFIG.model_copy(update={"strategy": LabelStrategy.FAKE_NEGATIVE})
    negative, cart_fix, purchase_fix = [e for e in label_user_events(events, config, SETTLED) if e.impression_id == "a"]
    assert (negative.cart_time_ms, negative.purchase_time_ms) == (None, None)  # it reports no conversion yet
    assert (cart_fix.cart_time_ms, cart_fix.purchase_time_ms) == (T0 + 20 * S, None)
    assert (purchase_fix.cart_time_ms, purchase_fix.purchase_time_ms) == (None, T0 + 2 * D)


def test_fake_negative_released_step_by_step_equals_released_at_once():
    config = CONFIG.model_copy(update={"strategy": LabelStrategy.FAKE_NEGATIVE})
    events = [impression("a", T0), click("a", T0 + 10 * S), cart("k", T0 + 20 * S), purchase("p", T0 + 2 * D)]
    steps, since = [], None
    for watermark in (T0 + 15 * S, T0 + H, T0 + 3 * D):
        steps += label_user_events(events, config, watermark, since_ms=since)
        since = watermark
    assert steps == label_user_events(events, config, T0 + 3 * D)
    assert len(steps) == 3


def test_labels_match_the_reference_labeler_on_simulated_traffic():
    sim = SimulatorConfig.model_validate({"seed": 21, "requests": 3000, "days": 10.0,
                                          "catalogue": {"users": 150, "items": 40}})
    events = [(e.name, e.datum) for e in Simulation(sim).events()]
    watermark = sim.end_ms
    per_user = defaultdict(list)
    for name, datum in events:
        per_user[datum["user_id"]].append((name, datum))
    ours = {e.impression_id: e for user_events in per_user.values()
            for e in label_user_events(user_events, CONFIG, watermark)}
    expected = reference_labels(events, CONFIG.click_window_ms, CONFIG.cart_window_ms, CONFIG.purchase_window_ms, watermark)
    assert len(expected) > 5_000
    assert set(ours) == set(expected)
    for impression_id, labels in expected.items():
        example = ours[impression_id]
        assert {k: getattr(example, k) for k in labels} == labels, impression_id
    assert sum(l["purchased"] for l in expected.values()) > 20
