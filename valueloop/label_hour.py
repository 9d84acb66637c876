"""The bounded join of one event hour, as Airflow's BeamRunPythonPipelineOperator runs it with the project's own
interpreter:

    .venv/bin/python valueloop/label_hour.py --runner=DirectRunner --hour=2026-11-02T05:00:00 [--config=FILE]

Reads the Kafka offsets that hold the hour, labels its impressions and writes its partition, then lands the
hour's serving log beside it (the same files a second run writes again); prints the partition's manifest
summary as JSON. `--runner` takes Beam's names
(DirectRunner for the FnApiRunner, FlinkRunner) or valueloop's (direct, flink); other options the operator adds
(its labels) are ignored.
"""
from __future__ import annotations

import sys

if sys.path and sys.path[0].endswith("valueloop"):  # run as a script: its folder must not shadow top-level modules
    sys.path.pop(0)

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

from config import load_settings  # noqa: E402
from schemas.units import epoch_ms  # noqa: E402
from valueloop.loop import label_hour  # noqa: E402

RUNNERS = {"directrunner": "direct", "direct": "direct", "fnapirunner": "direct", "flinkrunner": "flink",
           "flink": "flink"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runner", default="DirectRunner", help="DirectRunner (FnApiRunner) or FlinkRunner")
    parser.add_argument("--hour", required=True, help="The event hour, e.g. 2026-11-02T05:00:00 (UTC)")
    parser.add_argument("--config", default="", help="The settings file (embedded defaults without one)")
    options, _ignored = parser.parse_known_args(argv)
    runner = RUNNERS.get(options.runner.lower())
    if runner is None:
        parser.error(f"--runner {options.runner!r}: one of DirectRunner, FlinkRunner")
    try:
        hour = dt.datetime.fromisoformat(options.hour.replace("Z", "+00:00"))
    except ValueError:
        parser.error(f"--hour {options.hour!r}: an ISO hour such as 2026-11-02T05:00:00")
    hour = hour.replace(tzinfo=hour.tzinfo or dt.timezone.utc)
    if hour.minute or hour.second or hour.microsecond:
        parser.error(f"--hour {options.hour!r} is not on the hour")

    settings = load_settings(Path(options.config) if options.config else None)
    print(json.dumps(label_hour(settings, epoch_ms(hour), runner).as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
