"""Avro single-object encoding: 0xC3 0x01, the writer schema's 8-byte CRC-64-AVRO fingerprint, then the body.

Any Avro reader that has the schemas in `schemas/avro` resolves the writer schema from the fingerprint.
"""
from __future__ import annotations

import enum
import io
from typing import Iterable, NamedTuple

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from schemas._native import Check, decode_known, peek_known
from schemas.compiled import UnsupportedSchema, compile_field_reader, compile_reader, compile_record
from schemas.registry import SchemaRegistry, SchemaVersion, default_registry
from schemas.units import now_ms, seconds
from schemas.validation import DEFAULT_MAX_FUTURE_SKEW_MS, compile_check, find_problem

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
_NO_LIMIT = 2**62


class Reason(str, enum.Enum):
    """Why a message could not be turned into an event; the dead-letter header and counter name."""

    NOT_SINGLE_OBJECT = "not_single_object"
    UNKNOWN_FINGERPRINT = "unknown_fingerprint"
    MALFORMED_BODY = "malformed_body"
    UNEXPECTED_TYPE = "unexpected_type"
    INVALID_VALUE = "invalid_value"
    RECORD_TIME_AHEAD = "record_time_ahead"


class BadEventError(ValueError):
    """A message that is not a valid event, with where it came from."""

    def __init__(self, reason: Reason, detail: str, topic: str, partition: int, offset: int):
        self.reason = reason
        self.detail = detail
        self.topic = topic
        self.partition = partition
        self.offset = offset
        super().__init__(f"{topic}[{partition}]@{offset}: {reason.value}: {detail}")


class Event(NamedTuple):
    """A decoded event: its record's short name (Impression, Click, ...) and its fields under the latest schema."""

    name: str
    datum: dict


class EventEncoder:
    """Writes events under the latest version of their schema (or a named older one, for compatibility tests)."""

    def __init__(self, registry: SchemaRegistry | None = None):
        self._registry = registry or default_registry()
        self._writers: dict[tuple[str, int | None], tuple[bytes, dict, object]] = {}

    def _writer(self, name: str, version: int | None):
        key = (name, version)
        if key not in self._writers:
            kept = self._registry.versions(name)
            schema = kept[-1] if version is None else next(v for v in kept if v.version == version)
            try:
                compiled = compile_record(schema.raw)
            except UnsupportedSchema:
                compiled = None
            self._writers[key] = (MAGIC + schema.fingerprint, schema.parsed, compiled)
        return self._writers[key]

    def encode(self, name: str, datum: dict, version: int | None = None) -> bytes:
        header, parsed, compiled = self._writer(name, version)
        if compiled is not None:
            try:
                return header + compiled(datum)
            except (KeyError, TypeError, AttributeError, IndexError, OverflowError, ValueError, UnicodeError):
                problems = validation_errors(datum, parsed)
                if problems:
                    raise ValueError(f"cannot encode {name}: {'; '.join(problems)}") from None
                # Valid, but beyond the compiled fast path (a string of 8 KiB or more): fastavro writes it.
        buffer = io.BytesIO()
        buffer.write(header)
        schemaless_writer(buffer, parsed, datum)
        return buffer.getvalue()


def validation_errors(datum: dict, parsed: dict) -> list[str]:
    """fastavro's account of what in `datum` does not fit the schema, one line per field."""
    try:
        validate(datum, parsed, raise_errors=True)
    except ValidationError as error:
        return [str(e) for e in error.errors]
    return []


