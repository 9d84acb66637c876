"""Value checks on decoded events: what Avro's types cannot say about a well-formed event.

The rules are data (`_ID_FIELDS`, `_VALUE_RULES`), read two ways: `find_problem` says what is wrong with a datum,
and `compile_check` makes a fast yes-or-no test for one record type's fields, which a decoder runs on every
event and follows with `find_problem` only when it says no.
"""
from __future__ import annotations

from typing import Callable, Iterable

_ID_FIELDS = ("event_id", "impression_id", "request_id", "order_id", "user_id", "item_id")

# Field, the condition its value meets when not null (a Python expression of v), what to say when it does not.
_VALUE_RULES = (
    ("dwell_ms", "v >= 0", "is negative"),
    ("position", "v >= 0", "is negative"),
    ("propensity", "0.0 < v <= 1.0", "is outside (0, 1]"),
    ("quantity", "v >= 1", "is below 1"),
    ("value", "v >= 0.0", "is negative"),
)
_CONDITIONS = {field: eval(f"lambda v: {condition}") for field, condition, _ in _VALUE_RULES}  # noqa: S307

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
    for field, _, complaint in _VALUE_RULES:
        value = datum.get(field)
        if value is not None and not _CONDITIONS[field](value):
            return f"{field} {value} {complaint}"
    return None


def compile_check(fields: Iterable[str]) -> Callable[[dict, int], bool]:
    """Returns passes(datum, latest_event_time_ms): True when `find_problem` would find nothing in a datum with
    these top-level fields, given reference time + skew as the latest event time allowed."""
    fields = set(fields)
    terms = [f"d[{f!r}]" for f in _ID_FIELDS if f in fields]
    if "event_time_ms" in fields:
        terms.append("(d['event_time_ms'] is None or 0 < d['event_time_ms'] <= latest)")
    for field, condition, _ in _VALUE_RULES:
        if field in fields:
            terms.append(f"((v := d[{field!r}]) is None or {condition})")
    source = f"def passes(d, latest):\n    return bool({' and '.join(terms) or 'True'})\n"
    namespace: dict = {}
    exec(compile(source, "<event check>", "exec"), namespace)
    return namespace["passes"]
