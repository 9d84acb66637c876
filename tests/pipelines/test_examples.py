"""tf.Example serialization against TensorFlow's own parser, and the TFRecord framing against TFRecordDataset."""
from typing import List, Tuple

import apache_beam as beam
import pytest

from pipelines.examples import WriteExamples
from pipelines.partitions import partition_of
from pipelines.records import Revision
from pipelines.tf_example import _framed, _serialize_any, example_fields, serialize_example
from pipelines.labeling import label_user_events
from config.join import LabelConfig
from tests.pipelines.events import D, S, T0, click, impression, purchase


def sample_examples():
    events = [impression("a", T0), click("a", T0 + 5 * S), purchase("p", T0 + D, value=19.99),
              impression("b", T0 + 7, item="i2", position=1)]
    return label_user_events(events, LabelConfig(), T0 + 30 * D)


def test_serialized_examples_parse_as_tensorflows_with_every_field():
    from trainer.tf_runtime import tf

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
    from trainer.tf_runtime import tf

    (example, _) = sample_examples()[:2]
    odd = example._replace(position=-5, event_time_ms=2**62)
    parsed = tf.train.Example.FromString(serialize_example(odd))
    assert parsed.features.feature["position"].int64_list.value[0] == -5
    assert parsed.features.feature["event_time_ms"].int64_list.value[0] == 2**62


def test_the_compiled_writer_writes_the_general_writers_bytes_on_and_off_its_fast_paths():
    examples = sample_examples()
    first = examples[0]
    odd = [
        first._replace(impression_id="i" * 200, surface="é" * 70),  # lengths of two-byte varints
        first._replace(request_id="r" * 3000, policy="é" * 20_000),  # beyond the writer's first buffer
        first._replace(position=-5, event_time_ms=2**62, label_time_ms=0, dwell_ms=None, click_time_ms=None),
        first._replace(features={**first.features, "item_rating": None}),
        first._replace(features={**first.features, "campaign": "spring"}),  # a feature beyond the schema
        first._replace(features={k: v for k, v in first.features.items() if k != "device"}),
    ]
    for example in examples + odd:
        assert serialize_example(example) == _serialize_any(example)


def test_a_tuple_shorter_than_an_example_is_refused_by_name_pure_function():
    with pytest.raises(TypeError, match="not an Example: 5 fields"):
        serialize_example(tuple(sample_examples()[0])[:5])


def test_frames_carry_the_crc32c_that_the_crc32c_package_computes_pure_function():
    import struct

    from crc32c import crc32c

    from pipelines._tf_example import frame

    def masked(data):
        crc = crc32c(data)
        return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)

    records = [bytes(range(n)) for n in range(40)] + [b"x" * 100_003]  # every tail length, and a long one
    expected = b"".join(struct.pack("<Q", len(r)) + masked(struct.pack("<Q", len(r))) + r + masked(r) for r in records)
    assert frame(records) == expected and frame([]) == b""


def test_tfrecord_framing_reads_back(tmp_path):
    from trainer.tf_runtime import tf

    records = [serialize_example(e) for e in sample_examples()]
    path = tmp_path / "x.tfrecord"
    path.write_bytes(b"".join(_framed(r) for r in records))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records


def one_revision_batches():
    """Revisions as the label step batches them for the writer: (hour partition, [Revision]), one in each here."""
    return beam.Map(lambda change: (partition_of(change.example.event_time_ms), [change])).with_output_types(
        Tuple[str, List[Revision]])