class EventDecoder:
    """Reads single-object messages written under any kept schema version, as the latest version of that record."""

    def __init__(
        self,
        registry: SchemaRegistry | None = None,
        expected: Iterable[str] | None = None,
        max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS,
    ):
        self._registry = registry or default_registry()
        self._expected = frozenset(expected) if expected is not None else None
        self._max_future_skew_ms = max_future_skew_ms
        self._readers: dict[bytes, tuple[SchemaVersion, str, dict, object]] = {}
        self._checks: dict[str, object] = {}
        self._peekers: dict[str, dict[bytes, object]] = {}  # field -> fingerprint -> its reader, or None
        # Fingerprint -> (record name, compiled reader, value check), once `decode` has read a valid message of
        # it: what `decode_all` needs to read further messages of that schema without `decode`'s branches.
        self._known: dict[bytes, tuple[str, object, object]] = {}

    def _reader_for(self, fp: bytes) -> tuple[SchemaVersion, str, dict, object] | None:
        if fp not in self._readers:
            writer = self._registry.by_fingerprint(fp)
            if writer is None:
                return None
            latest = self._registry.latest(writer.short_name)
            try:
                compiled = compile_reader(writer.raw, latest.raw)
            except UnsupportedSchema:
                compiled = None
            self._readers[fp] = (writer, writer.short_name, latest.parsed, compiled)
        return self._readers[fp]

    def decode(
        self, raw: bytes, topic: str = "?", partition: int = -1, offset: int = -1, timestamp_ms: int | None = None,
        latest_record_ms: int | None = None,
    ) -> Event:
        """Decodes and validates one message, or raises BadEventError naming topic, partition, offset and reason.

        `timestamp_ms` is the Kafka record timestamp: an event may not claim to be much later than it. A record
        stamped after `latest_record_ms` (the reader's clock plus a skew) comes from a producer with a broken
        clock: its time says nothing true, so it is refused before anything else is read.
        """

        def bad(reason: Reason, detail: str) -> BadEventError:
            return BadEventError(reason, detail, topic, partition, offset)

        if latest_record_ms is not None and timestamp_ms is not None and timestamp_ms > latest_record_ms:
            ahead_s = seconds(timestamp_ms - latest_record_ms)
            raise bad(Reason.RECORD_TIME_AHEAD, f"record timestamp {timestamp_ms} is {ahead_s:.0f}s past the latest "
                      f"the reader allows ({latest_record_ms}: its clock plus the allowed skew)")

        if raw is None or len(raw) < HEADER_SIZE or raw[:2] != MAGIC:
            head = (raw or b"")[:HEADER_SIZE].hex()
            raise bad(Reason.NOT_SINGLE_OBJECT, f"expected 0xc301 and an 8-byte fingerprint, got {head or 'nothing'}")
        fp = bytes(raw[2:HEADER_SIZE])
        found = self._reader_for(fp)
        if found is None:
            raise bad(Reason.UNKNOWN_FINGERPRINT, f"no kept schema has fingerprint {fp.hex()}")
        writer, name, reader_schema, compiled = found
        if self._expected is not None and name not in self._expected:
            raise bad(Reason.UNEXPECTED_TYPE, f"{name} where {', '.join(sorted(self._expected))} belongs")
        try:
            if compiled is not None:
                datum, end = compiled(raw, HEADER_SIZE)
            else:
                body = io.BytesIO(raw[HEADER_SIZE:])
                datum = schemaless_reader(body, writer.parsed, reader_schema)
                end = HEADER_SIZE + body.tell()
        except Exception as error:  # EOFError, IndexError, struct.error, UnicodeDecodeError, ... on bad bytes
            raise bad(Reason.MALFORMED_BODY, f"{name} v{writer.version}: {type(error).__name__}: {error}")
        if end != len(raw):
            raise bad(Reason.MALFORMED_BODY, f"{len(raw) - end} trailing bytes after the record" if end < len(raw)
                      else f"a length overruns the record by {end - len(raw)} bytes")
        reference = timestamp_ms if timestamp_ms is not None and timestamp_ms > 0 else now_ms()
        passes = self._checks.get(name)
        if passes is None:
            passes = self._checks[name] = compile_check(datum)
        if not passes(datum, reference + self._max_future_skew_ms):
            problem = find_problem(datum, reference, self._max_future_skew_ms)
            if problem is not None:
                raise bad(Reason.INVALID_VALUE, f"{name}: {problem}")
        return Event(name, datum)

    def decode_all(self, records: Iterable[tuple], topic: str = "?", partition: int = -1,
                   event_type: type = tuple, latest_record_ms: int | None = None,
                   ) -> tuple[list[tuple], list[tuple[tuple, BadEventError]]]:
        """`decode` for each (offset, timestamp_ms, key, value) record of one topic partition, in order: every
        event as `event_type((name, datum, timestamp_ms))` (a tuple, or a NamedTuple of those three fields), and
        every record that is not one with its BadEventError. `latest_record_ms` is `decode`'s.

        The same results as `decode` record by record, faster: a message of a schema already read, that reads
        to its end and passes the value check, takes a short path in C (`_native.decode_known`); anything else
        goes through `decode`.
        """
        records = records if isinstance(records, list) else list(records)
        events: list[tuple] = []
        bad: list[tuple[tuple, BadEventError]] = []
        at = 0
        latest = latest_record_ms if latest_record_ms is not None else _NO_LIMIT
        while True:
            at = decode_known(records, at, self._known, self._max_future_skew_ms, latest, event_type, events)
            if at == len(records):
                return events, bad
            record = records[at]
            at += 1
            offset, timestamp_ms, _key, raw = record
            try:
                event = self.decode(raw, topic, partition, offset, timestamp_ms, latest_record_ms)
            except BadEventError as error:
                bad.append((record, error))
                continue
            events.append(tuple.__new__(event_type, (event.name, event.datum, timestamp_ms)))
            fp = bytes(raw[2:HEADER_SIZE])
            compiled = self._readers[fp][3]
            # the short path takes a check in C; a record checked in Python as well (a served slate) stays here
            if compiled is not None and fp not in self._known and isinstance(self._checks[event.name], Check):
                self._known[fp] = (event.name, compiled, self._checks[event.name])

    def peek(self, raw: bytes, field: str):
        """The value of a top-level field of a message, read without decoding or checking the rest; None when
        the message cannot say (not single-object, an unknown schema, a body broken before the field). For
        routing a message before `decode` judges it."""
        return self.peek_all([raw], field)[0]

    def peek_all(self, messages: Iterable[bytes | None], field: str) -> list:
        """`peek` for each message, in order, in C (`_native.peek_known`) for every schema met before."""
        messages = messages if isinstance(messages, list) else list(messages)
        readers = self._peekers.setdefault(field, {})
        values: list = []
        at = peek_known(messages, 0, readers, values)
        while at < len(messages):  # a schema not met before
            fp = bytes(messages[at][2:HEADER_SIZE])
            readers[fp] = self._field_reader(fp, field)
            at = peek_known(messages, at, readers, values)
        return values

    def _field_reader(self, fp: bytes, field: str):
        """The single-field reader of `field` for messages of fingerprint `fp`; None when no kept schema has that
        fingerprint, or its schema has no such field."""
        writer = self._registry.by_fingerprint(fp)
        try:
            return compile_field_reader(writer.raw, field) if writer is not None else None
        except UnsupportedSchema:
            return None
