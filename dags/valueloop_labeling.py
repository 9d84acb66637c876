"""valueloop_labeling: every hour, the bounded Beam join of the event hour that is now old enough to be final
(the run's time minus the longest attribution window and the allowed lateness), and the landing of that hour's
serving log, started by the Beam provider's BeamHook on the project's interpreter; each hour written is an
update of the `valueloop_labeled_hours` asset, partitioned by the hour, with the partition's URI and the
requests landed.

The provider's BeamRunPythonPipelineOperator cannot be used without the Google provider (6.2.3 and 6.3.1: its
Dataflow mixin refuses to construct the operator, and `execute` builds a DataflowConfiguration), which would
bring some hundred packages for a local runner; the task below runs the same hook the operator runs.

Params: `runner` (direct: the FnApiRunner; flink), `hour` (label this hour instead, e.g. to redo one). The
environment's VALUELOOP_LABELING_CRON replaces the hourly schedule (`off`: runs only when triggered, as where a
streaming join writes the hours and this DAG only publishes or redoes them).
"""
from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG, CronPartitionTimetable, Param, task

from valueloop.scheduling.assets import HOUR_KEY, LABELED_HOURS, PROJECT_ROOT, PYTHON
from valueloop.scheduling.notifier import ValueloopNotifier

DEFAULTS = {"retries": 2, "retry_delay": dt.timedelta(minutes=1), "retry_exponential_backoff": True,
            "max_retry_delay": dt.timedelta(minutes=10), "execution_timeout": dt.timedelta(hours=1),
            "on_failure_callback": ValueloopNotifier()}

CRON = os.environ.get("VALUELOOP_LABELING_CRON", "10 * * * *")

with DAG(
    dag_id="valueloop_labeling",
    description="Label the newest hour whose conversion windows have closed",
    schedule=None if CRON.lower() in ("", "off", "none") else CronPartitionTimetable(CRON, timezone="UTC"),
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULTS,
    params={"runner": Param("direct", enum=["direct", "flink"], description="The Beam runner"),
            "hour": Param(None, type=["null", "string"], pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:00(:00)?Z?$",
                          description="Label this hour (UTC) instead of the newest final one")},
    tags=["valueloop"],
):

    @task(execution_timeout=dt.timedelta(minutes=2))
    def plan(params=None, dag_run=None, data_interval_end=None) -> dict:
        """The hour to label and the settings file to label it with."""
        from schemas.units import HOUR_MS, epoch_ms, utc
        from valueloop.loop import hour_to_label
        from valueloop.scheduling.assets import config_path, settings

        if params.get("hour"):
            hour_ms = epoch_ms(dt.datetime.fromisoformat(params["hour"].replace("Z", "+00:00")))
        else:
            now = getattr(dag_run, "partition_date", None) or data_interval_end or getattr(dag_run, "run_after")
            hour_ms = hour_to_label(settings(), epoch_ms(now))
        hour = utc(hour_ms)
        return {"hour": hour.strftime(HOUR_KEY), "hour_ms": hour_ms // HOUR_MS * HOUR_MS,
                "runner": {"direct": "DirectRunner", "flink": "FlinkRunner"}[params.get("runner", "direct")],
                "config": config_path() or ""}

    @task(execution_timeout=dt.timedelta(hours=1))
    def label(planned: dict) -> None:
        """The bounded join of the hour and the landing of its serving log, as Beam pipelines in a process on
        the project's interpreter (`valueloop/label_hour.py`)."""
        from airflow.providers.apache.beam.hooks.beam import BeamHook

        BeamHook(runner=planned["runner"]).start_python_pipeline(
            variables={"runner": planned["runner"], "hour": planned["hour"], "config": planned["config"]},
            py_file=str(PROJECT_ROOT / "valueloop" / "label_hour.py"), py_options=[], py_interpreter=PYTHON)

    @task(outlets=[LABELED_HOURS], execution_timeout=dt.timedelta(minutes=2))
    def publish(planned: dict, outlet_events=None) -> dict:
        """The hour's partition as an asset event: partition key the hour, extra its URI and counts."""
        from valueloop.loop import hour_manifest
        from valueloop.scheduling.assets import settings

        summary = hour_manifest(settings(), planned["hour_ms"])
        outlet_events[LABELED_HOURS].add_partitions(planned["hour"])
        outlet_events[LABELED_HOURS].extra = {"uri": summary.uri, "partition": summary.partition,
                                              "examples": summary.examples, "served_requests": summary.served_requests,
                                              "serving_log_dead_letters": summary.serving_log_dead_letters}
        return summary.as_dict()

    planned = plan()
    label(planned) >> publish(planned)
