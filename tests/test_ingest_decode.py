"""fleet.ingest.decode: a device message -> Inbound (readings resolved) or Quarantined with the reason; its
fast path (fleet.ingest.payload, fleet.ingest.readings) reads every payload exactly as the protocols reference."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.ingest import payload as fast
from fleet.ingest.decode import WRONG_FLEET, decode
from fleet.store.model import Inbound, Quarantined
from protocols import messages, up
from protocols.ack import Ack
from protocols.cbor import dumps
from protocols.errors import ProtocolError
from protocols.event import Event
from protocols.health import Health
from protocols.ota import OtaProgress, Pull
from protocols.state import State
from protocols.telemetry import Telemetry
from tests.vectorform import same

VECTORS = json.loads((Path(__file__).parent.parent / "protocols" / "vectors" / "messages.json").read_text())["vectors"]
FLEET = "city1"
NOW = 1732850100.25  # a receive time (float, as time.time() gives)
CLASSES = {"telemetry": Telemetry, "event": Event, "health": Health, "state": State, "ack": Ack, "ota": OtaProgress,
           "pull": Pull}


def vector(name: str) -> tuple[str, bytes]:
    found = next(v for v in VECTORS if v["name"] == name)
    return found["topic"], bytes.fromhex(found["hex"])


@pytest.mark.parametrize("entry", [v for v in VECTORS if v["topic"].startswith("dt/")], ids=lambda v: v["name"])
def test_every_device_vector_is_an_inbound_of_its_kind(entry):
    kind = entry["topic"].rsplit("/", 1)[1]
    got = decode(entry["topic"], bytes.fromhex(entry["hex"]), NOW, FLEET)
    assert isinstance(got, Inbound), got
    assert (got.device, got.kind, got.received) == ("wl-0001", kind, NOW)
    assert isinstance(got.message, CLASSES[kind])
    assert (got.boot, got.seq) == (got.message.boot, got.message.seq)
    assert bool(got.readings) == (kind == "telemetry")


def test_telemetry_absolute_time_keeps_its_time_and_catalogue_unit():
    got = decode(*vector("telemetry one reading"), NOW, FLEET)
    assert isinstance(got, Inbound)
    [reading] = got.readings
    assert (reading.device, reading.name, reading.time, reading.value, reading.unit) == \
        ("wl-0001", "tilt", 1732850000.0, 2.5, "deg")
    assert (reading.boot, reading.seq, reading.received, reading.historical) == (12, 40000, NOW, False)
    assert got.ut == {}


def test_telemetry_relative_time_is_resolved_against_arrival_and_ut_kept():
    got = decode(*vector("telemetry relative time, ut"), NOW, FLEET)
    assert isinstance(got, Inbound)
    [reading] = got.readings
    assert (reading.name, reading.value, reading.unit, reading.time) == ("level", 412, "mm", NOW - 2)
    assert got.ut == {"level": 900}


def test_backfill_older_than_two_minutes_is_historical_at_its_own_time():
    topic, payload = vector("telemetry backfill")  # base time 1732850060, records at -60, +0, +60, +120 s
    got = decode(topic, payload, 1732850060 + 150.0, FLEET)
    assert isinstance(got, Inbound)
    assert [(r.time, r.value) for r in got.readings] == \
        [(1732850000.0, 400), (1732850060.0, 403), (1732850120.0, 406), (1732850180.0, 409)]
    assert [r.historical for r in got.readings] == [True, True, False, False]


def test_several_names_in_one_pack():
    pack = [{-2: "", 0: "gust", 2: 25.5, 1: "m/s", 6: -3}, {0: "load", 2: 3100, 7: 600}]
    got = decode("dt/city1/bb-1/telemetry", up.telemetry(2, 9, pack), NOW, FLEET)
    assert isinstance(got, Inbound)
    assert [(r.name, r.value, r.unit, r.time) for r in got.readings] == \
        [("gust", 25.5, "m/s", NOW - 3), ("load", 3100, "N", NOW)]
    assert got.ut == {"load": 600}


def test_bytes_topic_is_accepted():
    topic, payload = vector("health minimal")
    got = decode(topic.encode(), payload, NOW, FLEET)
    assert isinstance(got, Inbound) and got.kind == "health"


def quarantined(topic, payload) -> Quarantined:
    got = decode(topic, payload, NOW, FLEET)
    assert isinstance(got, Quarantined), got
    assert (got.received, got.payload) == (NOW, bytes(payload))
    return got


def test_wrong_fleet():
    topic, payload = vector("health")
    got = quarantined(topic.replace("city1", "other"), payload)
    assert (got.topic, got.reason) == ("dt/other/wl-0001/health", WRONG_FLEET)
    assert "other" in got.detail


@pytest.mark.parametrize("topic, reason", [
    ("cmd/city1/wl-0001/ping", "bad_topic"),        # a command topic is not a device's
    ("dt/city1/wl-0001", "bad_topic"),              # three levels
    ("dt/city1/wl-0001/telemetry/x", "bad_topic"),
    ("dt/city1/WL-0001/telemetry", "bad_id"),       # upper case
    ("dt/city1/wl-0001/config", "bad_type"),        # a down type on an up topic
    ("dt/city1/wl-0001/bogus", "bad_type"),
])
def test_bad_topics(topic, reason):
    got = quarantined(topic, vector("health")[1])
    assert (got.topic, got.reason) == (topic, reason)


def test_topic_that_is_not_utf8_is_kept_readable():
    got = quarantined(b"dt/city1/\xff\xfe/health", vector("health")[1])
    assert got.reason == "bad_topic"
    assert got.topic.startswith("dt/city1/") and "\ufffd" in got.topic


def test_oversized_payload():
    got = quarantined("dt/city1/wl-0001/telemetry", b"\x00" * 1025)
    assert got.reason == "too_large"
    assert "1025" in got.detail


@pytest.mark.parametrize("payload", [b"", b"\xff\x00garbage", b"\x9f\x01", b"\x1c"], ids=["empty", "break", "open", "reserved"])
def test_bad_cbor(payload):
    assert quarantined("dt/city1/wl-0001/event", payload).reason == "bad_cbor"


def test_too_deep():
    assert quarantined("dt/city1/wl-0001/health", bytes.fromhex("8181818181")).reason == "too_deep"


def test_wrong_shape_for_the_topic_type():
    # a valid telemetry payload on the event topic: not a map
    got = quarantined("dt/city1/wl-0001/event", vector("telemetry one reading")[1])
    assert got.reason == "bad_message"


@pytest.mark.parametrize("obj, reason", [
    ({0: 1, 1: 12, 2: 5}, "missing_field"),                       # health without uptime
    ({0: 1, 1: 12, 2: -5, 3: 60}, "bad_field"),                   # negative seq
    ({0: 0, 1: 12, 2: 5, 3: 60}, "bad_version"),
])
def test_failed_validation(obj, reason):
    assert quarantined("dt/city1/wl-0001/health", dumps(obj)).reason == reason


def test_bad_senml_record():
    # a record with two value fields
    got = quarantined("dt/city1/wl-0001/telemetry", dumps([1, 1, 1, {0: "level", 2: 1, 3: "x"}]))
    assert got.reason.startswith("senml_")


# ---- the fast path (fleet.ingest.payload, fleet.ingest.readings) reads exactly as the reference ----

ALL_VECTORS = [v for path in sorted((Path(__file__).parent.parent / "protocols" / "vectors").glob("*.json"))
               for v in json.loads(path.read_text())["vectors"]]


def _outcome(load, data):
    try:
        return "value", load(data)
    except ProtocolError as error:
        return error.reason, error.detail


def assert_reads_as_reference(data):
    """fleet.ingest.payload.load(data) gives what protocols.messages.load(data) gives: an equal value of the
    same types, or a ProtocolError with the same reason and text."""
    got, want = _outcome(fast.load, data), _outcome(messages.load, data)
    assert got[0] == want[0], (data.hex(), got, want)
    if got[0] == "value":
        assert same(got[1], want[1]), (data.hex(), got, want)
    else:
        assert got == want, data.hex()


@pytest.mark.parametrize("entry", ALL_VECTORS, ids=lambda v: v["name"])
def test_fast_load_agrees_with_the_reference_on_every_vector(entry):
    assert_reads_as_reference(bytes.fromhex(entry["hex"]))


@pytest.mark.parametrize("entry", VECTORS, ids=lambda v: v["name"])
def test_every_message_vector_takes_the_fast_path(entry):
    assert fast.fast_value(bytes.fromhex(entry["hex"])) is not fast.NOT_PROVEN


@pytest.mark.parametrize("hexdata", [
    "0102", "80ff", "a10001f6",           # trailing bytes: cbor2 alone would ignore them
    "a201000101",                         # duplicate key: cbor2 alone keeps the last
    "a20100180100",                       # duplicate key, the second one in a longer head
    "8181818180", "a100a100a100a100a0",  # an empty container one level too deep
    "8181818100", "a100a100a100a10001",  # four levels: allowed
    "a1f500", "a1f600", "a1f93c0000", "a1410000", "a1810000",  # keys that are not int or text
    "f7", "f0", "f8ff", "f814", "81f7", "a100f0",  # undefined and simple values, also nested
    "c11a514b67b0", "c249010000000000000000", "d9d9f701", "d81c8100", "d81901", "c074323031332d30332d32315a",
    "9f01ff", "5f4101ff", "7f6161ff", "bf0001ff",  # indefinite lengths
    "1bffffffffffffffff", "3bffffffffffffffff",  # the widest integers
    "1801", "f93c00", "fa3fc00000", "fb3ff8000000000000",  # longer heads and wider floats than needed
    "62c328", "63eda080",                 # invalid UTF-8, an encoded surrogate
])
def test_fast_load_agrees_with_the_reference_on_edge_cases(hexdata):
    assert_reads_as_reference(bytes.fromhex(hexdata))


def test_every_half_float_reads_as_the_reference():
    for bits in range(0x10000):
        data = b"\xf9" + struct.pack(">H", bits)
        got, want = fast.load(data), messages.load(data)
        assert (math.isnan(got) and math.isnan(want)) or same(got, want), data.hex()


def _head(major, arg_size, arg):
    ai = {0: arg % 24, 1: 24, 2: 25, 4: 26, 8: 27}.get(arg_size, 28 + arg % 4)
    return bytes([major << 5 | ai]) + (arg.to_bytes(8, "big")[-arg_size:] if arg_size in (1, 2, 4, 8) else b"")


#: Byte strings built from CBOR heads (any major type, any additional information, short arguments) and a
#: few content bytes: mostly almost-well-formed, which random bytes rarely are.
TOKENS = st.lists(st.one_of(
    st.builds(_head, st.integers(0, 7), st.sampled_from([0, 0, 0, 1, 2, 4, 8, 3]), st.integers(0, 2**16)),
    st.binary(min_size=1, max_size=3),
    st.sampled_from([b"\xff", b"\x9f", b"\xbf", b"\x5f", b"\x7f", b"\xc2", b"\xf7", b"\xf5", b"\x80", b"\xa0"]),
), max_size=12).map(b"".join)

KEYS = st.one_of(st.integers(-30, 30), st.text(max_size=3), st.booleans(), st.none(), st.binary(max_size=2),
                 st.floats(width=16))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1), st.floats(), st.text(max_size=8),
                    st.binary(max_size=8))
VALUES = st.recursive(SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4),
    st.builds(cbor2.CBORTag, st.sampled_from([1, 2, 3, 24, 28, 55799, 1000]), children)), max_leaves=10)


@settings(max_examples=400, deadline=None)
@given(TOKENS)
def test_fast_load_agrees_with_the_reference_on_garbage(data):
    assert_reads_as_reference(data)


@settings(max_examples=300, deadline=None)
@given(VALUES, st.booleans(), st.booleans())
def test_fast_load_agrees_with_the_reference_on_what_cbor2_writes(value, canonical, indefinite):
    try:
        data = cbor2.dumps(value, canonical=canonical, indefinite_containers=indefinite)
    except Exception:  # noqa: BLE001 - a value cbor2 cannot write (a tag content it refuses)
        return
    assert_reads_as_reference(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VECTORS), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
       st.integers(0, 10**6), st.booleans())
def test_fast_load_agrees_with_the_reference_on_damaged_messages(entry, edits, cut, truncate):
    data = bytearray.fromhex(entry["hex"])
    for where, byte in edits:
        data[where % len(data)] = byte
    if truncate:
        del data[cut % len(data):]
    assert_reads_as_reference(bytes(data))


# ---- one resolution of a telemetry pack, the same as Telemetry.records() ----

def _reference_rows(topic, data, received):
    """What decode() stored before it had a fast path: protocols' own reader and Telemetry.records()."""
    message = messages.decode_up("telemetry", data)
    device = topic.split("/")[2]
    rows, ut = [], {}
    for record in message.records(received):
        value = record.value if record.value is not None else record.sum
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).hex()
        rows.append((device, record.name, float(record.time), value, record.unit, message.boot, message.seq,
                     received, record.time < received - 120.0))
        if record.update is not None:
            ut[record.name] = int(record.update)
    return rows, ut


