"""The element types that flow between the pipeline's steps, with compact coders (no pickling per element)."""
from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
from apache_beam.coders import FastPrimitivesCoder


class KafkaRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int  # the record timestamp: when the producer delivered it
    key: bytes | None
    value: bytes | None


class KafkaChunk(NamedTuple):
    """Consecutive records of one partition, read together: the bounded join's unit of work."""

    topic: str
    partition: int
    records: list  # (offset, timestamp_ms, key, value) tuples, in offset order


class PackedChunk(NamedTuple):
    """A KafkaChunk's records packed into one bytes object (`kafka_io._records.pack_records`): what the grouping
    by user carries. A runner encodes and decodes every value of a grouping at each of its steps (the FnApiRunner
    four times); for one bytes object per chunk that is a copy, not four values per record."""

    topic: str
    partition: int
    packed: bytes


class DecodedEvent(NamedTuple):
    name: str  # record name: Impression, Click, Dwell, AddToCart, Purchase
    datum: dict  # the Avro datum, read under the latest schema version
    delivered_ms: int  # the Kafka record timestamp


class DeadLetter(NamedTuple):
    """A message that could not become an event: its bytes and where it came from, with the reason."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str


class LateEvent(NamedTuple):
    """An event that came past the allowed lateness, set aside with how far past it was."""

    event: DecodedEvent
    lateness_ms: int


_ESTIMATED_SIZE = 256  # bytes: about an encoded impression


def _tuple_coder(cls):
    class _Coder(beam.coders.Coder):
        _inner = FastPrimitivesCoder()

        def encode(self, value):
            return self._inner.encode(tuple(value))

        def decode(self, encoded):
            return cls(*self._inner.decode(encoded))

        def estimate_size(self, value):
            # Only the runner's sampled byte-size metrics ask. Coder's default encodes the value to measure it,
            # which for a shard's list of decoded events cost more than a tenth of the bounded join's time.
            return _ESTIMATED_SIZE

        def is_deterministic(self):
            return False

        def to_type_hint(self):
            return cls

    _Coder.__name__ = f"{cls.__name__}Coder"
    return _Coder


from pipelines.labeling import Example  # noqa: E402  (registered with the pipeline's own types)

for _cls in (KafkaRecord, KafkaChunk, PackedChunk, DecodedEvent, DeadLetter, LateEvent, Example):
    beam.coders.registry.register_coder(_cls, _tuple_coder(_cls))


class Revision(NamedTuple):
    """A streaming example as one version of what its impression says: a later version of the same kind of
    example (`partitions.kind_of`) replaces an earlier one, and a withdrawn one removes it."""

    example: Example
    version: int  # increases with every release of the user's examples
    withdrawn: bool = False


class _RevisionCoder(_tuple_coder(Revision)):
    def encode(self, value):
        return self._inner.encode((tuple(value.example), value.version, value.withdrawn))

    def decode(self, encoded):
        example, version, withdrawn = self._inner.decode(encoded)
        return Revision(Example(*example), version, withdrawn)


beam.coders.registry.register_coder(Revision, _RevisionCoder)
