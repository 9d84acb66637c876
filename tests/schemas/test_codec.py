import io
import struct
from typing import NamedTuple

import pytest
from fastavro import schemaless_writer

from schemas import BadEventError, EventDecoder, EventEncoder, default_registry
from schemas.codec import MAGIC, Reason

CLICK = {"event_id": "clk-1", "impression_id": "imp-1", "user_id": "u1", "item_id": "i1", "event_time_ms": 1_700_000_000_000}
PRODUCED_MS = CLICK["event_time_ms"] + 1000


def impression(**changes) -> dict:
    datum = {
        "event_id": "imp-1", "request_id": "req-1", "user_id": "u1", "item_id": "i1", "position": 0,
        "surface": "home_feed", "event_time_ms": 1_700_000_000_000, "policy": "p1", "propensity": 0.25,
        "features": {"item_category": "c01", "item_price": 9.5, "item_age_hours": 3.0, "item_rating": None,
                     "headline_score": 0.5, "user_category_affinity": 0.25, "user_tenure_days": 10, "device": "app"},
    }
    datum.update(changes)
    return datum


def test_single_object_layout_is_magic_fingerprint_body():
    raw = EventEncoder().encode("Click", CLICK)
    click = default_registry().latest("Click")
    body = io.BytesIO()
    schemaless_writer(body, click.parsed, CLICK)
    assert raw == b"\xc3\x01" + click.fingerprint + body.getvalue()


def test_fingerprint_matches_the_avro_specification_rabin_vector():
    # CRC-64-AVRO of the canonical form '"int"': 0x7275d51a3f395c8f, written little-endian on the wire.
    from fastavro.schema import fingerprint

    assert bytes.fromhex(fingerprint('"int"', "CRC-64-AVRO")) == struct.pack("<Q", 0x7275D51A3F395C8F)


@pytest.mark.parametrize("name,datum", [("Click", CLICK), ("Impression", impression())])
def test_round_trip(name, datum):
    event = EventDecoder().decode(EventEncoder().encode(name, datum), "t", 0, 0, PRODUCED_MS)
    assert event.name == name and event.datum == datum


def bad(raw: bytes, **decoder_kwargs) -> BadEventError:
    with pytest.raises(BadEventError) as caught:
        EventDecoder(**decoder_kwargs).decode(raw, "valueloop.clicks", 2, 41, PRODUCED_MS)
    error = caught.value
    assert (error.topic, error.partition, error.offset) == ("valueloop.clicks", 2, 41)
    assert str(error).startswith("valueloop.clicks[2]@41: ")
    return error


def test_not_single_object():
    assert bad(b'{"event_id": "json?"}').reason is Reason.NOT_SINGLE_OBJECT
    assert bad(b"").reason is Reason.NOT_SINGLE_OBJECT
    assert bad(MAGIC + b"\x00\x01").reason is Reason.NOT_SINGLE_OBJECT


def test_unknown_fingerprint():
    error = bad(MAGIC + b"\xde\xad\xbe\xef\x00\x00\x00\x01" + b"\x02a")
    assert error.reason is Reason.UNKNOWN_FINGERPRINT and "deadbeef00000001" in error.detail


def test_truncated_and_padded_bodies():
    raw = EventEncoder().encode("Click", CLICK)
    assert bad(raw[:-3]).reason is Reason.MALFORMED_BODY
    assert bad(raw + b"\x00").reason is Reason.MALFORMED_BODY


def test_unexpected_record_type_for_the_topic():
    raw = EventEncoder().encode("Click", CLICK)
    assert bad(raw, expected={"Impression"}).reason is Reason.UNEXPECTED_TYPE


