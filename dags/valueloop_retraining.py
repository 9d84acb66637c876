"""valueloop_retraining: once the 24 labeled hours of a day are in (the `valueloop_labeled_hours` asset rolled up
from hours to days), check the manifests, decide the canary that served the day (if one did), train a candidate
on the days before, register it, audit it (the day against the day before; the candidate against production on
the day), then promote it or keep production: a candidate the audit cannot judge becomes the next canary
(`valueloop.canary`) when none is in flight, and any other held candidate alerts on-call.

Every task is idempotent for its day: a re-run finds the same model, the same registered version, the same
audit and the same open alert. Param `day` (YYYY-MM-DD) runs a day by hand, e.g. from the REST API or
`dag.test`.
"""
from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, DayWindow, Param, PartitionedAssetTimetable, RollupMapper, StartOfDayMapper, task

from valueloop.scheduling.assets import LABELED_HOURS, PROMOTED_MODELS
from valueloop.scheduling.notifier import ValueloopNotifier

DEFAULTS = {"retries": 2, "retry_delay": dt.timedelta(minutes=1), "retry_exponential_backoff": True,
            "max_retry_delay": dt.timedelta(minutes=10), "execution_timeout": dt.timedelta(minutes=30),
            "on_failure_callback": ValueloopNotifier()}

with DAG(
    dag_id="valueloop_retraining",
    description="Train, audit, and promote or hold back the day's candidate",
    schedule=PartitionedAssetTimetable(
        assets=LABELED_HOURS,
        default_partition_mapper=RollupMapper(upstream_mapper=StartOfDayMapper(), window=DayWindow())),
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULTS,
    params={"day": Param(None, type=["null", "string"], pattern=r"^\d{4}-\d{2}-\d{2}$",
                         description="The day to audit (UTC); by default the run's partition, the day rolled up")},
    tags=["valueloop"],
):

    @task(execution_timeout=dt.timedelta(minutes=5))
    def check_manifests(params=None, dag_run=None) -> str:
        """The day to audit, once every hour of it and of its training days has a complete partition."""
        from valueloop.loop import check_manifests as check
        from valueloop.scheduling.assets import settings

        day = params.get("day") or getattr(dag_run, "partition_key", None)
        if not day:
            raise ValueError("no day to retrain for: give the param `day` (YYYY-MM-DD) or run on the rolled-up asset")
        found = settings()
        print(check(found, found.loop, day))
        return day

    @task
    def settle_canary(day: str) -> dict | None:
        """The canary that served `day`, decided by its split test: promoted, or held with an alert. Before the
        day's own candidate is audited, so that it is judged against the production that decision leaves."""
        from valueloop.canary import settle
        from valueloop.scheduling.assets import settings
        from valueloop.scheduling.notifier import sinks

        return settle(settings(), day, sinks())

    @task(execution_timeout=dt.timedelta(hours=2))
    def train(day: str) -> str:
        from valueloop.loop import train_candidate
        from valueloop.scheduling.assets import settings

        found = settings()
        return str(train_candidate(found, found.loop, day))

    @task
    def register(day: str, model: str) -> int:
        from pathlib import Path

        from valueloop.loop import register_candidate
        from valueloop.scheduling.assets import settings

        return register_candidate(settings(), day, Path(model))

    # The audit hands the decision an `Audited`; across XCom it travels as its dict.
    @task
    def audit(day: str, version: int) -> dict:
        from valueloop.loop import audit_candidate
        from valueloop.scheduling.assets import settings

        found = settings()
        return audit_candidate(found, found.loop, day, version).as_dict()

    @task.branch
    def decide(audited: dict) -> str:
        from valueloop.loop import Audited

        return "promote" if Audited.from_dict(audited).promotable else "hold"

    @task(outlets=[PROMOTED_MODELS])
    def promote(day: str, audited: dict) -> dict:
        from valueloop.loop import Audited, promote_candidate
        from valueloop.scheduling.assets import settings
        from valueloop.scheduling.notifier import sinks

        return promote_candidate(settings(), day, Audited.from_dict(audited), sinks())

    @task
    def hold(day: str, audited: dict) -> dict:
        """Keeps production. An inconclusive candidate is split-tested from the next day when no other canary is
        in flight (the run for that day decides it); otherwise on-call is told (`valueloop.loop.hold_candidate`)."""
        import dataclasses

        from valueloop.canary import open_canary
        from valueloop.loop import Audited, hold_candidate
        from valueloop.scheduling.assets import settings
        from valueloop.scheduling.notifier import sinks

        found, held = settings(), Audited.from_dict(audited)
        canary = open_canary(found, day, held, int(day.replace("-", "")))
        if canary is not None:
            return {"canary": canary.as_dict()}
        return dataclasses.asdict(hold_candidate(found, day, held, sinks()))

    @task(trigger_rule="none_failed_min_one_success")
    def digest(day: str) -> list[str]:
        """The day's digest of what was held without a page (an inconclusive or warning candidate, a canary that
        could not be decided), once, to the sinks that do not page; the sinks that took it."""
        from valueloop.loop import send_digest
        from valueloop.scheduling.assets import settings
        from valueloop.scheduling.notifier import sinks

        return send_digest(settings(), day, sinks())

    day = check_manifests()
    audited = audit(day, register(day, train(day)))
    settle_canary(day) >> audited
    decide(audited) >> [promote(day, audited), hold(day, audited)] >> digest(day)
