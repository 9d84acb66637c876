"""Time as the event contract has it: instants are integer milliseconds since the epoch (UTC), durations integer
milliseconds. The one place that knows how many milliseconds a second, an hour and a day hold, and that turns
seconds (as the settings file gives durations; the settings convert theirs once, when they are loaded),
datetimes and Beam's microseconds into milliseconds and back."""
from __future__ import annotations

import datetime as dt
import time

SECOND_MS = 1000
HOUR_MS = 3600 * SECOND_MS
DAY_MS = 24 * HOUR_MS


def ms(seconds: float) -> int:
    """A duration given in seconds (as the settings file gives it), in whole milliseconds."""
    return int(seconds * SECOND_MS)


def seconds(duration_ms: float) -> float:
    return duration_ms / SECOND_MS


def epoch_ms(moment: dt.datetime) -> int:
    """An instant in milliseconds since the epoch; a naive datetime is taken as UTC."""
    return int((moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).timestamp() * SECOND_MS)


def utc(instant_ms: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(instant_ms / SECOND_MS, dt.timezone.utc)


def hour_text(instant_ms: int) -> str:
    """The UTC hour an instant falls in, as the command line and the logs write it: 2026-11-02T05:00Z."""
    return utc(instant_ms).strftime("%Y-%m-%dT%H:00Z")


def now_ms() -> int:
    return int(time.time() * SECOND_MS)


def micros(instant_ms: int) -> int:
    """Milliseconds as Beam's timestamps count: microseconds."""
    return instant_ms * SECOND_MS


def from_micros(instant_micros: int) -> int:
    return instant_micros // SECOND_MS
