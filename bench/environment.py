"""What a benchmark result was measured on, recorded beside it."""
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