@pytest.mark.parametrize("name,datum,field", [
    ("Dwell", {**CLICK, "event_id": "dwl-1", "dwell_ms": -5}, "dwell_ms"),
    ("Click", {**CLICK, "event_time_ms": PRODUCED_MS + 2 * 3_600_000}, "ahead of the time it was produced"),
    ("Click", {**CLICK, "user_id": ""}, "user_id is empty"),
    ("Click", {**CLICK, "impression_id": ""}, "impression_id is empty"),
    ("Impression", impression(propensity=0.0), "propensity"),
    ("Impression", impression(position=-1), "position"),
    ("Purchase", {"event_id": "p", "order_id": "o", "user_id": "u", "item_id": "i", "event_time_ms": CLICK["event_time_ms"],
                  "quantity": 0, "value": 1.0}, "quantity"),
])
def test_value_checks(name, datum, field):
    error = bad(EventEncoder().encode(name, datum))
    assert error.reason is Reason.INVALID_VALUE and field in error.detail


def test_future_check_uses_wall_clock_without_a_record_timestamp():
    raw = EventEncoder().encode("Click", {**CLICK, "event_time_ms": 10**15})
    with pytest.raises(BadEventError, match="ahead"):
        EventDecoder().decode(raw, "t", 0, 0, timestamp_ms=None)


def test_compiled_encoder_writes_fastavros_bytes_for_simulated_traffic():
    from simulator import Simulation, SimulatorConfig

    config = SimulatorConfig.model_validate({"requests": 400, "days": 0.2, "catalogue": {"users": 100, "items": 50}})
    encoder, registry = EventEncoder(), default_registry()
    for event in Simulation(config).events():
        reference = io.BytesIO()
        schemaless_writer(reference, registry.latest(event.name).parsed, event.datum)
        assert encoder.encode(event.name, event.datum) == MAGIC + registry.latest(event.name).fingerprint + reference.getvalue()


@pytest.mark.parametrize("value", [0, 1, -1, 63, -64, 64, 8191, -8193, 2**28, 2**41, -(2**45), 2**63 - 1, -(2**63)])
def test_compiled_long_matches_fastavro(value):
    from schemas.compiled import write_long

    reference = io.BytesIO()
    schemaless_writer(reference, "long", value)
    assert write_long(value) == reference.getvalue()


def test_a_datum_the_compiled_encoder_rejects_gets_fastavros_error():
    with pytest.raises(ValueError, match="Click.event_time_ms"):
        EventEncoder().encode("Click", {**CLICK, "event_time_ms": "yesterday"})
    with pytest.raises(ValueError, match="Impression.position"):
        EventEncoder().encode("Impression", impression(position=2**40))


def test_strings_beyond_the_fast_path_are_still_written():
    long_id = "x" * 20_000
    raw = EventEncoder().encode("Click", {**CLICK, "event_id": long_id})
    assert EventDecoder().decode(raw, "t", 0, 0, PRODUCED_MS).datum["event_id"] == long_id


def _fastavro_read(raw: bytes) -> dict:
    from fastavro import schemaless_reader

    registry = default_registry()
    writer = registry.by_fingerprint(raw[2:10])
    return schemaless_reader(io.BytesIO(raw[10:]), writer.parsed, registry.latest(writer.short_name).parsed)


def test_compiled_reader_reads_what_fastavro_reads_for_simulated_traffic():
    from simulator import Simulation, SimulatorConfig

    config = SimulatorConfig.model_validate({"requests": 400, "days": 0.2, "catalogue": {"users": 100, "items": 50}})
    encoder, decoder = EventEncoder(), EventDecoder()
    for event in Simulation(config).events():
        raw = encoder.encode(event.name, event.datum)
        assert decoder.decode(raw, "t", 0, 0, event.delivery_ms).datum == _fastavro_read(raw)


def test_compiled_reader_resolves_an_older_writer_version_with_the_readers_defaults():
    datum = impression()
    del datum["features"]["device"]
    raw = EventEncoder().encode("Impression", datum, version=1)
    decoded = EventDecoder().decode(raw, "t", 0, 0, PRODUCED_MS).datum
    assert decoded == _fastavro_read(raw)
    assert decoded["features"]["device"] == "unknown"


