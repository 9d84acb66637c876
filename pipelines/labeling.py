"""The labeling rules, as one pure function that every path (bounded, streaming, the reference check) calls.

Definitions, all in event time:
- an impression's click is a Click carrying its impression id within `click_window` of the impression; its
  dwell is the sum of the Dwell events for it;
- an AddToCart or Purchase is attributed to the last counted click on the same (user, item) at or before it,
  if the conversion lies within that label's window of the click (cart 1 hour, purchase 7 days by default);
  otherwise to nothing;
- a click is a long dwell when its dwell reaches a threshold (`trainer.model.long_dwell_s`), and a bounce when
  it does not (`long_dwell`, `bounced`, `bounce_probability`); the model, its evaluation and the audit all take
  these labels from here;
- an impression is settled when the watermark passes its horizon: impression time + click window + the
  longest conversion window. Then `wait_for_window` emits it once, with final labels;
- `fake_negative` (Ktena et al., RecSys 2019) emits every impression as soon as its click is known (at the
  click, or when the click window closes without one) with conversions negative, then one positive
  correction per conversion label when its first attributed conversion arrives.
Events repeated under the same id count once.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple

from config.join import LabelConfig, LabelStrategy


def long_dwell(clicked, dwell_ms, long_dwell_ms: int):
    """The long-dwell label: a click whose dwell reaches `long_dwell_ms`, the engagement the long-dwell task
    learns. Booleans in and out, on numpy arrays and TensorFlow tensors alike: training, evaluation and the audit
    all take it from here."""
    return clicked & (dwell_ms >= long_dwell_ms)


def bounced(clicked, dwell_ms, long_dwell_ms: int):
    """The bounce label: a click without a long dwell. Booleans in and out, as `long_dwell`."""
    return clicked & (dwell_ms < long_dwell_ms)


def bounce_probability(p_click, p_long_dwell):
    """The chance of a bounce (`bounced`) from those of a click and of a long dwell, over the impression: the
    ranking score's bounce term, for the model's predictions and the world's truth alike."""
    return p_click - p_long_dwell


class Example(NamedTuple):
    """One labeled impression as the LabeledExample schema defines it (fields in schema order)."""

    impression_id: str
    request_id: str
    user_id: str
    item_id: str
    position: int
    surface: str
    event_time_ms: int
    policy: str
    propensity: float
    features: dict
    clicked: bool
    click_time_ms: int | None
    dwell_ms: int | None
    added_to_cart: bool
    purchased: bool
    purchase_value: float
    label_strategy: str
    is_correction: bool
    label_time_ms: int
    cart_time_ms: int | None = None  # LabeledExample v2: when the conversions it reports happened
    purchase_time_ms: int | None = None


class _Rules(NamedTuple):
    """What the emission rules read of a LabelConfig."""

    horizon_ms: int
    click_window_ms: int
    wait_for_window: bool
    strategy: str  # LabelStrategy value, as written into each example


class _Labels(NamedTuple):
    click_ms: int | None
    dwell_ms: int | None
    cart_ms: int | None  # event time of the first attributed add-to-cart
    purchase_ms: int | None
    purchase_value: float


