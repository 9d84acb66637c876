"""Value checks on decoded events: what Avro's types cannot say about a well-formed event.

The rules are data (`_ID_FIELDS`, `_VALUE_RULES`), read two ways: `find_problem` says what is wrong with a datum,
and `compile_check` makes a fast yes-or-no test for one record type's fields (run in C, `_native.Check`), which a
decoder runs on every event and follows with `find_problem` only when it says no. A served request's slate
(`candidates`, `shown`, `propensities`) is checked as a whole, in Python (`slate_problem`).
"""
from __future__ import annotations

from typing import Callable, Iterable

from schemas import _native
from schemas.units import HOUR_MS, seconds

_ID_FIELDS = ("event_id", "impression_id", "request_id", "order_id", "user_id", "item_id")

# Field, the bounds its value keeps when not null (low, whether low itself is allowed, high, whether high is
# allowed; None is no bound), what to say when it does not.
_VALUE_RULES = (
    ("dwell_ms", 0, True, None, True, "is negative"),
    ("position", 0, True, None, True, "is negative"),
    ("propensity", 0.0, False, 1.0, True, "is outside (0, 1]"),
    ("quantity", 1, True, None, True, "is below 1"),
    ("value", 0.0, True, None, True, "is negative"),
)

_SLATE_FIELDS = frozenset({"candidates", "shown", "propensities"})

# An event whose time is further ahead than this of the moment it was produced comes from a broken clock.
DEFAULT_MAX_FUTURE_SKEW_MS = HOUR_MS


def _within(value, low, low_allowed: bool, high, high_allowed: bool) -> bool:
    if low is not None and (value < low if low_allowed else value <= low):
        return False
    return high is None or (value <= high if high_allowed else value < high)


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
            ahead_s = seconds(event_time - reference_time_ms)
            return f"event_time_ms {event_time} is {ahead_s:.0f}s ahead of the time it was produced"
    for field, low, low_allowed, high, high_allowed, complaint in _VALUE_RULES:
        value = datum.get(field)
        if value is not None and not _within(value, low, low_allowed, high, high_allowed):
            return f"{field} {value} {complaint}"
    return slate_problem(datum) if _SLATE_FIELDS <= datum.keys() else None


def slate_problem(datum: dict) -> str | None:
    """Why a served request's slate cannot be weighed, or None: each slot shows a distinct candidate that exists,
    with a propensity in (0, 1], and no candidate is listed twice."""
    candidates, shown, propensities = datum["candidates"], datum["shown"], datum["propensities"]
    if not shown:
        return "shown is empty"
    if len(propensities) != len(shown):
        return f"{len(propensities)} propensities for {len(shown)} shown slots"
    if len(set(candidates)) != len(candidates):
        return "candidates lists an item twice"
    outside = [k for k in shown if not 0 <= k < len(candidates)]
    if outside:
        return f"shown index {outside[0]} is outside the {len(candidates)} candidates"
    if len(set(shown)) != len(shown):
        return "shown repeats a candidate"
    wrong = [p for p in propensities if not 0.0 < p <= 1.0]
    if wrong:
        return f"propensity {wrong[0]} is outside (0, 1]"
    return None


def compile_check(fields: Iterable[str]) -> Callable[[dict, int], bool]:
    """Returns passes(datum, latest_event_time_ms): True when `find_problem` would find nothing in a datum with
    these top-level fields, given reference time + skew as the latest event time allowed."""
    fields = set(fields)
    rules = [(f, _native.CHECK_NOT_EMPTY, None, True, None, True) for f in _ID_FIELDS if f in fields]
    if "event_time_ms" in fields:
        rules.append(("event_time_ms", _native.CHECK_EVENT_TIME, 0, False, None, True))
    rules += [(f, _native.CHECK_BOUNDS, *bounds) for f, *bounds, _ in _VALUE_RULES if f in fields]
    check = _native.Check(tuple(rules))
    if not _SLATE_FIELDS <= fields:
        return check
    return lambda datum, latest_ms: check(datum, latest_ms) and slate_problem(datum) is None
