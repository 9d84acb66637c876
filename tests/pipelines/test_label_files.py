"""Labeling the simulator's Avro files in one process: the same examples as labeling the events in memory."""
import json

import pytest

from pipelines.partitions import MANIFEST_FILE, partition_of
from pipelines.label_files import BadEventFileError, label_events, label_files, read_events
from config.join import LabelConfig
from pipelines.reference_labeler import reference_labels
from simulator import Simulation, SimulatorConfig
from config.simulator import CatalogueConfig
from simulator.sinks import AvroFileSink

CONFIG = SimulatorConfig(seed=5, requests=600, days=1.0, catalogue=CatalogueConfig(users=200, items=80))
LABELS = LabelConfig(purchase_window_s=4 * 3600.0)


def test_files_label_like_the_reference_labeler_and_write_one_partition_per_hour(tmp_path):
    events = [(e.name, e.datum) for e in Simulation(CONFIG).events()]
    with AvroFileSink(tmp_path / "sim") as sink:
        sink.write(Simulation(CONFIG).events())
    manifests = label_files(tmp_path / "sim", tmp_path / "examples", LABELS)

    watermark = max(d["event_time_ms"] for _, d in events)
    expected = reference_labels(events, LABELS.click_window_ms, LABELS.cart_window_ms, LABELS.purchase_window_ms,
                                watermark)
    assert sum(m["examples"] for m in manifests) == len(expected) > 1000
    assert sum(m["labels"]["purchased"] for m in manifests) == sum(v["purchased"] for v in expected.values())
    assert sum(m["labels"]["clicked"] for m in manifests) == sum(v["clicked"] for v in expected.values())
    examples = label_events(read_events(tmp_path / "sim"), LABELS)
    assert {e.impression_id for e in examples} == set(expected)
    hours = {partition_of(e.event_time_ms) for e in examples}
    assert {m["partition"] for m in manifests} == hours
    for hour in hours:
        manifest = json.loads((tmp_path / "examples" / hour / MANIFEST_FILE).read_text())
        assert manifest["watermark_ms"] == watermark


def test_a_directory_without_event_files_says_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="valueloop simulate --to files"):
        list(read_events(tmp_path))


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_event_file_is_named_with_how_far_it_was_read(tmp_path, damage):
    with AvroFileSink(tmp_path / "sim") as sink:
        sink.write(Simulation(CONFIG).events())
    clicks = tmp_path / "sim" / "click.avro"
    data = clicks.read_bytes()
    clicks.write_bytes(data[: len(data) * 2 // 3] if damage == "truncated" else b"not an avro file" * 64)
    with pytest.raises(BadEventFileError, match=r"click\.avro: unreadable after [\d,]+ Click records"):
        list(read_events(tmp_path / "sim"))
