"""The serving log through the broker: the simulator's ServedRequests landed by the hour, each request once, what
is not a weighable served request in the dead letters, and the landed log assembled for the gate."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer

from pipelines.run import land_serving_log
from pipelines.serving_log import landed_manifests, read_landed
from schemas import EventDecoder, EventEncoder
from schemas.codec import BadEventError, Reason
from schemas.units import HOUR_MS
from serving.log import FeatureStore, FeatureTables, assemble
from simulator import Simulation, SimulatorConfig
from simulator.sinks import KafkaSink
from tests.conftest import _own_topics, read_dead_letters

from config.join import JoinSettings

SERVED = {"request_id": "req-1", "user_id": "u0000003", "surface": "search", "event_time_ms": 1_793_000_000_000,
          "policy": "p", "candidates": ["i000001", "i000004", "i000002"], "shown": [1, 2],
          "propensities": [0.5, 0.25], "feature_snapshot": "v"}


@pytest.mark.parametrize("change,problem", [
    ({"shown": [1, 3]}, "shown index 3 is outside the 3 candidates"),
    ({"shown": [1, 1]}, "shown repeats a candidate"),
    ({"propensities": [0.5]}, "1 propensities for 2 shown slots"),
    ({"propensities": [0.5, 0.0]}, "propensity 0.0 is outside (0, 1]"),
    ({"candidates": ["i000001", "i000001", "i000002"]}, "candidates lists an item twice"),
    ({"shown": [], "propensities": []}, "shown is empty"),
])
def test_a_served_request_whose_slate_cannot_be_weighed_is_invalid_and_says_why(change, problem):
    decoder = EventDecoder()
    assert decoder.decode(EventEncoder().encode("ServedRequest", SERVED), "t", 0, 0, SERVED["event_time_ms"]).name \
        == "ServedRequest"
    with pytest.raises(BadEventError) as raised:
        decoder.decode(EventEncoder().encode("ServedRequest", {**SERVED, **change}), "t", 0, 7,
                       SERVED["event_time_ms"])
    assert raised.value.reason is Reason.INVALID_VALUE and raised.value.offset == 7
    assert raised.value.detail == f"ServedRequest: {problem}"


def _tables(users: int = 5, items: int = 6) -> FeatureTables:
    rng = np.random.default_rng(0)
    return FeatureTables(["home_feed", "search"], ["mobile"], item_category=rng.integers(0, 3, items),
                         item_headline_score=rng.random(items), item_price=rng.random(items),
                         item_published_ms=np.zeros(items, np.int64), item_rating=rng.random(items),
                         user_affinity=rng.random((users, 3)), user_device=np.zeros(users, np.int64),
                         user_tenure_days=np.ones(users, np.int64))


def test_the_feature_store_keeps_tables_by_their_digest_and_refuses_a_file_that_does_not_match(tmp_path):
    store = FeatureStore(tmp_path)
    tables = _tables()
    version = store.put(tables)
    assert store.put(tables) == version and len(list(tmp_path.iterdir())) == 1
    again = store.get(version)
    assert again.version == version and again.surfaces == tables.surfaces
    assert np.array_equal(again.user_affinity, tables.user_affinity)
    other = store.put(_tables(users=6))
    assert other != version
    store.path(other).replace(store.path(version))
    with pytest.raises(ValueError, match="digest"):
        store.get(version)
    with pytest.raises(FileNotFoundError, match="not in the feature store"):
        store.get("0" * 20)


def test_assemble_keeps_the_most_served_policys_labeled_requests_of_the_common_shape_pure_function():
    tables = _tables()
    requests = [{**SERVED, "request_id": f"req-{k}"} for k in range(4)]
    requests.append({**SERVED, "request_id": "req-other", "policy": "q"})
    requests.append({**SERVED, "request_id": "req-short", "shown": [1], "propensities": [0.5]})
    outcomes = {(f"req-{k}", slot): (k == 1, k == 1 and slot == 0) for k in range(3) for slot in range(2)}
    outcomes[("req-short", 0)] = (False, False)
    assembled = assemble(requests, tables, outcomes)
    assert (assembled.kept, assembled.other_policies, assembled.other_shapes, assembled.unlabeled) == \
        (3, {"q": 1}, 1, 1)  # req-3 has no labeled impressions yet
    log = assembled.log
    assert log.policy == "p" and log.users.tolist() == [3, 3, 3] and log.surfaces.tolist() == [1, 1, 1]
    assert log.candidates.tolist() == [[1, 4, 2]] * 3 and log.order.tolist() == [[1, 2]] * 3
    assert log.clicked.tolist() == [[False, False], [True, True], [False, False]]
    assert log.bought.tolist() == [[False, False], [True, False], [False, False]]
    with pytest.raises(ValueError, match="user ids outside"):
        assemble([{**SERVED, "user_id": "u0000099"}], tables, {("req-1", 0): (0, 0), ("req-1", 1): (0, 0)})


def _digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_the_hours_of_the_serving_log_land_each_request_once_and_dead_letter_the_rest(kafka_broker, tmp_path):
    kafka = _own_topics(kafka_broker)
    config = SimulatorConfig.model_validate({"requests": 400, "days": 3 / 24, "seed": 3,
                                             "catalogue": {"users": 1_500, "items": 200}})
    simulation = Simulation(config)
    with KafkaSink(kafka) as sink:
        sent = sink.write(simulation.traffic())
    assert sent["ServedRequest"] == simulation.summary.served_requests == 400
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    again = EventEncoder().encode("ServedRequest", {**SERVED, "request_id": "req-000000000",
                                                     "event_time_ms": config.start_ms + 5})
    for value, at in ((b"\xc3\x01garbage", config.start_ms + 10), (again, config.end_ms - 1)):
        producer.produce(kafka.serving_log_topic, value, key=b"u0000003", timestamp=at)
    assert producer.flush(30) == 0

    join = JoinSettings(serving_log_dir=tmp_path / "landed")
    landed = land_serving_log(kafka, join, config.start_ms, config.start_ms + 3 * HOUR_MS)
    assert [m["partition"] for m in landed.manifests] == ["dt=2026-11-01/hour=00", "dt=2026-11-01/hour=01",
                                                          "dt=2026-11-01/hour=02"]
    assert landed.requests == 400 and landed.dead_letters == 1
    assert landed.manifests[0]["duplicates"] == 1  # the later req-000000000 is left out, the first kept
    requests = read_landed(tmp_path / "landed", config.start_ms, config.start_ms + 3 * HOUR_MS)
    assert len({r["request_id"] for r in requests}) == len(requests) == 400
    first = next(r for r in requests if r["request_id"] == "req-000000000")
    assert first["policy"] != "p" and first["feature_snapshot"] == simulation.feature_tables.version
    before = _digest(tmp_path / "landed")
    assert land_serving_log(kafka, join, config.start_ms, config.start_ms + 3 * HOUR_MS).requests == 400
    assert _digest(tmp_path / "landed") == before
    letters = read_dead_letters(kafka)
    assert [dict(m.headers)["reason"] for m in letters] == [b"not_single_object"]  # once, after two runs
    assert landed_manifests(tmp_path / "landed", config.start_ms + HOUR_MS, config.start_ms + 2 * HOUR_MS) == \
        [landed.manifests[1]]


def test_a_day_landed_in_part_or_with_nothing_labeled_stops_the_audit_rather_than_judge(tmp_path):
    """The gate's serving log of a landed day: none at all without landed hours; an error, never a partial or
    empty log, when only some hours are landed or when no request can be weighed (no labeled examples)."""
    from config import Settings
    from pipelines.partitions import partition_of
    from pipelines.serving_log import write_hour
    from valueloop.loop import ServingLogIncomplete, day_range, serving_log

    settings = Settings.model_validate({
        "join": {"output_dir": str(tmp_path / "examples"), "serving_log_dir": str(tmp_path / "landed")},
        "loop": {"work_dir": str(tmp_path / "work"), "feature_store": str(tmp_path / "features")}})
    (tmp_path / "examples").mkdir()
    day = "2026-11-02"
    start, end = day_range(day)
    assert serving_log(settings, day) is None  # nothing landed: no serving log, and the checks do not run
    version = FeatureStore(tmp_path / "features").put(_tables())
    served = {**SERVED, "event_time_ms": start + 1_000, "feature_snapshot": version}
    source = {"ranges": [], "ranges_digest": "test"}
    write_hour(tmp_path / "landed", partition_of(start), [served], source)
    with pytest.raises(ServingLogIncomplete, match="landed for 1 of its 24 hours"):
        serving_log(settings, day)
    for hour in range(start + HOUR_MS, end, HOUR_MS):
        write_hour(tmp_path / "landed", partition_of(hour), [], source)
    with pytest.raises(ServingLogIncomplete, match="none of its 1 landed requests has every shown slot labeled"):
        serving_log(settings, day)
