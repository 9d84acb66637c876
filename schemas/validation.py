"""Value checks on decoded events: what Avro's types cannot say about a well-formed event."""
from __future__ import annotations

_ID_FIELDS = ("event_id", "impression_id", "request_id", "order_id", "user_id", "item_id")

# An event whose time is further ahead than this of the moment it was produced comes from a broken clock.
DEFAULT_MAX_FUTURE_SKEW_MS = 60 * 60 * 1000


def find_problem(datum: dict, reference_time_ms: int, max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS) -> str | None:
    """Returns why `datum` is not a valid event, or None when it is.

    `reference_time_ms` is when the event was produced (the Kafka record timestamp) or, failing that, now.
    """
    for field in _ID_FIELDS:
        if field in datum and not datum[field]:
            return f"{field} is empty"
    event_time = datum.get("event_time_ms")
    if event_time is not None:
        if event_time <= 0:
            return f"event_time_ms {event_time} is not after the epoch"
        if event_time > reference_time_ms + max_future_skew_ms:
            ahead_s = (event_time - reference_time_ms) / 1000
            return f"event_time_ms {event_time} is {ahead_s:.0f}s ahead of the time it was produced"
    if datum.get("dwell_ms", 0) is not None and datum.get("dwell_ms", 0) < 0:
        return f"dwell_ms {datum['dwell_ms']} is negative"
    if datum.get("position", 0) < 0:
        return f"position {datum['position']} is negative"
    if "propensity" in datum and not 0.0 < datum["propensity"] <= 1.0:
        return f"propensity {datum['propensity']} is outside (0, 1]"
    if datum.get("quantity", 1) < 1:
        return f"quantity {datum['quantity']} is below 1"
    if datum.get("value", 0.0) < 0.0:
        return f"value {datum['value']} is negative"
    return None
