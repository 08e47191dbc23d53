"""Messages: every type of SPEC.md built, encoded, decoded and rejected, on CPython and on the real VM.

`CASES` are the examples of SPEC.md and protocols/vectors/messages.json; `python -m tests.test_messages`
rewrites that file from them (check the diff by hand against SPEC.md).
"""

import json
import random
import sys

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import messages, read_up, topic
from protocols.ack import OK, REFUSED, Ack
from protocols.commands import Ping, Rebirth, Reboot
from protocols.config import Config
from protocols.errors import ProtocolError
from protocols.event import ALARM, CLEARED, RAISED, WARNING, Event
from protocols.health import Health
from protocols.limits import MAX_PAYLOAD
from protocols.ota import CHUNK, DOWNLOADING, FAILED, ROLLED_BACK, Chunk, OtaOffer, OtaProgress, Pull
from protocols.senml_pack import PackBuilder
from protocols.state import WATCHDOG, State
from protocols.telemetry import Telemetry
from tests.mpvm import REPO, check_micropython
from tests.vectorform import to_json

NOW = 1_732_850_000
VECTORS = REPO / "protocols" / "vectors" / "messages.json"


def _pack(readings, update=None):
    builder = PackBuilder(16)
    for reading in readings:
        builder.add(*reading)
    return builder.pack(update)


def cases():
    """(name, topic type, message) for every message type of SPEC.md."""
    return [
        ("telemetry one reading", "telemetry", Telemetry(12, 40000, _pack([("tilt", 2.5, NOW)]))),
        ("telemetry relative time, ut", "telemetry", Telemetry(3, 7, _pack([("level", 412, -2)], update=900))),
        ("telemetry backfill", "telemetry",
         Telemetry(12, 70001, _pack([("level", 400 + 3 * i, NOW + 60 * i) for i in range(4)]))),
        ("event raised", "event", Event(12, 40001, "flood", RAISED, ALARM, 152, 150, -95)),
        ("event cleared", "event", Event(12, 40002, "flood", CLEARED, WARNING, 118.5, 120, NOW)),
        ("health", "health", Health(12, 40003, 86400, heap_free=61440, heap_min=48200, flash_free=1200000,
                                    battery=3700, rssi=-71, outbox=0, dropped=0, errors={"i2c": 2},
                                    fault="echo_timeout", reconnects=1, link_up=3600)),
        ("health minimal", "health", Health(12, 40004, 60)),
        ("state birth", "state", State(12, 39990, True, "1.4.2", 3, WATCHDOG, "water")),
        ("state will", "state", State(12, 39989, False)),
        ("ack ok", "ack", Ack(12, 40005, 77, OK, config=4)),
        ("ack ping", "ack", Ack(12, 40006, 78, OK, result=1732850000123)),
        ("ack refused", "ack", Ack(12, 40007, 79, REFUSED, reasons=["bad_threshold"], config=3)),
        ("ota progress", "ota", OtaProgress(12, 40008, 80, DOWNLOADING, percent=42, target="1.5.0")),
        ("ota failed", "ota", OtaProgress(12, 40009, 80, FAILED, reason="HASH_MISMATCH", target="1.5.0")),
        ("ota rolled back", "ota", OtaProgress(13, 40011, 80, ROLLED_BACK, reason="CRASHED", target="1.5.0")),
        ("pull", "pull", Pull(12, 40010, 80, 3, 1536, 8)),
        ("config", "config", Config(77, 4, alarms={"flood": {0: "level", 1: 150, 2: 120, 3: 30, 4: 2}},
                                    sample={"level": 10}, heartbeat=900, deadband={"level": 5},
                                    calibration={"level": [1.0, -12]})),
        ("ping", "ping", Ping(78, echo=1732850000123)),
        ("reboot", "reboot", Reboot(81)),
        ("rebirth", "rebirth", Rebirth(82)),
        ("ota offer", "ota", OtaOffer(80, "1.5.0", 5, 3921, bytes(range(32)))),
        ("ota cancel", "ota", OtaOffer(80, "1.5.0", 5, 3921, bytes(range(32)), cancel=True)),
        ("chunk", "chunk", Chunk(80, 3, 1536, bytes(range(16)), 1552)),
    ]


