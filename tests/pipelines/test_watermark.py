from pipelines.join import _OldestOfNewest
from pipelines.records import KafkaChunk


def _chunk(topic, partition, *times):
    return KafkaChunk(topic, partition, [(offset, t, b"u", b"") for offset, t in enumerate(times)])


def test_the_bounded_watermark_is_the_oldest_of_the_partitions_newest_record_times_pure_function():
    fn = _OldestOfNewest()
    first = fn.create_accumulator()
    for chunk in (_chunk("clicks", 0, 50, 900, 40), _chunk("clicks", 1, 300), _chunk("clicks", 0, 100)):
        first = fn.add_input(first, chunk)
    second = fn.add_input(fn.create_accumulator(), _chunk("clicks", 1, 700, 200))
    third = fn.add_input(fn.create_accumulator(), _chunk("impressions", 0, 650))
    merged = fn.merge_accumulators([first, second, third])
    assert merged == {("clicks", 0): 900, ("clicks", 1): 700, ("impressions", 0): 650}
    assert fn.extract_output(merged) == 650  # the partition furthest behind holds the watermark back
