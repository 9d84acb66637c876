from pipelines.decode import EventTimeStamps, RecordClock
from pipelines.join import _NewestHonestTime, _OldestOfNewest
from pipelines.records import KafkaChunk
from schemas import EventEncoder
from tests.pipelines.events import H, S, T0, click

TOPICS = {"clicks": "Click"}


def test_the_bounded_watermark_is_the_oldest_of_the_partitions_newest_record_times_pure_function():
    fn = _OldestOfNewest()
    first = fn.create_accumulator()
    for sample in (("clicks", 0, 50), ("clicks", 0, 900), ("clicks", 1, 300), ("clicks", 0, 100)):
        first = fn.add_input(first, sample)
    second = fn.add_input(fn.add_input(fn.create_accumulator(), ("clicks", 1, 700)), ("clicks", 1, 200))
    third = fn.add_input(fn.create_accumulator(), ("impressions", 0, 650))
    merged = fn.merge_accumulators([first, second, third])
    assert merged == {("clicks", 0): 900, ("clicks", 1): 700, ("impressions", 0): 650}
    assert fn.extract_output(merged) == 650  # the partition furthest behind holds the watermark back


def _newest_honest(records, fixed_ms=T0 + 10 * H):
    fn = _NewestHonestTime(TOPICS, RecordClock(H, fixed_ms))
    fn.setup()
    return list(fn.process(KafkaChunk("clicks", 0, records)))


def test_dead_letters_and_records_stamped_past_the_clock_move_no_watermark_pure_function():
    encode = EventEncoder().encode
    valid = [(0, T0 + 5 * S, b"u1", encode(*click("a", T0))), (1, T0 + 9 * S, b"u1", encode(*click("b", T0 + S)))]
    assert _newest_honest(valid) == [("clicks", 0, T0 + 9 * S)]
    garbage_later = valid + [(2, T0 + 2 * H, b"u1", b"not avro"), (3, T0 + 3 * H, None, None)]
    assert _newest_honest(garbage_later) == [("clicks", 0, T0 + 9 * S)]
    year_ahead = T0 + 365 * 24 * H
    stamped_ahead = valid + [(4, year_ahead, b"u1", encode(*click("c", year_ahead)))]
    assert _newest_honest(stamped_ahead) == [("clicks", 0, T0 + 9 * S)]
    assert _newest_honest([(0, T0, b"u1", b"junk")]) == []


def test_event_time_stamps_follow_the_partitions_newest_plausible_event_time_pure_function():
    encode = EventEncoder().encode
    replayed_at = T0 + 300 * 24 * H  # a replay stamps every record with the time it sends it
    stamps = EventTimeStamps(RecordClock(H, replayed_at))
    first = stamps([(0, replayed_at, b"u1", b"junk"),
                    (1, replayed_at, b"u1", encode(*click("a", T0 + 10 * S))),
                    (2, replayed_at, b"u1", encode(*click("b", T0 + 4 * S)))])
    assert [r[1] for r in first] == [replayed_at, T0 + 10 * S, T0 + 10 * S]
    assert [r[0] for r in first] == [0, 1, 2] and first[1][3] == encode(*click("a", T0 + 10 * S))
    # The frontier carries over to the next chunk; an event time past the clock does not move it.
    second = stamps([(3, replayed_at, b"u1", encode(*click("c", replayed_at + 5 * H))),
                     (4, replayed_at, b"u1", encode(*click("d", T0 + 20 * S)))])
    assert [r[1] for r in second] == [T0 + 10 * S, T0 + 20 * S]
