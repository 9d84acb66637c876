"""tf.Example serialization against TensorFlow's own parser, and the TFRecord framing against TFRecordDataset."""
import pytest

from pipelines.examples import _framed, example_fields, serialize_example
from pipelines.labeling import LabelConfig, label_user_events
from tests.pipelines.events import D, S, T0, click, impression, purchase


def sample_examples():
    events = [impression("a", T0), click("a", T0 + 5 * S), purchase("p", T0 + D, value=19.99),
              impression("b", T0 + 7, item="i2", position=1)]
    return label_user_events(events, LabelConfig(), T0 + 30 * D)


def test_serialized_examples_parse_as_tensorflows_with_every_field():
    import tensorflow as tf

    for example in sample_examples():
        parsed = tf.train.Example.FromString(serialize_example(example))
        expected = example_fields(example)
        assert set(parsed.features.feature) == set(expected)
        for name, value in expected.items():
            feature = parsed.features.feature[name]
            kind = feature.WhichOneof("kind")
            (got,) = getattr(feature, kind).value
            if kind == "bytes_list":
                assert got.decode() == value
            elif kind == "float_list":
                assert got == pytest.approx(value, rel=1e-6)
            else:
                assert got == int(value)


def test_negative_and_large_integers_round_trip():
    import tensorflow as tf

    (example, _) = sample_examples()[:2]
    odd = example._replace(position=-5, event_time_ms=2**62)
    parsed = tf.train.Example.FromString(serialize_example(odd))
    assert parsed.features.feature["position"].int64_list.value[0] == -5
    assert parsed.features.feature["event_time_ms"].int64_list.value[0] == 2**62


def test_tfrecord_framing_reads_back(tmp_path):
    import tensorflow as tf

    records = [serialize_example(e) for e in sample_examples()]
    path = tmp_path / "x.tfrecord"
    path.write_bytes(b"".join(_framed(r) for r in records))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records
