"""The event contract: Avro schemas for every event valueloop carries, with every released version kept.

`registry` loads them, `codec` turns events into Avro single-object messages and back,
`validation` checks decoded values, `compatibility` keeps new versions readable by old readers, and `units` says
what time is: milliseconds since the epoch, with the one set of time constants.
"""
from schemas.codec import BadEventError, EventDecoder, EventEncoder
from schemas.registry import SchemaRegistry, default_registry

__all__ = ["BadEventError", "EventDecoder", "EventEncoder", "SchemaRegistry", "default_registry"]
