"""A deliberately plain labeler written straight from the definitions in `labeling`, sharing no code with it.

It exists to check the Beam job example by example (tests) and to give the join benchmark its peer. It reads
all events into memory at once; it is not a pipeline.
"""
from __future__ import annotations

from collections import defaultdict


def reference_labels(events, click_window_ms: int, cart_window_ms: int, purchase_window_ms: int,
                     watermark_ms: int) -> dict[str, dict]:
    """Final (wait-for-window) labels of every impression settled by `watermark_ms`, by impression id.

    `events` are (record name, Avro datum) pairs; repeats of an event id count once.
    """
    seen = set()
    by_kind = defaultdict(list)
    for name, datum in events:
        if (name, datum["event_id"]) not in seen:
            seen.add((name, datum["event_id"]))
            by_kind[name].append(datum)
    impressions = {d["event_id"]: d for d in by_kind["Impression"]}

    click_of = {}  # impression id -> earliest click time within the click window
    for click in by_kind["Click"]:
        shown = impressions.get(click["impression_id"])
        if shown is None or shown["user_id"] != click["user_id"]:
            continue
        if shown["event_time_ms"] <= click["event_time_ms"] <= shown["event_time_ms"] + click_window_ms:
            if click["impression_id"] not in click_of or click["event_time_ms"] < click_of[click["impression_id"]]:
                click_of[click["impression_id"]] = click["event_time_ms"]

    clicks_on = defaultdict(list)  # (user, item) -> [(click time, impression id)]
    for imp, t in click_of.items():
        clicks_on[(impressions[imp]["user_id"], impressions[imp]["item_id"])].append((t, imp))

    def owner(conversion, window_ms):
        candidates = [(t, imp) for t, imp in clicks_on[(conversion["user_id"], conversion["item_id"])]
                      if t <= conversion["event_time_ms"]]
        if not candidates:
            return None
        t, imp = max(candidates)
        return imp if conversion["event_time_ms"] - t <= window_ms else None

    carted, bought = set(), defaultdict(float)
    for cart in by_kind["AddToCart"]:
        imp = owner(cart, cart_window_ms)
        if imp is not None:
            carted.add(imp)
    for purchase in by_kind["Purchase"]:
        imp = owner(purchase, purchase_window_ms)
        if imp is not None:
            bought[imp] += purchase["value"]

    dwell = defaultdict(int)
    for d in by_kind["Dwell"]:
        if d["impression_id"] in click_of:
            dwell[d["impression_id"]] += d["dwell_ms"]

    horizon_ms = click_window_ms + max(cart_window_ms, purchase_window_ms)
    return {
        imp: {"clicked": imp in click_of, "click_time_ms": click_of.get(imp),
              "dwell_ms": dwell[imp] if imp in dwell else None, "added_to_cart": imp in carted,
              "purchased": imp in bought, "purchase_value": bought.get(imp, 0.0)}
        for imp, shown in impressions.items() if shown["event_time_ms"] + horizon_ms <= watermark_ms
    }
