"""valueloop_manifests: where a streaming join (`valueloop join --mode streaming`) labels the hours outside Airflow,
this DAG feeds the `valueloop_labeled_hours` asset from the manifests it writes: each hour whose complete
partition is new, or written again at a new revision, becomes one asset event partitioned by the hour, so the
retraining DAG rolls them up into days exactly as it does the labeling DAG's.

Off unless VALUELOOP_MANIFESTS_CRON gives its schedule (e.g. `*/10 * * * *`): with the labeling DAG on as well,
both would publish the same hours. Which hours it has published, at which revision, is kept in
`loop.work_dir/published_hours.json`.
"""
from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG, task

from valueloop.scheduling.assets import LABELED_HOURS
from valueloop.scheduling.notifier import ValueloopNotifier

CRON = os.environ.get("VALUELOOP_MANIFESTS_CRON", "off")

with DAG(
    dag_id="valueloop_manifests",
    description="Publish the hours a streaming join wrote as labeled-hour asset events",
    schedule=None if CRON.lower() in ("", "off", "none") else CRON,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=1), "retry_exponential_backoff": True,
                  "execution_timeout": dt.timedelta(minutes=10), "on_failure_callback": ValueloopNotifier()},
    tags=["valueloop"],
):

    @task(outlets=[LABELED_HOURS])
    def publish_new_hours(outlet_events=None) -> list[str]:
        """One asset event per hour not yet published at its current revision; none new: skipped, so that no
        event without an hour is recorded."""
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowSkipException

        from valueloop.loop import manifests_to_publish, mark_published
        from valueloop.scheduling.assets import settings

        found = settings()
        ledger = Path(found.loop.work_dir) / "published_hours.json"
        hours = manifests_to_publish(found, ledger)
        if not hours:
            raise AirflowSkipException(f"no new hour under {found.join.output_dir}")
        outlet_events[LABELED_HOURS].add_partitions([h.key for h in hours])
        outlet_events[LABELED_HOURS].extra = {"source": "manifests", "partitions": {h.key: h.uri for h in hours}}
        mark_published(ledger, hours)
        return [h.key for h in hours]

    publish_new_hours()
