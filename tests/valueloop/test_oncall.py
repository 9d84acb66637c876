"""On-call hygiene against a real HTTP server on 127.0.0.1: a blocked candidate pages once per cause and day, an
inconclusive one reaches the sinks that do not page and never PagerDuty, and a promotion resolves what was held."""
from config import Settings
from promotion.alerts import AlertBook, LogSink, PagerDutySink, SlackSink
from valueloop.loop import Audited, cause_of, hold_candidate

SERVED = ("served: the candidate's top 3 would show +8.4 points [+7.7, +9.3] of sensational headlines (score >= "
          "0.5), not shown to be within 3.0 points of production's")
OFFPOLICY = ("off-policy: the candidate's purchases in the top 3 (paired self-normalised doubly robust) -4.0% "
             "[-14.0%, +6.0%] against production's on valueloop-ranker/v3's log (4,000 requests): inconclusive, "
             "the interval straddles -10%; about 9,000 requests would decide it")


def _audited(status: str, reasons: list[str], tmp_path, version: int = 4) -> Audited:
    return Audited(status, False, reasons, str(tmp_path / "audit" / "report.html"), 3, version, None, None)


def test_a_block_pages_once_per_cause_and_an_inconclusive_candidate_never_pages(receiver, tmp_path):
    settings = Settings().model_copy(update={"loop": Settings().loop.model_copy(
        update={"alerts_file": tmp_path / "alerts.json"})})
    sinks = [LogSink(), SlackSink(f"{receiver.url}/slack"), PagerDutySink("KEY", f"{receiver.url}/v2/enqueue")]

    blocked = _audited("block", [SERVED, "gate: auc.purchase in all: 0.51 is below the bound 0.55"], tmp_path)
    first = hold_candidate(settings, "2026-11-05", blocked, sinks)
    again = hold_candidate(settings, "2026-11-05", blocked, sinks)  # the DAG's retry of the same day
    assert first.alerted == ["log", "slack", "pagerduty"] and again.alerted == []
    (page,) = receiver.bodies("/v2/enqueue")
    assert page["event_action"] == "trigger" and page["payload"]["severity"] == "critical"
    assert page["dedup_key"] == "valueloop/promotion_held.served/2026-11-05"
    assert page["payload"]["summary"].startswith("candidate v4 held back for 2026-11-05: audit block: served:")
    assert page["links"][0]["href"].endswith("/audit/report.html")  # the report, one click away

    inconclusive = _audited("inconclusive", [OFFPOLICY], tmp_path, version=5)
    held = hold_candidate(settings, "2026-11-06", inconclusive, sinks)
    assert held.alerted == ["log", "slack"]
    assert len(receiver.bodies("/v2/enqueue")) == 1  # still the one page
    slack = receiver.bodies("/slack")[-1]
    assert slack["text"].startswith("[WARNING] candidate v5 held back for 2026-11-06: audit inconclusive: off-policy")
    assert "9,000 requests would decide it" in slack["text"]
    assert set(AlertBook(tmp_path / "alerts.json").open_alerts()) == {
        "valueloop/promotion_held.served/2026-11-05", "valueloop/promotion_held.off-policy/2026-11-06"}


def test_each_reason_names_the_check_it_comes_from_pure_function():
    assert cause_of(SERVED) == "served" and cause_of(OFFPOLICY) == "off-policy"
    assert cause_of("gate: auc.purchase in all: the candidate lacks this metric") == "gate: auc.purchase"
    assert cause_of("clickbait signature in surface=search: CTR +0.0120 while ...") == \
        "clickbait signature in the data"
