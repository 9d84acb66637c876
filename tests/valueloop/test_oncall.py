"""On-call hygiene against a real HTTP server on 127.0.0.1: a blocked candidate pages once per cause and day, an
inconclusive one waits for the day's digest, which reaches the sinks that do not page (once, and again only to
one that missed it) and never PagerDuty, and a promotion resolves what was held."""
from config import Settings
from promotion.alerts import AlertBook, LogSink, PagerDutySink, SlackSink
from valueloop.loop import Audited, cause_of, hold_candidate, send_digest

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

    slack_before = len(receiver.bodies("/slack"))
    inconclusive = _audited("inconclusive", [OFFPOLICY], tmp_path, version=5)
    held = hold_candidate(settings, "2026-11-06", inconclusive, sinks)
    warned = _audited("warn", ["psi of predicted purchase: 0.31 beyond 0.25"], tmp_path, version=6)
    also = hold_candidate(settings, "2026-11-06", warned, sinks)
    assert held.digest and also.digest and held.alerted == also.alerted == []
    assert len(receiver.bodies("/slack")) == slack_before  # nothing yet: the day's digest tells
    receiver.failing["/slack"] = 4  # every attempt of the first digest fails at Slack
    assert send_digest(settings, "2026-11-06", sinks) == ["log"]
    assert send_digest(settings, "2026-11-06", sinks) == ["slack"]  # owed to Slack only
    assert send_digest(settings, "2026-11-06", sinks) == []  # once per day and sink
    [digest] = receiver.bodies("/slack")[slack_before:]
    assert digest["text"].startswith("[WARNING] digest of 2026-11-06: 2 alerts that page no one; candidate v5 held "
                                     "back for 2026-11-06: audit inconclusive: off-policy")
    facts = digest["blocks"][2]["text"]["text"]
    assert "9,000 requests would decide it" in facts and "candidate v6 held back" in facts
    assert len(receiver.bodies("/v2/enqueue")) == 1  # still the one page
    assert set(AlertBook(tmp_path / "alerts.json").open_alerts()) == {
        "valueloop/promotion_held.served/2026-11-05", "valueloop/promotion_held.off-policy/2026-11-06",
        "valueloop/promotion_held.psi_of_predicted_purchase/2026-11-06"}


def test_a_held_candidate_whose_day_is_promoted_before_its_digest_is_closed_without_a_word(receiver, tmp_path):
    settings = Settings().model_copy(update={"loop": Settings().loop.model_copy(
        update={"alerts_file": tmp_path / "alerts.json"})})
    sinks = [LogSink(), SlackSink(f"{receiver.url}/slack")]
    assert hold_candidate(settings, "2026-11-07", _audited("inconclusive", [OFFPOLICY], tmp_path), sinks).digest
    book = AlertBook(tmp_path / "alerts.json")
    book.resolve_passing(["promotion_held.off-policy"], "2026-11-07", sinks)  # as a promotion of the day does
    assert book.open_alerts() == {}
    assert send_digest(settings, "2026-11-07", sinks) == [] and receiver.bodies("/slack") == []


def test_each_reason_names_the_check_it_comes_from_pure_function():
    assert cause_of(SERVED) == "served" and cause_of(OFFPOLICY) == "off-policy"
    assert cause_of("gate: auc.purchase in all: the candidate lacks this metric") == "gate: auc.purchase"
    assert cause_of("clickbait signature in surface=search: CTR +0.0120 while ...") == \
        "clickbait signature in the data"
