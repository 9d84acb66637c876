"""Alert sinks against a real HTTP server on 127.0.0.1: the webhook, Slack and PagerDuty payloads checked against
their documented fields, retries of a failing endpoint, and a later passing run resolving what was triggered."""
import logging

from promotion.alerts import (Alert, AlertBook, LogSink, PagerDutySink, Severity, SlackSink, WebhookSink, deliver,
                          sinks_from_environment)


ALERT = Alert("clickbait_signature", "2026-11-05", Severity.CRITICAL,
              "candidate v7 blocked: CTR +18% while purchases per impression -31% at equal maturity (surface=search)",
              {"ctr_change": 0.18, "purchases_per_impression_change": -0.31, "slice": "surface=search"},
              report_url="file:///srv/valueloop/audits/2026-11-05/report.html")


def test_the_webhook_slack_and_pagerduty_receive_their_documented_payloads(receiver):
    sinks = [WebhookSink(f"{receiver.url}/hook"), SlackSink(f"{receiver.url}/slack"),
             PagerDutySink("R0UTINGKEY", f"{receiver.url}/v2/enqueue")]
    outcomes = deliver(ALERT, sinks)
    assert [(o.sink, o.delivered, o.attempts) for o in outcomes] == \
        [("webhook", True, 1), ("slack", True, 1), ("pagerduty", True, 1)]
    (hook,) = receiver.bodies("/hook")
    assert hook["status"] == "firing" and hook["check"] == "clickbait_signature" and hook["window"] == "2026-11-05"
    assert hook["details"]["slice"] == "surface=search" and hook["report_url"].endswith("report.html")
    (slack,) = receiver.bodies("/slack")
    assert slack["text"].startswith("[CRITICAL] candidate v7 blocked")
    assert all(block["type"] in ("section", "context") for block in slack["blocks"])
    assert any("surface=search" in block.get("text", {}).get("text", "") for block in slack["blocks"])
    (page,) = receiver.bodies("/v2/enqueue")
    assert page["routing_key"] == "R0UTINGKEY" and page["event_action"] == "trigger"
    assert page["dedup_key"] == "valueloop/clickbait_signature/2026-11-05"
    assert set(page["payload"]) >= {"summary", "source", "severity"}
    assert page["payload"]["severity"] in ("critical", "error", "warning", "info")
    assert page["payload"]["custom_details"]["ctr_change"] == 0.18


def test_a_failing_endpoint_is_retried_then_logged_and_never_raises(receiver, caplog):
    receiver.failing["/slack"] = 2  # two refusals, then it takes the post
    receiver.failing["/hook"] = 100  # down for good
    waits = []
    with caplog.at_level(logging.ERROR, logger="valueloop.alerts"):
        outcomes = deliver(ALERT, [SlackSink(f"{receiver.url}/slack"), WebhookSink(f"{receiver.url}/hook")],
                           attempts=4, backoff_s=0.01, sleep=waits.append)
    slack, hook = outcomes
    assert (slack.delivered, slack.attempts) == (True, 3) and len(receiver.bodies("/slack")) == 1
    assert (hook.delivered, hook.attempts) == (False, 4) and "HTTP 500" in hook.error
    assert len(receiver.bodies("refused /hook")) == 4
    assert waits == [0.01, 0.02, 0.01, 0.02, 0.04]  # doubling from the backoff, per sink
    assert "not delivered to webhook after 4 attempts" in caplog.text


def test_an_unreachable_endpoint_is_a_failed_delivery_not_an_error():
    from tests.conftest import free_port

    (outcome,) = deliver(ALERT, [WebhookSink(f"http://127.0.0.1:{free_port()}/hook", timeout_s=2)], attempts=2,
                         backoff_s=0.0)
    assert not outcome.delivered and "ConnectionError" in outcome.error


def test_a_later_passing_run_resolves_what_an_earlier_one_triggered_once(receiver, tmp_path):
    book = AlertBook(tmp_path / "alerts.json")
    sinks = [PagerDutySink("KEY", f"{receiver.url}/v2/enqueue"), LogSink()]
    book.trigger(ALERT, sinks)
    assert book.trigger(ALERT, sinks) == []  # already open: no second page
    assert list(book.open_alerts()) == ["valueloop/clickbait_signature/2026-11-05"]
    book.resolve_passing(["clickbait_signature", "psi.dwell_ms"], "2026-11-05", sinks)
    trigger, resolve = receiver.bodies("/v2/enqueue")
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert resolve == {"routing_key": "KEY", "dedup_key": trigger["dedup_key"], "event_action": "resolve"}
    assert book.open_alerts() == {}
    book.resolve_passing(["clickbait_signature"], "2026-11-05", sinks)
    assert len(receiver.bodies("/v2/enqueue")) == 2  # nothing open, nothing sent


def test_sinks_come_from_the_environment_and_the_log_is_always_one_pure_function():
    assert [s.name for s in sinks_from_environment({})] == ["log"]
    sinks = sinks_from_environment({"VALUELOOP_SLACK_WEBHOOK_URL": "http://127.0.0.1:1/s",
                                    "VALUELOOP_PAGERDUTY_ROUTING_KEY": "k",
                                    "VALUELOOP_PAGERDUTY_URL": "http://127.0.0.1:1/v2/enqueue"})
    assert [s.name for s in sinks] == ["log", "slack", "pagerduty"]
    assert sinks[2].url == "http://127.0.0.1:1/v2/enqueue" and sinks[2].routing_key == "k"