def write_streaming(tmp_path, stream, horizon_ms: int):
    """Runs the streaming hour writer over a TestStream of Revisions; returns the directory of the hour of T0."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline


    from pipelines.partitions import partition_of

    options = PipelineOptions(flags=[])
    options.view_as(StandardOptions).streaming = True
    with BeamTestPipeline(runner="BundleBasedDirectRunner", options=options) as p:
        _ = (p | stream | "One-revision batches" >> one_revision_batches()
             | WriteExamples(str(tmp_path), {"test": True}, horizon_ms=horizon_ms, allowed_lateness_ms=D))
    return tmp_path / partition_of(T0)


def test_streaming_writer_rewrites_an_hour_whole_when_an_example_comes_after_it_was_written(tmp_path):
    import json

    import apache_beam as beam
    from apache_beam.testing.test_stream import TestStream as BeamTestStream
    from apache_beam.transforms.window import TimestampedValue


    first, second = sample_examples()[:2]  # impressions "a" and "b", both in the hour of T0
    horizon = LabelConfig().horizon_ms
    settle_ms = (T0 // 3_600_000 + 1) * 3_600_000 + horizon
    stream = (BeamTestStream(coder=beam.coders.registry.get_coder(Revision))
              .advance_watermark_to((T0 - 1) / 1000)
              .add_elements([TimestampedValue(Revision(first, 1), first.label_time_ms / 1000)])
              .advance_watermark_to((settle_ms + 1) / 1000)  # the hour is written with "a" alone
              .add_elements([TimestampedValue(Revision(second, 1), second.label_time_ms / 1000)])  # "b" comes after
              .advance_watermark_to((settle_ms + 2) / 1000)
              .advance_watermark_to_infinity())
    hour = write_streaming(tmp_path, stream, horizon)
    manifest = json.loads((hour / "_manifest.json").read_text())
    assert manifest["examples"] == 2 and manifest["revision"] == 2
    expected = b"".join(_framed(serialize_example(e)) for e in sorted((first, second), key=lambda e: e.impression_id))
    assert (hour / "examples.tfrecord").read_bytes() == expected


def test_streaming_writer_keeps_the_newest_revision_of_each_example_and_leaves_out_the_withdrawn(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.test_stream import TestStream as BeamTestStream
    from apache_beam.transforms.window import TimestampedValue

    from pipelines.tf_example import read_records

    first, second = sample_examples()[:2]  # "a" bought, "b" not; both in the hour of T0
    bought_later = first._replace(purchased=False, purchase_value=0.0)  # what "a" said before its purchase came
    correction = first._replace(is_correction=True, label_time_ms=first.label_time_ms + 1)
    horizon = LabelConfig().horizon_ms
    settle_ms = (T0 // 3_600_000 + 1) * 3_600_000 + horizon

    def at(change, ms):
        return TimestampedValue(change, ms / 1000)

    stream = (BeamTestStream(coder=beam.coders.registry.get_coder(Revision))
              .advance_watermark_to((T0 - 1) / 1000)
              .add_elements([at(Revision(first, 2), T0), at(Revision(correction, 1), T0), at(Revision(second, 1), T0)])
              # an older revision delivered after the newer one: the version decides, not the arrival
              .add_elements([at(Revision(bought_later, 1), T0)])
              .advance_watermark_to((settle_ms + 1) / 1000)
              .add_elements([at(Revision(correction, 3, withdrawn=True), settle_ms)])  # taken back after the write
              .advance_watermark_to((settle_ms + 2) / 1000)
              .advance_watermark_to_infinity())
    hour = write_streaming(tmp_path, stream, horizon)
    assert read_records(hour / "examples.tfrecord") == [serialize_example(first), serialize_example(second)]


@pytest.mark.parametrize("runner", ["BundleBasedDirectRunner", "flink"])
def test_streaming_writer_writes_an_hour_whose_settling_and_expiry_the_watermark_passes_at_once(tmp_path, runner):
    """Flink fires a key's due timers in no particular order: an expiry ran before the write it should follow."""
    import json
    import pickle

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_stream import TestStream as BeamTestStream
    from apache_beam.transforms.window import TimestampedValue


    from pipelines.partitions import partition_of
    from pipelines.flink import flink_pipeline_options

    first, second = sample_examples()[:2]
    horizon = LabelConfig().horizon_ms
    # Pickled, since Flink runs the TestStream in Java, which knows only Beam's standard coders.
    stream = (BeamTestStream(coder=beam.coders.BytesCoder())
              .advance_watermark_to((T0 - 1) / 1000)
              .add_elements([TimestampedValue(pickle.dumps(Revision(e, 1)), e.label_time_ms / 1000)
                             for e in (first, second)])
              .advance_watermark_to_infinity())  # past the hour's settle time and its expiry in one step
    options = (flink_pipeline_options(streaming=True) if runner == "flink"
               else PipelineOptions(flags=[], runner=runner, streaming=True))
    with beam.Pipeline(options=options) as p:
        _ = (p | stream.with_output_types(bytes) | beam.Map(pickle.loads).with_output_types(Revision)
             | "One-revision batches" >> one_revision_batches()
             | WriteExamples(str(tmp_path), {"test": True}, horizon_ms=horizon, allowed_lateness_ms=D))
    manifest = json.loads((tmp_path / partition_of(T0) / "_manifest.json").read_text())
    assert (manifest["examples"], manifest["revision"]) == (2, 1)