def _rows(inbound):
    return [(r.device, r.name, r.time, r.value, r.unit, r.boot, r.seq, r.received, r.historical)
            for r in inbound.readings]


@pytest.mark.parametrize("entry", [v for v in VECTORS if v["topic"].endswith("/telemetry")], ids=lambda v: v["name"])
def test_readings_are_those_of_telemetry_records_on_every_vector(entry):
    data = bytes.fromhex(entry["hex"])
    for received in (NOW, 1732850060 + 150.0, 5.0):
        got = decode(entry["topic"], data, received, FLEET)
        assert isinstance(got, Inbound)
        assert (_rows(got), got.ut) == _reference_rows(entry["topic"], data, received)


NUMBERS = st.one_of(st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False, width=32))
OPTIONAL = st.fixed_dictionaries({}, optional={
    -2: st.sampled_from(["", "st-", "b/"]), -3: st.one_of(NUMBERS, st.just(1732850000)), -4: st.sampled_from(["m", "N"]),
    -5: NUMBERS, -6: NUMBERS, 0: st.sampled_from(["level", "tilt", "x", "load"]), 1: st.sampled_from(["mm", "deg"]),
    5: NUMBERS, 6: NUMBERS, 7: st.integers(0, 10**6), "x": st.integers(-5, 5)})
VALUE_FIELDS = st.one_of(st.builds(dict), st.builds(lambda v: {2: v}, NUMBERS), st.builds(lambda v: {3: v}, st.text(max_size=3)),
                         st.builds(lambda v: {4: v}, st.booleans()), st.builds(lambda v: {8: v}, st.binary(max_size=3)))
#: Mostly well-formed records (one value field, or none and maybe a sum), some with a bad name or no value.
RECORDS = st.builds(lambda base, value: {**base, **value}, OPTIONAL, VALUE_FIELDS)


@settings(max_examples=300, deadline=None)
@given(st.lists(RECORDS, min_size=1, max_size=6), st.floats(0, 2e9, allow_nan=False))
def test_readings_are_those_of_telemetry_records_on_generated_packs(pack, received):
    data = dumps([1, 7, 42] + pack)
    topic = "dt/city1/wl-0001/telemetry"
    got = decode(topic, data, received, FLEET)
    try:
        want = _reference_rows(topic, data, received)
    except ProtocolError as error:  # a pack the contract refuses: quarantined with the same reason
        assert isinstance(got, Quarantined) and got.reason == error.reason
        return
    assert isinstance(got, Inbound)
    assert (_rows(got), got.ut) == want