def _topic(message, kind):
    return topic.Topic(message.DIRECTION, "city1", "wl-0001", kind)


CASES = cases()
IDS = [name for name, _, _ in CASES]


@pytest.mark.parametrize(("name", "kind", "message"), CASES, ids=IDS)
def test_every_message_round_trips_and_cbor2_agrees(name, kind, message):
    data = messages.encode(message)
    assert messages.decode(_topic(message, kind), data) == message
    assert messages.decode(str(_topic(message, kind)), data) == message
    # the reference decoder reads the same value, and canonical cbor2 writes the same bytes
    assert cbor2.loads(data) == message.to_obj()
    assert cbor2.dumps(message.to_obj(), canonical=True) == data


def test_one_reading_fits_the_aim_of_25_bytes():
    big_seq = Telemetry(12, 2**32 - 1, _pack([("tilt", 12.25, NOW)]))
    assert len(messages.encode(big_seq)) <= 25


def test_unknown_keys_and_newer_versions_are_read():
    obj = Event(1, 2, "flood", RAISED, ALARM, 1, 1.5, -3).to_obj()
    obj.update({0: 7, 40: "future", 9: [1, 2]})
    event = messages.decode_up("event", cbor2.dumps(obj))
    assert (event.alarm, event.protocol) == ("flood", 7)
    tele = messages.decode_up("telemetry", cbor2.dumps([2, 1, 2, "new header", 5, {0: "tilt", 2: 1}]))
    assert tele.pack == [{0: "tilt", 2: 1}] and tele.protocol == 2


def test_event_time_resolves_relative_to_receipt():
    assert read_up.began(Event(1, 2, "flood", RAISED, ALARM, 1, 1, -95), NOW) == NOW - 95
    assert read_up.began(Event(1, 2, "flood", RAISED, ALARM, 1, 1, NOW), 0) == NOW


def test_telemetry_records_fill_catalogue_units():
    tele = Telemetry(1, 2, _pack([("level", 412, -2)]))
    assert [r.as_dict() for r in tele.records(NOW)] == [{"n": "level", "t": NOW - 2, "u": "mm", "v": 412}]


def test_will_carries_boot_id_only_and_birth_needs_its_fields():
    assert State(5, 9, False).to_obj() == {0: 1, 1: 5, 2: 9, 3: False}
    with pytest.raises(ProtocolError):
        State(5, 9, False, firmware="1.0")
    with pytest.raises(ProtocolError) as caught:
        messages.decode_up("state", cbor2.dumps({0: 1, 1: 5, 2: 9, 3: True}))
    assert caught.value.reason == "missing_field"


