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
