"""The drift audit on simulated windows written as the join's partitions (`valueloop label`'s file path) and read
back through TensorFlow: no drift passes, a traffic mix alone warns, clickbait blocks and says where, a fresh
window still converting does not block while raw rates would, a tiny window is inconclusive."""
import numpy as np
import pytest

from audit.drift import Status, audit_windows
from audit.stattests import Rate, run_test
from audit.windows import Window, WindowError, load_window
from pipelines.label_files import label_events, write_examples
from config.join import LabelConfig
from schemas.units import DAY_MS
from simulator import Simulation, SimulatorConfig, World

LABELS = LabelConfig(click_window_s=1800, cart_window_s=3600, purchase_window_s=2 * 86400)
BASE = {"requests": 24_000, "days": 3.0, "catalogue": {"users": 3_000, "items": 400}}


WORLD = World.create(SimulatorConfig.model_validate({**BASE, "seed": 1}))  # one world; each window its own traffic


def window(tmp_path_factory, name: str, seed: int, fresh: bool = False, **changes) -> Window:
    """The first simulated day of a world's traffic. Settled, it holds every conversion of the two days after it;
    `fresh`, it is audited at its own end, when the conversions after that have not come yet."""
    config = SimulatorConfig.model_validate({**BASE, "seed": seed, **changes})
    events = [(e.name, e.datum) for e in Simulation(config, world=WORLD).events()]
    examples = label_events(events, LABELS, watermark_ms=config.end_ms + 10 * DAY_MS)
    out = tmp_path_factory.mktemp(name)
    write_examples(examples, out, {"scenario": name})
    day_end = config.start_ms + DAY_MS
    return load_window(out, config.start_ms, day_end, now_ms=day_end if fresh else None, name=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return window(tmp_path_factory, "reference", seed=1)


def test_no_drift_passes(reference, tmp_path_factory):
    verdict = audit_windows(reference, window(tmp_path_factory, "same", seed=2))
    assert verdict.status in (Status.PASS, Status.WARN) and verdict.status.exit_code == 0, verdict.reasons
    assert not any("clickbait" in reason for reason in verdict.reasons)


def test_a_shift_in_traffic_mix_alone_warns_without_blocking(reference, tmp_path_factory):
    current = window(tmp_path_factory, "mix", seed=3, surfaces={"home_feed": 0.3, "search": 0.55, "related": 0.15},
                     devices={"mobile": 0.8, "desktop": 0.1, "app": 0.1})
    verdict = audit_windows(reference, current)
    assert verdict.status is Status.WARN, verdict.reasons
    assert any(reason.startswith(("mix.surface.all", "mix.device.all")) for reason in verdict.reasons)


def test_a_policy_that_shows_more_bait_blocks_naming_the_signature(reference, tmp_path_factory):
    current = window(tmp_path_factory, "bait", seed=4, logging_policy={"headline_weight": 6.0})
    verdict = audit_windows(reference, current)
    assert verdict.status is Status.BLOCK and verdict.status.exit_code == 1
    assert any(reason.startswith("clickbait signature in all: CTR +") for reason in verdict.reasons), verdict.reasons


def test_the_same_shift_confined_to_one_surface_blocks_and_names_it(reference, tmp_path_factory):
    current = window(tmp_path_factory, "bait_search", seed=5,
                     logging_policy={"headline_weight_by_surface": {"search": 8.0}})
    verdict = audit_windows(reference, current)
    assert verdict.status is Status.BLOCK
    assert any(reason.startswith("clickbait signature in surface=search") for reason in verdict.reasons), \
        verdict.reasons
    assert not any("surface=home_feed" in reason for reason in verdict.reasons)


def test_a_fresh_window_still_converting_does_not_block_where_raw_rates_would(reference, tmp_path_factory):
    fresh = window(tmp_path_factory, "fresh", seed=6, fresh=True)
    verdict = audit_windows(reference, fresh)
    assert verdict.status is not Status.BLOCK, verdict.reasons
    purchased = lambda w: Rate(int((w.arrived("purchase_time_ms") >= 0).sum()), w.size)  # noqa: E731
    raw = run_test("two_proportion", purchased(reference), purchased(fresh), threshold=0.0005)
    assert raw.drifted is True and raw.effect < 0  # raw purchases per impression: a drop that is not there


def test_an_empty_or_tiny_window_is_inconclusive_and_bad_input_is_refused(reference, tmp_path_factory, tmp_path):
    tiny = window(tmp_path_factory, "tiny", seed=7, requests=300)
    assert audit_windows(reference, tiny).status is Status.INCONCLUSIVE
    assert audit_windows(reference, tiny).status.exit_code == 2
    empty = Window({name: np.array([]) for name in reference.columns}, name="empty")
    assert audit_windows(reference, empty).status is Status.INCONCLUSIVE
    broken = dict(reference.columns, dwell_ms=np.where(np.arange(reference.size) == 3, np.nan,
                                                       reference.columns["dwell_ms"].astype(float)))
    with pytest.raises(WindowError, match="1 NaN values in dwell_ms"):
        Window(broken, name="broken")
    with pytest.raises(WindowError, match="no column purchase_time_ms: the audit reads LabeledExample v2"):
        Window({k: v for k, v in reference.columns.items() if k != "purchase_time_ms"}, name="v1")
    with pytest.raises(WindowError, match="missing"):
        load_window(tmp_path / "missing", None, None, name="missing")


def test_a_small_seeded_calibration_blocks_no_pair_without_drift():
    """The suite's part of `valueloop bench audit-calibration` (100 pairs, recorded in bench/results)."""
    from bench.audit_calibration import calibrate

    summary = calibrate(pairs=4, first_seed=500)["summary"]
    assert summary["statuses"].get("block", 0) == 0, summary


def joined_window(kafka_broker, tmp_path_factory, name: str, seed: int, **changes) -> Window:
    """The first simulated day of a seeded traffic sent through the real broker and joined by the bounded join."""
    from pipelines.run import run_bounded_join
    from config.join import JoinSettings
    from simulator.sinks import KafkaSink
    from tests.conftest import _own_topics

    kafka = _own_topics(kafka_broker)
    config = SimulatorConfig.model_validate({**BASE, "seed": seed, **changes})
    with KafkaSink(kafka) as sink:
        sink.write(Simulation(config, world=WORLD).events())
    out = tmp_path_factory.mktemp(name)
    result = run_bounded_join(kafka, JoinSettings(labels=LABELS, output_dir=out))
    assert len(result.manifests) > 20
    # The same hours from both runs: the join settles the first day up to its last hours.
    return load_window(out, config.start_ms, config.start_ms + 20 * 3_600_000, name=name)


def test_through_the_broker_and_the_join_a_bait_loving_policy_blocks_and_the_same_policy_passes(
        kafka_broker, tmp_path_factory):
    reference = joined_window(kafka_broker, tmp_path_factory, "joined_reference", seed=1)
    same = joined_window(kafka_broker, tmp_path_factory, "joined_same", seed=2)
    assert audit_windows(reference, same).status.exit_code == 0
    bait = joined_window(kafka_broker, tmp_path_factory, "joined_bait", seed=4, logging_policy={"headline_weight": 6.0})
    verdict = audit_windows(reference, bait)
    assert verdict.status is Status.BLOCK
    assert any(reason.startswith("clickbait signature in all") for reason in verdict.reasons), verdict.reasons