@pytest.mark.parametrize("value", [0, 1, -1, 63, -64, 64, 8191, -8193, 2**28, 2**41, -(2**45), 2**63 - 1, -(2**63)])
def test_compiled_reader_reads_longs_and_long_strings(value):
    long_id = "é" * 3000  # 6,000 bytes: a two-byte length
    raw = EventEncoder().encode("Click", {**CLICK, "event_id": long_id, "event_time_ms": value})
    from schemas.compiled import compile_reader

    schema = default_registry().latest("Click").raw
    datum, end = compile_reader(schema, schema)(raw, 10)
    assert (datum["event_id"], datum["event_time_ms"], end) == (long_id, value, len(raw))


def test_every_truncation_and_a_flipped_union_branch_are_malformed():
    raw = EventEncoder().encode("Impression", impression())
    for cut in range(10, len(raw)):
        with pytest.raises(BadEventError) as caught:
            EventDecoder().decode(raw[:cut], "t", 0, 0, PRODUCED_MS)
        assert caught.value.reason is Reason.MALFORMED_BODY, cut
    datum = impression()
    datum["features"]["item_rating"] = 4.25
    raw = EventEncoder().encode("Impression", datum)
    rating_at = raw.index(b"\x02" + struct.pack("<f", 4.25))
    damaged = raw[:rating_at] + b"\x04" + raw[rating_at + 1:]  # union branch 2 of a two-branch union
    with pytest.raises(BadEventError, match="union branch") as caught:
        EventDecoder().decode(damaged, "t", 0, 0, PRODUCED_MS)
    assert caught.value.reason is Reason.MALFORMED_BODY


def test_peek_reads_one_field_and_says_none_for_what_cannot_be_routed():
    decoder = EventDecoder()
    raw = EventEncoder().encode("Impression", impression(user_id="u42"))
    assert decoder.peek(raw, "user_id") == "u42"
    assert decoder.peek(EventEncoder().encode("Click", CLICK), "user_id") == "u1"
    assert decoder.peek(raw[:14], "user_id") is None  # broken before the field
    assert decoder.peek(b"not avro", "user_id") is None
    assert decoder.peek(MAGIC + bytes(8) + raw[10:], "user_id") is None  # unknown fingerprint
    assert decoder.peek(raw, "no_such_field") is None


class _Delivered(NamedTuple):
    name: str
    datum: dict
    delivered_ms: int


def test_decode_all_says_what_decode_says_of_each_record_good_or_bad():
    encoder = EventEncoder()
    good = encoder.encode("Impression", impression())
    old = impression()
    del old["features"]["device"]
    messages = [
        good, encoder.encode("Click", CLICK), good[:-3], good + b"\x00", None, b"not avro", MAGIC + bytes(8) + good[10:],
        encoder.encode("Impression", impression(position=-1)), encoder.encode("Impression", old, version=1),
        encoder.encode("Impression", impression(event_time_ms=PRODUCED_MS + 2 * 3_600_000)), good,
    ]
    stamps = [PRODUCED_MS] * len(messages) + [-1, PRODUCED_MS]  # a record without a timestamp, then one with
    messages += [good, encoder.encode("Click", CLICK)]
    records = [(offset, stamp, b"u1", raw) for offset, (stamp, raw) in enumerate(zip(stamps, messages))]
    expected_events, expected_bad = [], []
    for offset, stamp, _key, raw in records:
        try:
            event = EventDecoder(expected={"Impression"}).decode(raw, "t", 3, offset, stamp)
        except BadEventError as error:
            expected_bad.append((offset, error.reason, error.detail))
            continue
        expected_events.append((event.name, event.datum, stamp))
    events, bad = EventDecoder(expected={"Impression"}).decode_all(records, "t", 3)
    assert events == expected_events and len(events) == 4
    typed, _ = EventDecoder(expected={"Impression"}).decode_all(iter(records), "t", 3, _Delivered)
    assert typed == expected_events and all(type(e) is _Delivered for e in typed)
    assert typed[0].delivered_ms == PRODUCED_MS
    assert [(record[0], e.reason, e.detail) for record, e in bad] == expected_bad
    assert all((e.topic, e.partition, e.offset) == ("t", 3, record[0]) for record, e in bad)


