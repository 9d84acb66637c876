"""A streaming step's progress, gathered over a period of wall-clock time and logged as one line at its end: what
the person watching a stream reads to see whether it keeps up, and where its time goes.

The streaming source logs what it read and how far behind the partitions' ends and the clock it is
(`kafka_source._FollowTopics`); the label step logs its firings, the labeling work they did and the state they
read, and its bundles (`join._LabelUser`). Each worker logs its own share.
"""
from __future__ import annotations

import logging
import statistics
import time
from typing import Callable

_LOG = logging.getLogger("valueloop.join.progress")


class Progress:
    """Counts summed and values sampled since the period began; `report` logs them once the period is over and
    begins the next. `clock` is in seconds (monotonic)."""

    def __init__(self, what: str, period_s: float, clock: Callable[[], float] = time.monotonic,
                 log: Callable[[str], None] = _LOG.info):
        self._what = what
        self._period_s = period_s
        self._clock = clock
        self._log = log
        self._began = clock()
        self._sums: dict[str, int] = {}
        self._samples: dict[str, list[float]] = {}

    def add(self, **counts: int) -> None:
        for name, count in counts.items():
            self._sums[name] = self._sums.get(name, 0) + count

    def sample(self, **values: float) -> None:
        for name, value in values.items():
            self._samples.setdefault(name, []).append(value)

    def report(self, **now) -> str | None:
        """The period's line, logged, when the period is over (None before): the sums, each sample's median and
        maximum, and `now` (the state at the end of the period) as given."""
        elapsed = self._clock() - self._began
        if elapsed < self._period_s:
            return None
        parts = [f"{name} {total:,}" for name, total in self._sums.items()]
        parts += [f"{name} median {statistics.median(values):,.4g} max {max(values):,.4g}"
                  for name, values in self._samples.items() if values]
        parts += [f"{name} {value:,}" if isinstance(value, int) else f"{name} {value}" for name, value in now.items()]
        line = f"{self._what} over {elapsed:.0f} s: " + ("; ".join(parts) or "nothing")
        self._log(line)
        self._began, self._sums, self._samples = self._clock(), {}, {}
        return line
