"""What a benchmark result was measured on, recorded beside it, and which of its repeated runs it reports."""
from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata


def describe(packages: tuple[str, ...]) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "packages": {name: metadata.version(name) for name in packages},
    }


def median_run(runs: list[dict]) -> dict:
    """The run of median speed (`events_per_s`), with every run's speed beside it, in the order they ran."""
    median = dict(sorted(runs, key=lambda r: r["events_per_s"])[len(runs) // 2])
    median["events_per_s_of_each_run"] = [r["events_per_s"] for r in runs]
    return median