@pytest.mark.parametrize(
    ("kind", "obj", "reason"),
    [
        ("event", [1, 2, 3], "bad_message"),
        ("event", {1: 1, 2: 2}, "missing_field"),
        ("event", {0: 0, 1: 1, 2: 2}, "bad_version"),
        ("event", {0: 1, 1: -1, 2: 2, 3: "a", 4: 1, 5: 1, 6: 1, 7: 1, 8: 1}, "bad_field"),
        ("event", {0: 1, 1: 1, 2: 2**32, 3: "a", 4: 1, 5: 1, 6: 1, 7: 1, 8: 1}, "bad_field"),
        ("event", {0: 1, 1: 1, 2: 2, 3: "a", 4: 2, 5: 1, 6: 1, 7: 1, 8: 1}, "bad_field"),
        ("event", {0: 1, 1: 1, 2: 2, 3: "a", 4: True, 5: 1, 6: 1, 7: 1, 8: 1}, "bad_field"),
        ("telemetry", {0: 1}, "bad_message"),
        ("telemetry", [1, 2, 3], "bad_message"),
        ("telemetry", [1, 2, 3, "x"], "senml_pack"),
        ("telemetry", [True, 2, 3, {0: "a", 2: 1}], "bad_version"),
        ("telemetry", [1, 2, 3, {0: "a"}], "senml_value"),
        ("health", {0: 1, 1: 1, 2: 2, 3: 5, 8: 10}, "bad_field"),
        ("ack", {0: 1, 1: 1, 2: 2, 3: 4, 4: REFUSED}, "bad_field"),
        ("ack", {0: 1, 1: 1, 2: 2, 3: 4, 4: OK, 7: [[[1]]]}, "too_deep"),
        ("ota", {0: 1, 1: 1, 2: 2, 3: 4, 4: FAILED}, "bad_field"),
        ("ota", {0: 1, 1: 1, 2: 2, 3: 4, 4: DOWNLOADING, 5: 101}, "bad_field"),
        ("pull", {0: 1, 1: 1, 2: 2, 3: 4, 4: 0, 5: 0, 6: 0}, "bad_field"),
        ("pull", {0: 1, 1: 1, 2: 2, 3: 4, 4: 0, 5: 0, 6: 9}, "bad_field"),
        ("pull", {0: 1, 1: 1, 2: 2, 3: 4, 4: 0, 6: 1}, "missing_field"),
    ],
)
def test_bad_device_messages_are_rejected_with_a_reason(kind, obj, reason):
    with pytest.raises(ProtocolError) as caught:
        messages.decode_up(kind, cbor2.dumps(obj))
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("kind", "obj", "reason"),
    [
        ("config", {0: 1, 1: 1, 2: 0}, "bad_field"),
        ("config", {0: 1, 1: 1, 2: 1, 3: {"a": {0: "level", 1: 5, 2: 5, 3: 0, 4: 1}}}, "bad_field"),
        ("config", {0: 1, 1: 1, 2: 1, 3: {"a": {0: "level", 1: 5, 2: 4, 3: 0}}}, "missing_field"),
        ("config", {0: 1, 1: 1, 2: 1, 4: {"level": 0}}, "bad_field"),
        ("config", {0: 1, 1: 1, 2: 1, 6: {"level": -1}}, "bad_field"),
        ("config", {0: 1, 1: 1, 2: 1, 7: {"level": [1]}}, "bad_field"),
        ("config", {0: 1, 1: 1, 2: 1, 4: {str(i): 1 for i in range(33)}}, "bad_field"),
        ("ping", {0: 1}, "missing_field"),
        ("ping", {0: 1, 1: 1, 2: "x"}, "bad_field"),
        ("ota", {0: 1, 1: 1, 2: "1.0", 3: 5, 4: 1, 5: b"short"}, "bad_field"),
        ("ota", {0: 1, 1: 1, 2: "1.0", 3: 0, 4: 1, 5: bytes(32)}, "bad_field"),
        ("ota", {0: 1, 1: 1, 2: "1.0", 3: 5, 4: 1, 5: bytes(32), 6: 1}, "bad_field"),
        ("ota", {0: 1, 1: 1, 2: "1.0", 3: "https://fw.example/a.bin", 4: 1, 5: bytes(32)}, "bad_field"),
        ("chunk", {0: 1, 1: 1, 2: 0, 3: 0, 4: bytes(CHUNK + 1), 5: 2000}, "bad_field"),
        ("chunk", {0: 1, 1: 1, 2: 0, 3: 10, 4: bytes(8), 5: 17}, "bad_field"),
        ("chunk", {0: 1, 1: 1, 2: 0, 3: 0, 4: "text", 5: 4}, "bad_field"),
        ("chunk", {0: 1, 1: 1, 2: 0, 3: 0, 5: 4}, "missing_field"),
    ],
)
def test_bad_commands_are_rejected_with_a_reason(kind, obj, reason):
    with pytest.raises(ProtocolError) as caught:
        messages.decode_down(kind, cbor2.dumps(obj))
    assert caught.value.reason == reason


def test_limits_are_enforced_on_both_sides():
    with pytest.raises(ProtocolError) as caught:
        messages.decode_up("health", b"\xa0" + bytes(MAX_PAYLOAD))
    assert caught.value.reason == "too_large"
    deep = cbor2.dumps({0: 1, 1: 1, 2: 2, 3: 4, 4: OK, 7: [[[[[1]]]]]})
    with pytest.raises(ProtocolError) as caught:
        messages.decode_up("ack", deep)
    assert caught.value.reason in ("too_deep", "bad_cbor")
    builder = PackBuilder(64)
    for index in range(64):
        builder.add(f"ok-{index:02d}", 1.1 + index, NOW + index, unit="V")
    with pytest.raises(ProtocolError) as caught:
        messages.encode(Telemetry(1, 2, builder.pack()))
    assert caught.value.reason == "too_large"