@pytest.mark.parametrize("changes", [
    {}, {"propensity": 1.0}, {"propensity": 1.0000001}, {"propensity": 0.0}, {"propensity": 1e-12},
    {"propensity": float("nan")}, {"position": 0}, {"position": -1}, {"event_time_ms": 1}, {"event_time_ms": 0},
    {"event_time_ms": -5}, {"event_time_ms": PRODUCED_MS + 3_600_000}, {"event_time_ms": PRODUCED_MS + 3_600_001},
    {"event_time_ms": None}, {"user_id": ""}, {"user_id": None}, {"item_id": "i"},
])
def test_the_c_check_agrees_with_find_problem_at_and_beyond_each_bound_pure_function(changes):
    from schemas.validation import compile_check, find_problem

    datum = impression(**changes)
    passes = compile_check(datum)(datum, PRODUCED_MS + 3_600_000)
    assert passes == (find_problem(datum, PRODUCED_MS, 3_600_000) is None)


@pytest.mark.parametrize("quantity, value", [(1, 0.0), (0, 0.0), (1, -0.01), (2, None)])
def test_the_c_check_agrees_with_find_problem_on_purchases_pure_function(quantity, value):
    from schemas.validation import compile_check, find_problem

    datum = {"event_id": "p", "order_id": "o", "user_id": "u", "item_id": "i", "event_time_ms": PRODUCED_MS,
             "quantity": quantity, "value": value}
    assert compile_check(datum)(datum, PRODUCED_MS) == (find_problem(datum, PRODUCED_MS, 0) is None)


def test_damaged_messages_decode_as_fastavro_reads_them_or_are_refused_never_misread():
    """Seeded damage to real messages (bytes flipped, cut, repeated, inserted) through the C decoder: each comes
    out as the datum fastavro reads from the same bytes, reaching the same end, or as a BadEventError."""
    import random

    from fastavro import schemaless_reader

    from simulator import Simulation, SimulatorConfig

    config = SimulatorConfig.model_validate({"requests": 60, "days": 0.1, "catalogue": {"users": 20, "items": 20}})
    encoder, rng = EventEncoder(), random.Random(5)
    originals = [encoder.encode(e.name, e.datum) for e in Simulation(config).events()]
    damaged = []
    for n in range(3000):
        raw = bytearray(rng.choice(originals))
        at = rng.randrange(10, len(raw))
        kind = n % 4
        if kind == 0:
            raw[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del raw[at:]
        elif kind == 2:
            raw[at:at] = raw[at:at + rng.randrange(1, 5)]
        else:
            raw[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        damaged.append(bytes(raw))
    registry = default_registry()
    produced_ms = 4_000_000_000_000  # later than any simulated event time: the value checks pass or fail on values
    records = [(offset, produced_ms, None, raw) for offset, raw in enumerate(damaged)]
    events, bad = EventDecoder().decode_all(records, "t", 0)
    assert len(events) + len(bad) == len(damaged) and len(events) > 300 and len(bad) > 1500
    taken = {record[0] for record, _ in bad}
    for (name, datum, _), raw in zip(events, [raw for offset, raw in enumerate(damaged) if offset not in taken]):
        writer = registry.by_fingerprint(raw[2:10])
        body = io.BytesIO(raw[10:])
        assert datum == schemaless_reader(body, writer.parsed, registry.latest(writer.short_name).parsed)
        assert body.tell() == len(raw) - 10 and name == writer.short_name
