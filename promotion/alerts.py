"""On-call alerts: a check that failed (or has passed again) told to the sinks the team watches.

Sinks: a generic JSON webhook, a Slack incoming webhook (`text` and `blocks`), the PagerDuty Events API v2
(`trigger` and `resolve`, one dedup key per check and window, so a page is opened once and closed by the run
that passes) and the log. Where each sink posts, and its keys, come from the environment
(`sinks_from_environment`); none is written in a file. A sink that fails is retried with backoff, then the
failure is logged and returned: an alert that cannot be delivered never changes the gate's verdict, and never
lets a blocked model through.

`AlertBook` remembers, in a small JSON file under the run directory, which alerts are open, so that a later
passing run resolves exactly what an earlier one triggered. An alert that should not interrupt anyone is
deferred to its window's digest instead (`defer`, `send_digest`): one message a window to the sinks read in
working hours, however many such alerts the window had.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterable, Mapping, Protocol

import requests
from tenacity import Retrying, stop_after_attempt, wait_exponential

_LOG = logging.getLogger("valueloop.alerts")


class Severity(str, enum.Enum):
    """PagerDuty's severities, which the other sinks show as they are."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclasses.dataclass(frozen=True)
class Alert:
    """What on-call needs to act: which check, on which window, how bad, what it found and where the report is."""

    check: str  # e.g. "clickbait_signature" or "ctr_up_purchases_down.surface=search"
    window: str  # the audited window, e.g. "2026-11-05"
    severity: Severity
    summary: str
    details: Mapping[str, object] = dataclasses.field(default_factory=dict)
    report_url: str | None = None
    source: str = "valueloop"
    resolved: bool = False  # True: the check passes again, and what was opened for it closes

    @property
    def dedup_key(self) -> str:
        return f"valueloop/{self.check}/{self.window}"

    def resolution(self) -> "Alert":
        return dataclasses.replace(self, resolved=True, summary=f"resolved: {self.check} passes on {self.window}")


class Sink(Protocol):
    name: str

    def send(self, alert: Alert) -> None:
        """Delivers the alert or raises."""


class DeliveryFailed(RuntimeError):
    """A sink's endpoint did not take the alert; the message names the sink and the answer."""


def _post(url: str, payload: dict, sink: str, timeout_s: float) -> None:
    try:
        answer = requests.post(url, json=payload, timeout=timeout_s)
    except requests.RequestException as error:
        raise DeliveryFailed(f"{sink}: {type(error).__name__}: {error}") from None
    if answer.status_code >= 300:
        raise DeliveryFailed(f"{sink}: HTTP {answer.status_code}: {answer.text[:200]}")


def _as_json(value):
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


@dataclasses.dataclass
class WebhookSink:
    """A generic JSON webhook: the alert's fields as one object."""

    url: str
    timeout_s: float = 10.0
    name: str = "webhook"

    def payload(self, alert: Alert) -> dict:
        return {"status": "resolved" if alert.resolved else "firing", "check": alert.check, "window": alert.window,
                "severity": alert.severity.value, "summary": alert.summary, "dedup_key": alert.dedup_key,
                "source": alert.source, "report_url": alert.report_url,
                "details": {k: _as_json(v) for k, v in alert.details.items()}}

    def send(self, alert: Alert) -> None:
        _post(self.url, self.payload(alert), self.name, self.timeout_s)


@dataclasses.dataclass
class SlackSink:
    """A Slack incoming webhook: `text` for notifications, `blocks` for the message itself."""

    webhook_url: str
    timeout_s: float = 10.0
    name: str = "slack"

    def payload(self, alert: Alert) -> dict:
        mark = "resolved" if alert.resolved else alert.severity.value.upper()
        text = f"[{mark}] {alert.summary}"
        facts = "\n".join(f"*{k}*: {_as_json(v)}" for k, v in alert.details.items())
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
                  {"type": "context", "elements": [{"type": "mrkdwn",
                                                    "text": f"check `{alert.check}` on window {alert.window}"}]}]
        if facts:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": facts}})
        if alert.report_url:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{alert.report_url}|the report>"}})
        return {"text": text, "blocks": blocks}

    def send(self, alert: Alert) -> None:
        _post(self.webhook_url, self.payload(alert), self.name, self.timeout_s)


PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


@dataclasses.dataclass
class PagerDutySink:
    """PagerDuty's Events API v2: `trigger` with a payload (summary, source, severity, custom details), `resolve`
    with the same dedup key."""

    routing_key: str
    url: str = PAGERDUTY_EVENTS_URL
    timeout_s: float = 10.0
    name: str = "pagerduty"

    def payload(self, alert: Alert) -> dict:
        event = {"routing_key": self.routing_key, "dedup_key": alert.dedup_key,
                 "event_action": "resolve" if alert.resolved else "trigger"}
        if not alert.resolved:
            event["payload"] = {"summary": alert.summary[:1024], "source": alert.source,
                                "severity": alert.severity.value, "component": alert.check, "group": alert.window,
                                "custom_details": {k: _as_json(v) for k, v in alert.details.items()}}
            if alert.report_url:
                event["links"] = [{"href": alert.report_url, "text": "audit report"}]
        return event

    def send(self, alert: Alert) -> None:
        _post(self.url, self.payload(alert), self.name, self.timeout_s)


@dataclasses.dataclass
class LogSink:
    """The log: every alert, whatever else is configured."""

    name: str = "log"

    def send(self, alert: Alert) -> None:
        level = logging.INFO if alert.resolved or alert.severity is Severity.INFO else logging.WARNING
        _LOG.log(level, "%s [%s] %s (%s)", "resolved" if alert.resolved else "alert", alert.severity.value,
                 alert.summary, alert.dedup_key)


def pages(sink: Sink) -> bool:
    """Whether a sink wakes someone: PagerDuty does; the log, Slack and a webhook are read in working hours."""
    return isinstance(sink, PagerDutySink)


def sinks_from_environment(environ: Mapping[str, str] = os.environ) -> list[Sink]:
    """The log, and each sink whose address the environment gives: VALUELOOP_ALERT_WEBHOOK_URL,
    VALUELOOP_SLACK_WEBHOOK_URL, VALUELOOP_PAGERDUTY_ROUTING_KEY (VALUELOOP_PAGERDUTY_URL to post elsewhere
    than PagerDuty's own endpoint)."""
    sinks: list[Sink] = [LogSink()]
    if environ.get("VALUELOOP_ALERT_WEBHOOK_URL"):
        sinks.append(WebhookSink(environ["VALUELOOP_ALERT_WEBHOOK_URL"]))
    if environ.get("VALUELOOP_SLACK_WEBHOOK_URL"):
        sinks.append(SlackSink(environ["VALUELOOP_SLACK_WEBHOOK_URL"]))
    if environ.get("VALUELOOP_PAGERDUTY_ROUTING_KEY"):
        sinks.append(PagerDutySink(environ["VALUELOOP_PAGERDUTY_ROUTING_KEY"],
                                   environ.get("VALUELOOP_PAGERDUTY_URL", PAGERDUTY_EVENTS_URL)))
    return sinks


@dataclasses.dataclass(frozen=True)
class Delivery:
    sink: str
    dedup_key: str
    delivered: bool
    attempts: int
    error: str | None = None


def deliver(alert: Alert, sinks: Iterable[Sink], attempts: int = 4, backoff_s: float = 0.5,
            sleep=time.sleep) -> list[Delivery]:
    """Sends the alert to every sink, each retried (tenacity) up to `attempts` times with doubling waits from
    `backoff_s`; a sink that still fails is logged and reported in the returned list. Never raises for a sink's
    failure."""
    outcomes = []
    for sink in sinks:
        try:
            for attempt in Retrying(stop=stop_after_attempt(attempts), wait=wait_exponential(multiplier=backoff_s),
                                    sleep=sleep, reraise=True):
                with attempt:
                    sink.send(alert)
            outcomes.append(Delivery(sink.name, alert.dedup_key, True, attempt.retry_state.attempt_number))
        except Exception as failure:  # any sink's failure is reported, never let through to the gate
            _LOG.error("alert %s not delivered to %s after %d attempts: %s", alert.dedup_key, sink.name, attempts,
                       failure)
            outcomes.append(Delivery(sink.name, alert.dedup_key, False, attempts, str(failure)))
    return outcomes


DIGEST = "digest"