def label_user_events(events: Iterable[tuple[str, dict]], config: LabelConfig, watermark_ms: int,
                      since_ms: int | None = None, impressions_from_ms: int | None = None) -> list[Example]:
    """Labels one user's events: (record name, Avro datum) pairs in any order, duplicates allowed.

    Returns the examples whose label time lies in (since_ms, watermark_ms]: those the watermark has released
    and an earlier call (up to `since_ms`) has not; with `impressions_from_ms`, only those of impressions at or
    after it (their clicks and conversions still see every event given). Sorted by label time, impression id,
    then label. Only the examples returned are built, so a stream that asks for what one firing releases does
    that much labeling, however long the history it holds.
    """
    impressions: dict[str, dict] = {}
    clicks: dict[str, dict] = {}
    dwells: dict[str, dict] = {}
    conversions: dict[str, dict[str, dict]] = {"AddToCart": {}, "Purchase": {}}
    for name, datum in events:
        if name == "Impression":
            impressions.setdefault(datum["event_id"], datum)
        elif name == "Click":
            clicks.setdefault(datum["event_id"], datum)
        elif name == "Dwell":
            dwells.setdefault(datum["event_id"], datum)
        elif name in conversions:
            conversions[name].setdefault(datum["event_id"], datum)

    click_window_ms = config.click_window_ms
    first_click: dict[str, int] = {}
    for click in clicks.values():
        impression = impressions.get(click["impression_id"])
        if impression is None:
            continue
        delay = click["event_time_ms"] - impression["event_time_ms"]
        if 0 <= delay <= click_window_ms:
            previous = first_click.get(click["impression_id"])
            if previous is None or click["event_time_ms"] < previous:
                first_click[click["impression_id"]] = click["event_time_ms"]
    dwell_ms: dict[str, int] = {}
    for dwell in dwells.values():
        if dwell["impression_id"] in first_click:
            dwell_ms[dwell["impression_id"]] = dwell_ms.get(dwell["impression_id"], 0) + dwell["dwell_ms"]

    # Counted clicks per (user, item), in time order, for attribution: (click time, impression id).
    clicks_on_item: dict[str, list[tuple[int, str]]] = {}
    for impression_id, click_ms in first_click.items():
        clicks_on_item.setdefault(impressions[impression_id]["item_id"], []).append((click_ms, impression_id))
    for timeline in clicks_on_item.values():
        timeline.sort()

    attributed = {name: {} for name in conversions}  # name -> impression id -> (first time, value sum)
    windows_ms = {"AddToCart": config.cart_window_ms, "Purchase": config.purchase_window_ms}
    for name, by_id in conversions.items():
        for conversion in by_id.values():
            owner = _last_click_within(clicks_on_item.get(conversion["item_id"], ()), conversion["event_time_ms"],
                                       windows_ms[name])
            if owner is None:
                continue
            first, value = attributed[name].get(owner, (conversion["event_time_ms"], 0.0))
            attributed[name][owner] = (min(first, conversion["event_time_ms"]), value + conversion["value"])

    # The config's fields once per call, not per impression: pydantic attribute reads are not free.
    rules = _Rules(config.horizon_ms, click_window_ms, config.strategy is LabelStrategy.WAIT_FOR_WINDOW,
                   config.strategy.value)
    after_ms = since_ms if since_ms is not None else -(2**62)
    first_ms = impressions_from_ms if impressions_from_ms is not None else -(2**62)
    examples: list[Example] = []
    for impression_id, impression in impressions.items():
        if impression["event_time_ms"] < first_ms:
            continue
        if rules.wait_for_window and not after_ms < impression["event_time_ms"] + rules.horizon_ms <= watermark_ms:
            continue  # not settled, or released before: nothing to emit
        cart = attributed["AddToCart"].get(impression_id)
        purchase = attributed["Purchase"].get(impression_id)
        labels = _Labels(first_click.get(impression_id), dwell_ms.get(impression_id), cart and cart[0],
                         purchase and purchase[0], purchase[1] if purchase else 0.0)
        examples.extend(_emit(impression, labels, rules, after_ms, watermark_ms))
    examples.sort(key=lambda e: (e.label_time_ms, e.impression_id, e.is_correction, e.added_to_cart))
    return examples


def _last_click_within(timeline, at_ms: int, window_ms: int) -> str | None:
    """The impression of the last click at or before `at_ms`, if that click is at most `window_ms` earlier."""
    owner = None
    for click_ms, impression_id in timeline:
        if click_ms > at_ms:
            break
        owner = (click_ms, impression_id)
    if owner is None or at_ms - owner[0] > window_ms:
        return None
    return owner[1]


def _example(impression: dict, labels: _Labels, rules: _Rules, *, added_to_cart: bool, purchased: bool,
             purchase_value: float, is_correction: bool, label_time_ms: int) -> Example:
    """The example of `impression` that reports `added_to_cart` and `purchased`, with the times of what it reports."""
    return Example(
        impression["event_id"], impression["request_id"], impression["user_id"], impression["item_id"],
        impression["position"], impression["surface"], impression["event_time_ms"], impression["policy"],
        impression["propensity"], impression["features"], labels.click_ms is not None, labels.click_ms,
        labels.dwell_ms, added_to_cart, purchased, purchase_value, rules.strategy, is_correction, label_time_ms,
        labels.cart_ms if added_to_cart else None, labels.purchase_ms if purchased else None,
    )


def _emit(impression: dict, labels: _Labels, rules: _Rules, after_ms: int, watermark_ms: int) -> list[Example]:
    """The impression's examples whose label time lies in (after_ms, watermark_ms]."""
    if rules.wait_for_window:  # the caller emits only impressions settled in that interval under this strategy
        return [_example(impression, labels, rules, added_to_cart=labels.cart_ms is not None,
                         purchased=labels.purchase_ms is not None, purchase_value=labels.purchase_value,
                         is_correction=False, label_time_ms=impression["event_time_ms"] + rules.horizon_ms)]
    # Fake negative: first as a negative once the click question is settled, then a correction per label.
    known_ms = labels.click_ms if labels.click_ms is not None else impression["event_time_ms"] + rules.click_window_ms
    out = []
    if after_ms < known_ms <= watermark_ms:
        out.append(_example(impression, labels, rules, added_to_cart=False, purchased=False, purchase_value=0.0,
                            is_correction=False, label_time_ms=known_ms))
    if labels.cart_ms is not None and after_ms < labels.cart_ms <= watermark_ms:
        out.append(_example(impression, labels, rules, added_to_cart=True, purchased=False, purchase_value=0.0,
                            is_correction=True, label_time_ms=labels.cart_ms))
    if labels.purchase_ms is not None and after_ms < labels.purchase_ms <= watermark_ms:
        out.append(_example(impression, labels, rules, added_to_cart=False, purchased=True,
                            purchase_value=labels.purchase_value, is_correction=True, label_time_ms=labels.purchase_ms))
    return out
