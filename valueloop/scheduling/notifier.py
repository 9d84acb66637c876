"""Task failures told to on-call through the gate's sinks, as an Airflow notifier: any DAG can pass
`ValueloopNotifier()` as an `on_failure_callback` (or `on_success_callback`, to resolve).

The sinks are the environment's (`promotion.alerts.sinks_from_environment`) and, where the Airflow connections
exist, `valueloop_webhook` and `valueloop_slack` (the URL in the connection's host, or `url` in its extra) and
`valueloop_pagerduty` (the routing key as its password). Each failed task instance is one alert, keyed by DAG,
task and run, so a retried task that fails again does not page twice.
"""
from __future__ import annotations

from airflow.sdk import BaseNotifier

from config import alert_book
from promotion.alerts import (
    PAGERDUTY_EVENTS_URL,
    Alert,
    AlertBook,
    PagerDutySink,
    Severity,
    SlackSink,
    WebhookSink,
    sinks_from_environment,
)
from valueloop.scheduling.assets import settings


def _connection_sinks() -> list:
    from airflow.sdk import Connection

    sinks = []
    for conn_id, build in (("valueloop_webhook", lambda url, c: WebhookSink(url)),
                           ("valueloop_slack", lambda url, c: SlackSink(url)),
                           ("valueloop_pagerduty",
                            lambda url, c: PagerDutySink(c.password, url or PAGERDUTY_EVENTS_URL))):
        try:
            connection = Connection.get(conn_id)
        except Exception:  # not defined: that sink is not wanted
            continue
        url = (connection.extra_dejson or {}).get("url") or connection.host
        sinks.append(build(url, connection))
    return sinks


def sinks() -> list:
    found = sinks_from_environment()
    names = {s.name for s in found}
    return found + [s for s in _connection_sinks() if s.name not in names]


class ValueloopNotifier(BaseNotifier):
    """Alerts the gate's sinks that a task failed (or, with `resolve=True`, that it now succeeds)."""

    template_fields = ("summary",)

    def __init__(self, summary: str = "{{ ti.dag_id }}.{{ ti.task_id }} failed for {{ run_id }}",
                 resolve: bool = False):
        super().__init__()
        self.summary = summary
        self.resolve = resolve

    def notify(self, context) -> None:
        ti = context["ti"]
        check = f"airflow.{ti.dag_id}.{ti.task_id}"
        window = str(context.get("run_id", ""))
        book = AlertBook(alert_book(settings()))
        if self.resolve:
            book.resolve_passing([check], window, sinks())
            return
        error = context.get("exception")
        alert = Alert(check, window, Severity.ERROR, self.summary,
                      {"dag_id": ti.dag_id, "task_id": ti.task_id, "try_number": getattr(ti, "try_number", None),
                       "error": f"{type(error).__name__}: {error}" if error else ""},
                      report_url=getattr(ti, "log_url", None))
        book.trigger(alert, sinks())