class AlertBook:
    """Which alerts are open, kept in a JSON file: `trigger` opens (and delivers) an alert unless it is open
    already; `defer` opens one for its window's digest, which `send_digest` delivers; `resolve_passing` closes
    the open alerts of checks that now pass on their window."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def open_alerts(self) -> dict[str, dict]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def _save(self, alerts: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(alerts, indent=2, sort_keys=True) + "\n")
        os.replace(temporary, self.path)

    def trigger(self, alert: Alert, sinks: Iterable[Sink], **delivery) -> list[Delivery]:
        """Delivers a new alert and records it open. One already open is not sent again (no second page), except
        to the sinks that could not take it last time: an alert on-call never received is tried again."""
        alerts = self.open_alerts()
        sinks = list(sinks)
        opened = alerts.get(alert.dedup_key)
        if opened is not None:
            sinks = [sink for sink in sinks if sink.name in opened.get("undelivered", [])]
            if not sinks:
                return []
        outcomes = deliver(alert, sinks, **delivery)
        alerts[alert.dedup_key] = {"check": alert.check, "window": alert.window, "severity": alert.severity.value,
                                   "summary": alert.summary, "source": alert.source,
                                   "undelivered": sorted(o.sink for o in outcomes if not o.delivered)}
        self._save(alerts)
        return outcomes

    def defer(self, alert: Alert) -> bool:
        """Opens `alert` for its window's digest without delivering it; False, and nothing changed, when it is
        open already."""
        alerts = self.open_alerts()
        if alert.dedup_key in alerts:
            return False
        alerts[alert.dedup_key] = {"check": alert.check, "window": alert.window, "severity": alert.severity.value,
                                   "summary": alert.summary, "source": alert.source, "report_url": alert.report_url,
                                   "undelivered": [], "digest": None}  # None: owed to every sink
        self._save(alerts)
        return True

    def send_digest(self, window: str, sinks: Iterable[Sink], **delivery) -> list[Delivery]:
        """Delivers to each sink one alert that lists every alert deferred on `window` and not yet delivered to
        it, and records who has had them: a second call sends nothing, and a sink that failed gets its digest
        on the next call. Give it the sinks that do not page."""
        alerts = self.open_alerts()
        sinks = list(sinks)
        outcomes: list[Delivery] = []
        for sink in sinks:
            due = {key: a for key, a in alerts.items() if a["window"] == window and "digest" in a
                   and (a["digest"] is None or sink.name in a["digest"])}
            if not due:
                continue
            severity = max((Severity(a["severity"]) for a in due.values()), key=list(Severity)[::-1].index)
            reports = sorted({a["report_url"] for a in due.values() if a.get("report_url")})
            digest = Alert(DIGEST, window, severity,
                           f"digest of {window}: {len(due)} alert{'s' if len(due) > 1 else ''} that page no one; "
                           + due[min(due)]["summary"] + (f" (and {len(due) - 1} more)" if len(due) > 1 else ""),
                           {a["check"]: a["summary"] for a in due.values()},
                           report_url=reports[0] if len(reports) == 1 else None)
            [outcome] = deliver(digest, [sink], **delivery)
            outcomes.append(outcome)
            for key, opened in due.items():
                owed = [other.name for other in sinks] if opened["digest"] is None else opened["digest"]
                opened["digest"] = [name for name in owed if name != sink.name or not outcome.delivered]
        self._save(alerts)
        return outcomes

    def resolve_passing(self, passing_checks: Iterable[str], window: str, sinks: Iterable[Sink],
                        **delivery) -> list[Delivery]:
        """Resolves the open alerts of `passing_checks` on `window`, delivering each resolution; one still
        waiting for its digest is closed without a word."""
        alerts = self.open_alerts()
        sinks = list(sinks)
        outcomes: list[Delivery] = []
        for check in passing_checks:
            key = Alert(check, window, Severity.INFO, "").dedup_key
            opened = alerts.pop(key, None)
            if opened is not None and opened.get("digest", []) is None:
                continue
            if opened is not None:
                alert = Alert(check, window, Severity(opened["severity"]), opened["summary"], source=opened["source"])
                outcomes += deliver(alert.resolution(), sinks, **delivery)
        self._save(alerts)
        return outcomes