def test_examples_read_back_from_their_bytes_without_tensorflow():
    from pipelines.tf_example import parse_example_fields

    for example in sample_examples():
        expected = example_fields(example)
        got = parse_example_fields(serialize_example(example))
        assert set(got) == set(expected)
        for name, value in expected.items():
            assert got[name] == (pytest.approx(value, rel=1e-6) if isinstance(value, float) else
                                 (int(value) if isinstance(value, bool) else value))


def test_a_partition_written_again_keeps_what_it_held_and_never_shrinks(tmp_path):
    import json

    from pipelines.partitions import write_partition

    from pipelines.tf_example import read_records

    first, second = sample_examples()[:2]
    write_partition(tmp_path / "whole", "dt=x/hour=00", [first, second], {"s": 1})
    write_partition(tmp_path / "late", "dt=x/hour=00", [first], {"s": 1})
    manifest, _ = write_partition(tmp_path / "late", "dt=x/hour=00", [second], {"s": 1}, keep_written=True)
    assert manifest["examples"] == 2 and manifest["revision"] == 2
    whole, late = (read_records(tmp_path / d / "dt=x/hour=00" / "examples.tfrecord") for d in ("whole", "late"))
    assert late == whole
    again, _ = write_partition(tmp_path / "late", "dt=x/hour=00", [second], {"s": 1}, keep_written=True)
    assert again["examples"] == 2 and json.loads((tmp_path / "late/dt=x/hour=00/_manifest.json").read_text())["revision"] == 3


def test_a_stream_resumes_at_the_first_hour_missing_after_the_oldest_partition(tmp_path):
    from pipelines.partitions import partition_of, resume_hour_ms, write_partition

    assert resume_hour_ms(tmp_path) is None
    (example, _) = sample_examples()[:2]
    hour = example.event_time_ms // 3_600_000 * 3_600_000
    for offset in (0, 1, 2, 3):
        write_partition(tmp_path, partition_of(hour + offset * 3_600_000), [example], {"s": 1})
    (tmp_path / partition_of(hour + 4 * 3_600_000)).mkdir(parents=True)  # no manifest: not complete
    assert resume_hour_ms(tmp_path) == hour + 4 * 3_600_000
    write_partition(tmp_path, partition_of(hour + 6 * 3_600_000), [example], {"s": 1})  # written before hour 4
    assert resume_hour_ms(tmp_path) == hour + 4 * 3_600_000
    write_partition(tmp_path, partition_of(hour + 4 * 3_600_000), [example], {"s": 1})
    write_partition(tmp_path, partition_of(hour + 5 * 3_600_000), [example], {"s": 1})
    assert resume_hour_ms(tmp_path) == hour + 7 * 3_600_000
