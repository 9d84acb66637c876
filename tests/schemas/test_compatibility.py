import copy
import json

import pytest

from schemas import EventDecoder, EventEncoder, default_registry
from schemas.compatibility import check_registry, incompatibilities
from schemas.registry import SchemaRegistry
from tests.schemas.test_codec import CLICK, PRODUCED_MS, impression

REGISTRY = default_registry()
ALL_VERSIONS = [v for name in REGISTRY.names for v in REGISTRY.versions(name)]


def test_every_record_of_the_contract_is_kept():
    assert set(REGISTRY.names) >= {"Impression", "Click", "Dwell", "AddToCart", "Purchase", "LabeledExample",
                                   "ServedRequest"}


def test_kept_versions_are_fully_transitively_compatible():
    assert check_registry(REGISTRY) == []


SAMPLES = {
    "Impression": impression(),
    "Click": CLICK,
    "Dwell": {**CLICK, "dwell_ms": 1200},
    "AddToCart": {"event_id": "a", "user_id": "u", "item_id": "i", "event_time_ms": CLICK["event_time_ms"], "quantity": 1, "value": 2.5},
    "Purchase": {"event_id": "p", "order_id": "o", "user_id": "u", "item_id": "i", "event_time_ms": CLICK["event_time_ms"],
                 "quantity": 2, "value": 5.0},
    "ServedRequest": {"request_id": "r", "user_id": "u", "surface": "search", "event_time_ms": CLICK["event_time_ms"],
                      "policy": "p", "candidates": ["i", "j"], "shown": [1], "propensities": [0.5],
                      "feature_snapshot": "v"},
}


@pytest.mark.parametrize("version", [v for v in ALL_VERSIONS if v.short_name in SAMPLES], ids=lambda v: v.path.name)
def test_every_kept_version_decodes_under_the_current_reader(version):
    written = {f["name"]: SAMPLES[version.short_name][f["name"]] for f in version.raw["fields"]}
    if version.short_name == "Impression":
        kept_features = {f["name"] for f in version.raw["fields"][-1]["type"]["fields"]}
        written["features"] = {k: v for k, v in written["features"].items() if k in kept_features}
    raw = EventEncoder().encode(version.short_name, written, version=version.version)
    event = EventDecoder().decode(raw, "t", 0, 0, PRODUCED_MS)
    latest = REGISTRY.latest(version.short_name)
    assert set(event.datum) == {f["name"] for f in latest.raw["fields"]}
    if version.short_name == "Impression" and version.version == 1:
        assert event.datum["features"]["device"] == "unknown"  # the v2 default fills what v1 never wrote


def _with_new_version(tmp_path, name: str, change) -> SchemaRegistry:
    for version in ALL_VERSIONS:
        (tmp_path / version.path.name).write_text(version.path.read_text())
    latest = REGISTRY.latest(name)
    candidate = copy.deepcopy(latest.raw)
    change(candidate)
    stem = latest.path.name.split(".")[0]
    (tmp_path / f"{stem}.v{latest.version + 1}.avsc").write_text(json.dumps(candidate))
    return SchemaRegistry(tmp_path)


def test_a_new_field_without_default_is_caught(tmp_path):
    registry = _with_new_version(tmp_path, "Click", lambda s: s["fields"].append({"name": "session_id", "type": "string"}))
    problems = check_registry(registry)
    assert problems == ["Click v2 reading v1: Click.session_id: the reader's field has no default and the writer does not write it"]


def test_a_new_field_with_default_passes(tmp_path):
    registry = _with_new_version(tmp_path, "Click",
                                 lambda s: s["fields"].append({"name": "session_id", "type": "string", "default": ""}))
    assert check_registry(registry) == []


def test_removing_a_field_old_readers_need_is_caught(tmp_path):
    registry = _with_new_version(tmp_path, "Dwell", lambda s: s["fields"].pop())  # dwell_ms, no default in v1
    assert any(p.startswith("Dwell v1 reading v2: Dwell.dwell_ms") for p in check_registry(registry))


def test_narrowing_a_type_is_caught_and_widening_is_one_way(tmp_path):
    def widen(s):
        next(f for f in s["fields"] if f["name"] == "quantity")["type"] = "long"

    problems = check_registry(_with_new_version(tmp_path, "Purchase", widen))
    assert problems == ["Purchase v1 reading v2: Purchase.quantity: the reader's int cannot read the writer's long"]


def test_nested_record_changes_are_checked():
    old, new = REGISTRY.versions("Impression")[0].raw, copy.deepcopy(REGISTRY.latest("Impression").raw)
    new["fields"][-1]["type"]["fields"].append({"name": "ab_bucket", "type": "int"})
    assert incompatibilities(new, old, "Impression") == [
        "Impression.features.ab_bucket: the reader's field has no default and the writer does not write it"]


def test_union_branches_must_all_be_readable():
    assert incompatibilities("long", ["null", "long"]) == ["<root>|null: the reader's long cannot read the writer's null"]
    assert incompatibilities(["null", "long"], "int") == []


def test_version_numbers_without_gaps(tmp_path):
    (tmp_path / "click.v2.avsc").write_text(REGISTRY.latest("Click").path.read_text())
    with pytest.raises(ValueError, match="not 1..N"):
        SchemaRegistry(tmp_path)
