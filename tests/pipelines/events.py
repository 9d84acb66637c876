"""Hand-written events for pipeline tests: one user, a few items, times in seconds from T0."""
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
S = 1000
H = 3600 * S
D = 24 * H

FEATURES = {"item_category": "c01", "item_price": 10.0, "item_age_hours": 1.0, "item_rating": None,
            "headline_score": 0.5, "user_category_affinity": 0.25, "user_tenure_days": 3, "device": "app"}


def impression(event_id: str, at_ms: int, item: str = "i1", user: str = "u1", position: int = 0):
    return ("Impression", {"event_id": event_id, "request_id": f"r-{event_id}", "user_id": user, "item_id": item,
                           "position": position, "surface": "home_feed", "event_time_ms": at_ms, "policy": "p",
                           "propensity": 0.5, "features": dict(FEATURES)})


def click(impression_id: str, at_ms: int, item: str = "i1", user: str = "u1"):
    return ("Click", {"event_id": f"c-{impression_id}-{at_ms}", "impression_id": impression_id, "user_id": user,
                      "item_id": item, "event_time_ms": at_ms})


def dwell(impression_id: str, at_ms: int, dwell_ms: int, item: str = "i1", user: str = "u1"):
    return ("Dwell", {"event_id": f"d-{impression_id}-{at_ms}", "impression_id": impression_id, "user_id": user,
                      "item_id": item, "event_time_ms": at_ms, "dwell_ms": dwell_ms})


def cart(event_id: str, at_ms: int, item: str = "i1", user: str = "u1", value: float = 10.0):
    return ("AddToCart", {"event_id": event_id, "user_id": user, "item_id": item, "event_time_ms": at_ms,
                          "quantity": 1, "value": value})


def purchase(event_id: str, at_ms: int, item: str = "i1", user: str = "u1", value: float = 10.0):
    return ("Purchase", {"event_id": event_id, "order_id": f"o-{event_id}", "user_id": user, "item_id": item,
                         "event_time_ms": at_ms, "quantity": 1, "value": value})
