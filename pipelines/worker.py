"""Settings of the process a bounded join's DoFns run in (the runner's own, or an SDK worker)."""
from __future__ import annotations

import gc

# Young objects are collected after this many allocations rather than CPython's 700.
YOUNG_COLLECTION_ALLOCATIONS = 100_000


def collect_garbage_less_often() -> None:
    """The bounded join holds millions of small objects (decoded events) until their shard is labeled. At
    CPython's default thresholds the collector walks them over and over: a third of the decoding time, measured
    on the bench data. Nothing here makes reference cycles worth collecting sooner."""
    if gc.get_threshold()[0] < YOUNG_COLLECTION_ALLOCATIONS:
        gc.set_threshold(YOUNG_COLLECTION_ALLOCATIONS, 50, 100)
