"""Whether the streaming join keeps up, read from the status its source writes beside the output
(`pipelines.stream_status`), and the warning on-call gets when it does not.

A stream is falling behind when it has stayed more than `join.lag_alert_records` behind the partitions' ends for
`join.lag_alert_after_s`, or has written no status for that long (stopped, or stuck). A stream catching up with a
backlog faster than its input is behind for a while and then is not; one slower than its input stays behind, and
one that stalled goes silent. `valueloop join status` says which; the command running the stream checks every
progress period and warns through the alert sinks that do not page (the log, Slack, a webhook): a lagging join
delays the examples, it serves nobody a wrong model. The warning is opened once a day and resolved when the
stream keeps up again.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Iterable

from config import Settings
from config.join import JoinSettings
from pipelines.stream_status import StreamStatus, read_status, status_path
from promotion.alerts import Alert, AlertBook, Delivery, Severity, Sink, pages
from schemas.units import now_ms, utc

LAG_CHECK = "stream_lag"


@dataclasses.dataclass(frozen=True)
class Lag:
    status: StreamStatus | None
    behind_for_ms: int  # how long, up to the status, the records behind have stayed above the limit
    silent_for_ms: int | None  # since the status was written (since the stream started, when it has written none)
    falling_behind: bool
    reason: str


def assess(settings: JoinSettings, status: StreamStatus | None, at_ms: int, started_ms: int | None = None) -> Lag:
    """The stream's lag at `at_ms` from its last `status` (None: it has written none, since `started_ms` when
    the caller started it)."""
    limit, after_ms = settings.lag_alert_records, settings.lag_alert_after_ms
    if status is None:
        silent = None if started_ms is None else at_ms - started_ms
        if silent is not None and silent >= after_ms:
            return Lag(None, 0, silent, True, f"the streaming join has written no status in the {_minutes(silent)} "
                                              "since it started: it is stuck before its first read")
        return Lag(None, 0, silent, False, "the streaming join has written no status yet")
    behind_since = None
    for at, behind in reversed(status.samples):
        if behind <= limit:
            break
        behind_since = at
    behind_for = 0 if behind_since is None else status.updated_ms - behind_since
    silent = at_ms - status.updated_ms
    where = (f"{status.records_behind:,} records behind the partitions' ends, newest event "
             f"{_time(status.newest_event_ms)}, watermark {_time(status.watermark_ms)}")
    if silent >= after_ms:
        return Lag(status, behind_for, silent, True, f"the streaming join has written no status for "
                                                     f"{_minutes(silent)} (last at {_time(status.updated_ms)}, "
                                                     f"{where}): it is stopped or stuck")
    if behind_for >= after_ms:
        return Lag(status, behind_for, silent, True, f"the streaming join has been more than {limit:,} records "
                                                     f"behind for {_minutes(behind_for)}: {where}")
    return Lag(status, behind_for, silent, False, f"the streaming join keeps up: {where}")


def lag_of(settings: Settings, at_ms: int | None = None, started_ms: int | None = None) -> Lag:
    """The lag of the stream writing to `join.output_dir`, now or at `at_ms`."""
    return assess(settings.join, read_status(status_path(settings.join.output_dir)),
                  now_ms() if at_ms is None else at_ms, started_ms)


def warn_if_behind(settings: Settings, lag: Lag, sinks: Iterable[Sink], at_ms: int | None = None) -> list[Delivery]:
    """Opens the day's lag warning on the sinks that do not page when the stream is falling behind (once: an
    open one is not sent again), and resolves it when it keeps up again."""
    at_ms = now_ms() if at_ms is None else at_ms
    sinks = [sink for sink in sinks if not pages(sink)]
    book, day = AlertBook(settings.loop.alerts_file), utc(at_ms).strftime("%Y-%m-%d")
    if not lag.falling_behind:  # resolves what it opened, on whichever day
        opened = {a["window"] for a in book.open_alerts().values() if a["check"] == LAG_CHECK}
        return [d for window in sorted(opened) for d in book.resolve_passing([LAG_CHECK], window, sinks)]
    details = {} if lag.status is None else {"records_behind": lag.status.records_behind,
                                             "behind_for_s": lag.behind_for_ms // 1000,
                                             "newest_event_ms": lag.status.newest_event_ms,
                                             "watermark_ms": lag.status.watermark_ms}
    return book.trigger(Alert(LAG_CHECK, day, Severity.WARNING, lag.reason,
                              {**details, "output_dir": str(settings.join.output_dir)}), sinks)


class LagWatch:
    """Checks the stream's lag every `join.progress_log_s` on a daemon thread while the stream runs
    (`with LagWatch(settings, sinks):`), warning as `warn_if_behind` does."""

    def __init__(self, settings: Settings, sinks: Iterable[Sink]):
        self._settings, self._sinks = settings, list(sinks)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="valueloop-lag-watch", daemon=True)

    def __enter__(self) -> "LagWatch":
        self._started_ms = self._read_ms = now_ms()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(self._settings.join.progress_log_s):
            try:
                lag = lag_of(self._settings, started_ms=self._started_ms)
                self._read_ms = now_ms()
            except ValueError as error:  # unreadable: not keeping up either, once that has lasted the set time
                unread = now_ms() - self._read_ms
                if unread < self._settings.join.lag_alert_after_ms:
                    continue
                lag = Lag(None, 0, unread, True, f"the streaming join's status has not been readable for "
                                                 f"{_minutes(unread)}: {error}")
            warn_if_behind(self._settings, lag, self._sinks)


def _minutes(ms: int) -> str:
    return f"{ms / 60_000:.0f} min" if ms >= 60_000 else f"{ms / 1000:.0f} s"


def _time(ms: int | None) -> str:
    return "none yet" if ms is None or ms < 0 else utc(ms).isoformat(timespec="seconds")