def test_unknown_topic_types_and_directions():
    with pytest.raises(ProtocolError):
        messages.decode("dt/city1/wl-1/config", b"\xa0")
    with pytest.raises(ProtocolError):
        messages.decode_up("config", b"\xa0")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.sampled_from(sorted([(topic.UP, kind) for kind in topic.UP_TYPES]
                                                      + [(topic.DOWN, kind) for kind in topic.DOWN_TYPES])))
def test_garbage_raises_only_protocol_error(data, key):
    direction, kind = key
    try:
        messages.decode(topic.Topic(direction, "c", "d", kind), data)
    except ProtocolError:
        pass


def test_mutated_vectors_raise_only_protocol_error():
    rng = random.Random(2)
    for _, kind, message in CASES:
        data = bytearray(messages.encode(message))
        for _ in range(40):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            try:
                messages.decode(_topic(message, kind), bytes(mutated))
            except ProtocolError:
                pass


def vectors() -> dict:
    """The content of protocols/vectors/messages.json, generated from CASES."""
    return {
        "description": "Every message type of protocols/SPEC.md: topic, logical value, CBOR hex.",
        "vectors": [
            {"name": name, "topic": str(_topic(message, kind)), "value": to_json(message.to_obj()),
             "hex": messages.encode(message).hex()}
            for name, kind, message in CASES
        ],
    }


def test_vector_file_is_what_the_code_generates():
    assert json.loads(VECTORS.read_text()) == vectors()


def test_vector_file_decodes_to_each_message():
    for vector in json.loads(VECTORS.read_text())["vectors"]:
        message = messages.decode(vector["topic"], bytes.fromhex(vector["hex"]))
        assert messages.encode(message).hex() == vector["hex"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """protocols/ compiled to .mpy as on a board: compiling from source on a 110 KB heap needs large free
    blocks that a fragmented heap may not have, which is a property of the test, not of the device."""
    from firmware.build import build_bundle

    out = tmp_path_factory.mktemp("mpy") / "bundle"
    build_bundle("emulator", "test", out)
    return out


@pytest.mark.micropython
def test_every_message_round_trips_under_micropython(compiled):
    """The VM decodes each vector into its class, re-encodes the same bytes, and rejects broken input."""
    pairs = [(vector["topic"], vector["hex"]) for vector in json.loads(VECTORS.read_text())["vectors"]]
    # the fleet-side readers and the broken inputs are allocated first, as the node allocates its buffers at start-up: later, the heap is fragmented
    code = """
from protocols import read_up
BAD = (b"", b"\\xff", b"\\x84\\x01\\x02\\x03\\xa1\\x00\\x61", b"\\xa0" * 2000)
from protocols import messages
from protocols.errors import ProtocolError
from protocols.senml_pack import PackBuilder
from protocols.telemetry import Telemetry
import binascii
ok = 0
for topic, hexed in PAIRS:
    data = binascii.unhexlify(hexed)
    message = messages.decode(topic, data)
    assert messages.encode(message) == data, topic
    assert messages.decode(topic, messages.encode(message)) == message
    ok += 1
b = PackBuilder(10)
for i in range(10):
    b.add("level", 400 + i, 1732850000 + 60 * i)
tele = messages.decode("dt/c/d/telemetry", messages.encode(Telemetry(1, 2, b.pack())))
print(ok, [r.value for r in tele.records(0)][-1], tele.records(0)[-1].time)
for bad in BAD:
    try:
        messages.decode("dt/c/d/event", bad)
    except ProtocolError as error:
        print(error.reason)
""".replace("PAIRS", repr(pairs))
    # This test is about behaviour under MicroPython; it also loads the fleet-side readers a node never
    # loads, so it gets more than the node's 110 KB (the node's own budget is measured in `make bench`).
    out = check_micropython(code, heap="256k", path=[compiled]).split()
    assert out[:3] == [str(len(pairs)), "409", str(1732850000 + 540)]
    assert out[3:] == ["bad_cbor", "bad_cbor", "bad_cbor", "too_large"]


if __name__ == "__main__":
    VECTORS.write_text(json.dumps(vectors(), indent=1) + "\n")
    sys.exit(0)
