"""The streaming steps' progress lines: what is summed, sampled and said, and when (a clock of our own: a pure
function of the calls)."""
from pipelines.progress import Progress


def test_a_period_is_reported_once_it_is_over_and_the_next_begins_empty_pure_function():
    now, said = [0.0], []
    progress = Progress("stream", 60, clock=lambda: now[0], log=said.append)
    progress.add(records=5_000, source_calls=1)
    progress.sample(records_a_call=5_000)
    now[0] = 30.0
    assert progress.report(records_behind=1) is None and said == []  # the period is not over
    progress.add(records=1_000, source_calls=1)
    progress.sample(records_a_call=1_000)
    progress.sample(records_a_call=3_000)
    now[0] = 61.0
    line = progress.report(records_behind=120_000, newest_event_time="2026-11-03T04:00:00+00:00")
    assert said == [line]
    assert line == ("stream over 61 s: records 6,000; source_calls 2; records_a_call median 3,000 max 5,000; "
                    "records_behind 120,000; newest_event_time 2026-11-03T04:00:00+00:00")
    now[0] = 122.0
    assert progress.report() == "stream over 61 s: nothing"  # an idle period says so


def test_the_profile_benchmark_reads_back_what_the_lines_say_pure_function():
    from bench.stream import parse_progress

    now, said = [0.0], []
    progress = Progress("label", 30, clock=lambda: now[0], log=said.append)
    progress.add(firings=1_203, bundles=4)
    progress.sample(bundle_ms=353.5, labeled_a_firing=2)
    progress.sample(bundle_ms=1_425.0, labeled_a_firing=10)
    now[0] = 31.0
    progress.report(newest_event_time="2026-11-03T23:58:49+00:00")
    log = "".join(f"2026-12-07 22:51:55 {line}\n" for line in ["something else", *said])  # 4 significant digits
    assert parse_progress(log) == [{
        "step": "label", "seconds": 31, "firings": 1_203, "bundles": 4,
        "bundle_ms": {"median": 889.2, "max": 1_425.0}, "labeled_a_firing": {"median": 6.0, "max": 10.0},
        "newest_event_time": "2026-11-03T23:58:49+00:00"}]


def test_the_profile_adds_up_its_lines_pure_function():
    from bench.stream import profile_summary

    lines = [{"step": "stream", "seconds": 30, "records": 9_000, "source_calls": 3, "polling_ms": 600,
              "call_ms": 30_000},
             {"step": "stream", "seconds": 30, "records": 3_000, "source_calls": 1, "polling_ms": 200,
              "call_ms": 10_000},
             {"step": "label", "seconds": 60, "bundles": 12, "elements_and_firings": 12_000, "busy_ms": 15_000,
              "firings": 300, "examples_labeled": 2_400}]
    assert profile_summary(lines) == {
        "records_read": 12_000, "records_read_per_s": 200, "source_calls": 4, "source_polling_share": 0.02,
        "label_elements_and_firings_per_s": 200, "label_busy_share": 0.25, "label_firings": 300,
        "examples_labeled": 2_400}
