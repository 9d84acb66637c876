"""The streaming join's lag, from the status its source writes: behind for longer than the set time, or silent for
that long, is falling behind, and says so once a day on the sinks that do not page (a real HTTP server here)."""
from config import Settings
from config.join import JoinSettings
from pipelines.stream_status import StreamStatus, read_status, status_path, write_status
from promotion.alerts import AlertBook, LogSink, PagerDutySink, SlackSink
from valueloop.stream_lag import assess, lag_of, warn_if_behind

MINUTE = 60_000
T0 = 1_796_000_000_000  # a wall-clock instant, 2026-11-30
SETTINGS = JoinSettings(lag_alert_records=1_000, lag_alert_after_s=900)


def status(behind_by_minute: list[int], at_ms: int = T0) -> StreamStatus:
    """A status written at `at_ms` whose samples, one a minute ending then, were these records behind."""
    samples = [(at_ms - (len(behind_by_minute) - 1 - i) * MINUTE, b) for i, b in enumerate(behind_by_minute)]
    return StreamStatus(at_ms, 60.0, [("valueloop.impressions", 0, 10, 10 + behind_by_minute[-1])], 1_795_000_000_000,
                        1_794_999_000_000, samples)


def test_a_stream_behind_for_longer_than_the_set_time_is_falling_behind_pure_function():
    catching_up = assess(SETTINGS, status([90_000, 60_000, 30_000, 900, 20]), T0 + 5_000)
    assert not catching_up.falling_behind and catching_up.behind_for_ms == 0
    assert catching_up.reason.startswith("the streaming join keeps up: 20 records behind")
    ten_minutes = assess(SETTINGS, status([500] + [5_000] * 11), T0)
    assert not ten_minutes.falling_behind and ten_minutes.behind_for_ms == 10 * MINUTE
    twenty = assess(SETTINGS, status([500] + [5_000] * 21), T0)
    assert twenty.falling_behind and twenty.behind_for_ms == 20 * MINUTE
    assert "more than 1,000 records behind for 20 min: 5,000 records behind" in twenty.reason
    silent = assess(SETTINGS, status([20]), T0 + 16 * MINUTE)
    assert silent.falling_behind and "written no status for 16 min" in silent.reason
    assert not assess(SETTINGS, None, T0).falling_behind  # nothing to say of a stream never started here
    stuck = assess(SETTINGS, None, T0, started_ms=T0 - 20 * MINUTE)
    assert stuck.falling_behind and "no status in the 20 min since it started" in stuck.reason


def test_a_status_file_round_trips_and_a_foreign_one_is_named(tmp_path):
    path = status_path(tmp_path)
    assert read_status(path) is None
    written = status([5_000, 20])
    write_status(path, written)
    assert read_status(path) == written
    path.write_text('{"updated_ms": 1}')
    try:
        read_status(path)
        raise AssertionError("a foreign status was read")
    except ValueError as error:
        assert str(path) in str(error)


def test_falling_behind_warns_once_a_day_on_the_sinks_that_do_not_page_and_keeping_up_resolves_it(receiver,
                                                                                                 tmp_path):
    settings = Settings().model_copy(update={
        "loop": Settings().loop.model_copy(update={"alerts_file": tmp_path / "alerts.json"}),
        "join": SETTINGS.model_copy(update={"output_dir": tmp_path / "examples"})})
    sinks = [LogSink(), SlackSink(f"{receiver.url}/slack"), PagerDutySink("KEY", f"{receiver.url}/v2/enqueue")]
    write_status(status_path(settings.join.output_dir), status([5_000] * 30))
    behind = lag_of(settings, at_ms=T0)
    assert [d.sink for d in warn_if_behind(settings, behind, sinks, at_ms=T0)] == ["log", "slack"]
    assert warn_if_behind(settings, behind, sinks, at_ms=T0 + MINUTE) == []  # open already: not again
    (warning,) = receiver.bodies("/slack")
    assert warning["text"].startswith("[WARNING] the streaming join has been more than 1,000 records behind")
    assert receiver.bodies("/v2/enqueue") == []  # a lagging join pages no one
    write_status(status_path(settings.join.output_dir), status([5_000] * 30 + [10], T0 + 2 * MINUTE))
    caught_up = lag_of(settings, at_ms=T0 + 2 * MINUTE)
    assert [d.sink for d in warn_if_behind(settings, caught_up, sinks, at_ms=T0 + 2 * MINUTE)] == ["log", "slack"]
    assert receiver.bodies("/slack")[-1]["text"].startswith("[resolved] resolved: stream_lag passes on 2026-11-30")
    assert AlertBook(tmp_path / "alerts.json").open_alerts() == {}


def test_the_watch_of_a_running_stream_warns_when_its_status_stays_unreadable(receiver, tmp_path):
    """A status file that cannot be read for longer than the set time does not pass for keeping up."""
    import time

    from valueloop.stream_lag import LagWatch

    settings = Settings().model_copy(update={
        "loop": Settings().loop.model_copy(update={"alerts_file": tmp_path / "alerts.json"}),
        "join": SETTINGS.model_copy(update={"output_dir": tmp_path / "examples", "progress_log_s": 0.2,
                                            "lag_alert_after_s": 0.5})})
    path = status_path(settings.join.output_dir)
    path.parent.mkdir(parents=True)
    path.write_text("{torn")
    with LagWatch(settings, [SlackSink(f"{receiver.url}/slack")]):
        deadline = time.monotonic() + 10
        while not receiver.bodies("/slack") and time.monotonic() < deadline:
            time.sleep(0.1)
    (warning,) = receiver.bodies("/slack")
    assert "status has not been readable for" in warning["text"] and str(path) in warning["text"]
