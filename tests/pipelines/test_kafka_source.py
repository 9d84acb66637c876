import pytest
from apache_beam.io.restriction_trackers import OffsetRange

from pipelines.kafka_source import _RunTracker


def test_a_run_claims_every_offset_up_to_its_last():
    tracker = _RunTracker(OffsetRange(0, 100))
    assert tracker.try_claim(49)
    assert tracker.try_claim(99)
    tracker.check_done()
    assert not tracker.try_claim(120)


def test_a_split_below_a_runs_end_leaves_the_run_the_offsets_before_the_split():
    tracker = _RunTracker(OffsetRange(0, 100))
    assert tracker.try_claim(9)
    primary, residual = tracker.try_split(0.5)  # the runner splits while offsets 10..79 are being read
    assert (primary.stop, residual.start) == (54, 54)
    assert tracker.try_claim(79)  # claims 10..53: the reader emits only records below the stop
    assert tracker.current_restriction().stop == 54
    tracker.check_done()
    assert not tracker.try_claim(80)  # the residual's offsets belong to whoever reads it


def test_claims_still_strictly_increase():
    tracker = _RunTracker(OffsetRange(0, 100))
    assert tracker.try_claim(10)
    with pytest.raises(ValueError, match="strictly increase"):
        tracker.try_claim(10)


def test_ranges_of_transactions_are_read_to_their_end_without_the_aborted_records(kafka_settings):
    """A transactional producer's commit marker takes an offset but holds no record: the last offsets of a
    snapshot range. The read ends there, with every committed record, instead of waiting for a record that never
    comes; an aborted transaction's record is left out."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines.kafka_source import ReadKafkaRanges, snapshot_ranges
    from tests.kafka_io.test_fetcher import send_in_transactions

    topic = kafka_settings.event_topics["Click"]
    send_in_transactions(kafka_settings, topic, [0, 1, 0, 1, 0], aborted={4}, transactional_id="source-test")
    ranges = snapshot_ranges(kafka_settings.bootstrap_servers, [topic])
    assert sorted((r.partition, r.stop) for r in ranges if r.stop) == [(0, 6), (1, 4)]
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        values = (pipeline
                  | ReadKafkaRanges(kafka_settings.bootstrap_servers, ranges, split_size=3, idle_timeout_s=5)
                  | beam.FlatMap(lambda chunk: [r[3] for r in chunk.records]))
        assert_that(values, equal_to([f"value {n}".encode() for n in range(4)]))
