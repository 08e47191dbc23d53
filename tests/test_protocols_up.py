"""protocols.up and up_status, the node's encoders: the bytes of `messages.encode(<Class>(...))` for every
valid input, a ProtocolError wherever the class refuses, and the size limit of SPEC.md (CPython,
hypothesis).

The same against the vectors and random cases inside the VM: tests/test_protocols_up_vm.py.
"""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import messages, up, up_status
from protocols.ack import Ack
from protocols.errors import ProtocolError
from protocols.event import Event
from protocols.health import FIELDS, Health
from protocols.limits import MAX_PAYLOAD
from protocols.ota import OtaProgress, Pull
from protocols.senml_pack import PackBuilder
from protocols.state import State
from protocols.telemetry import Telemetry
from tests.mpvm import REPO
from tests.vectorform import check_up_vector, up_call

UINT32 = st.integers(0, 2**32 - 1)
NUMBERS = st.one_of(st.integers(-(2**64), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False))
#: Values a class refuses somewhere: bools, out-of-range ints, non-finite floats, empty or long texts, ...
JUNK = st.one_of(st.booleans(), st.sampled_from([-1, 2**32, 2**64, 3, -128, 7]), st.floats(), st.just(""),
                 st.text(min_size=33, max_size=40), st.just([]), st.just({}), st.lists(st.integers(), max_size=2),
                 st.binary(max_size=2), st.none(), st.sets(st.integers(), max_size=1))


def texts(longest):
    return st.text(min_size=1, max_size=longest)


def either(valid):
    """A valid value, or junk one time in ten: the outcomes of both encoders must agree on either."""
    return st.integers(0, 9).flatmap(lambda draw: JUNK if draw == 0 else valid)


def outcome(build):
    """The bytes `build()` returns, or "ProtocolError" (any other exception fails the test)."""
    try:
        return build()
    except ProtocolError:
        return "ProtocolError"


def readings():
    return st.lists(st.tuples(st.sampled_from(["tilt", "level", "load", "wind", "rise"]), NUMBERS.filter(
        lambda v: abs(v) < 1e30), st.integers(-(2**31), 2**31)), min_size=1, max_size=20)


def built(items):
    builder = PackBuilder(20)
    for name, value, time in items:
        builder.add(name, value, time, "m/s" if name == "rise" else None)
    return builder.pack(900)


RECORD = st.dictionaries(st.integers(-6, 8), st.one_of(NUMBERS, st.text(max_size=8), st.booleans()), max_size=5)
PACKS = st.one_of(readings().map(built), st.lists(RECORD, min_size=1, max_size=8))
SCALARS = st.one_of(st.integers(0, 2**64 - 1), st.text(max_size=20), st.floats(), st.none(), st.booleans())
RESULTS = st.one_of(st.none(), SCALARS, st.lists(SCALARS, max_size=4),
                    st.dictionaries(st.text(max_size=4), st.lists(SCALARS, max_size=3), max_size=3))


@settings(max_examples=300, deadline=None)
@given(UINT32, UINT32, PACKS)
def test_telemetry_is_the_class_encoding(boot, seq, pack):
    expected = outcome(lambda: messages.encode(Telemetry(boot, seq, pack)))
    assert outcome(lambda: up.telemetry(boot, seq, pack)) == expected


@settings(max_examples=300, deadline=None)
@given(either(UINT32), either(UINT32), st.one_of(PACKS, JUNK))
def test_telemetry_refuses_what_the_class_refuses(boot, seq, pack):
    expected = outcome(lambda: messages.encode(Telemetry(boot, seq, pack)))
    assert outcome(lambda: up.telemetry(boot, seq, pack)) == expected


EVENT_ARGS = (UINT32, UINT32, texts(32), st.sampled_from([0, 1]), st.sampled_from([1, 2]), NUMBERS, NUMBERS,
              NUMBERS)


@settings(max_examples=300, deadline=None)
@given(st.tuples(*EVENT_ARGS))
def test_event_is_the_class_encoding(args):
    assert up.event(*args) == messages.encode(Event(*args))


@settings(max_examples=500, deadline=None)
@given(st.tuples(*[either(strategy) for strategy in EVENT_ARGS]))
def test_event_refuses_what_the_class_refuses(args):
    assert outcome(lambda: up.event(*args)) == outcome(lambda: messages.encode(Event(*args)))


BIRTH_ARGS = (UINT32, UINT32, st.just(True), texts(32), UINT32, st.integers(0, 5), st.one_of(st.none(), texts(16)))


@settings(max_examples=300, deadline=None)
@given(st.tuples(*BIRTH_ARGS))
def test_birth_is_the_class_encoding(args):
    assert up_status.state(*args) == messages.encode(State(*args))


@given(UINT32, UINT32)
def test_will_is_the_class_encoding(boot, seq):
    assert up_status.state(boot, seq, False) == messages.encode(State(boot, seq, False))


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.just(BIRTH_ARGS), st.just((UINT32, UINT32, st.just(False), st.none(), st.none(), st.none(),
                                                st.none()))).flatmap(lambda s: st.tuples(*[either(x) for x in s])))
def test_state_refuses_what_the_class_refuses(args):
    assert outcome(lambda: up_status.state(*args)) == outcome(lambda: messages.encode(State(*args)))


def _health_values(junk):
    wrap = either if junk else (lambda strategy: strategy)
    optional = {name: UINT32 for name in FIELDS}
    optional.update(rssi=st.integers(-127, 0), fault=texts(200),
                    errors=st.dictionaries(texts(32), UINT32, max_size=32 if junk else 8))
    return st.fixed_dictionaries({}, optional={name: wrap(strategy) for name, strategy in optional.items()})


@settings(max_examples=300, deadline=None)
@given(UINT32, UINT32, UINT32, _health_values(False))
def test_health_is_the_class_encoding(boot, seq, uptime, optional):
    assert up_status.health(boot, seq, uptime, **optional) == messages.encode(Health(boot, seq, uptime, **optional))


@settings(max_examples=500, deadline=None)
@given(either(UINT32), either(UINT32), either(UINT32), _health_values(True))
def test_health_refuses_what_the_class_refuses(boot, seq, uptime, optional):
    expected = outcome(lambda: messages.encode(Health(boot, seq, uptime, **optional)))
    assert outcome(lambda: up_status.health(boot, seq, uptime, **optional)) == expected


def test_health_takes_the_fields_of_the_class_in_their_order():
    values = dict(zip(FIELDS, (1, 2, 3, 4, -5, 6, 7, {"i2c": 8}, "fault", 9, 10), strict=True))
    assert up_status.health(1, 2, 3, *values.values()) == messages.encode(Health(1, 2, 3, **values))
    with pytest.raises(TypeError):
        up_status.health(1, 2, 3, temperature=20)


ACK_ARGS = (UINT32, UINT32, UINT32, st.sampled_from([0, 1]),
            st.one_of(st.none(), st.lists(texts(200), max_size=32), st.lists(texts(20), max_size=3).map(tuple)),
            st.one_of(st.none(), UINT32), RESULTS)


@settings(max_examples=300, deadline=None)
@given(st.tuples(*ACK_ARGS))
def test_ack_is_the_class_encoding(args):
    assert outcome(lambda: up_status.ack(*args)) == outcome(lambda: messages.encode(Ack(*args)))


@settings(max_examples=500, deadline=None)
@given(st.tuples(*[either(strategy) for strategy in ACK_ARGS[:6]],
                 st.one_of(RESULTS, st.just([[[1]]]), st.just({"a": [[1]]}))))
def test_ack_refuses_what_the_class_refuses(args):
    assert outcome(lambda: up_status.ack(*args)) == outcome(lambda: messages.encode(Ack(*args)))


OTA_ARGS = (UINT32, UINT32, UINT32, st.integers(1, 6), st.one_of(st.none(), st.integers(0, 100)),
            st.one_of(st.none(), texts(32)), st.one_of(st.none(), texts(32)))


@settings(max_examples=300, deadline=None)
@given(st.tuples(*OTA_ARGS))
def test_ota_progress_is_the_class_encoding(args):
    assert outcome(lambda: up_status.ota_progress(*args)) == outcome(lambda: messages.encode(OtaProgress(*args)))


@settings(max_examples=500, deadline=None)
@given(st.tuples(*[either(strategy) for strategy in OTA_ARGS]))
def test_ota_progress_refuses_what_the_class_refuses(args):
    assert outcome(lambda: up_status.ota_progress(*args)) == outcome(lambda: messages.encode(OtaProgress(*args)))


def test_ota_progress_of_a_failure_needs_a_reason():
    assert up_status.ota_progress(1, 2, 3, 6, None, "CRASHED", "1.5.0") == messages.encode(
        OtaProgress(1, 2, 3, 6, None, "CRASHED", "1.5.0"))
    for state in (5, 6):
        with pytest.raises(ProtocolError) as caught:
            up_status.ota_progress(1, 2, 3, state)
        assert "key 6" in str(caught.value)


PULL_ARGS = (UINT32, UINT32, UINT32, st.integers(0, 200), UINT32, st.integers(1, 8))


@settings(max_examples=300, deadline=None)
@given(st.tuples(*PULL_ARGS))
def test_pull_is_the_class_encoding(args):
    assert up_status.pull(*args) == messages.encode(Pull(*args))


@settings(max_examples=500, deadline=None)
@given(st.tuples(*[either(strategy) for strategy in PULL_ARGS]))
def test_pull_refuses_what_the_class_refuses(args):
    assert outcome(lambda: up_status.pull(*args)) == outcome(lambda: messages.encode(Pull(*args)))


def test_pull_window_is_one_to_eight_chunks():
    assert up_status.pull(1, 2, 3, 0, 0, 8) == messages.encode(Pull(1, 2, 3, 0, 0, 8))
    for count in (0, 9):
        with pytest.raises(ProtocolError):
            up_status.pull(1, 2, 3, 0, 0, count)


def test_a_valid_ack_encodes():
    # the property tests compare outcomes: make sure valid acks do come out as bytes
    assert up_status.ack(1, 2, 3, 1, ["bad_threshold"], 4, None) == messages.encode(
        Ack(1, 2, 3, 1, ["bad_threshold"], 4))
    assert up_status.ack(1, 2, 3, 0, None, None, {"echo": [1, 2]})[-1] == 2


def test_payload_limit_is_the_contracts():
    """Exactly MAX_PAYLOAD bytes go out, one more is refused as too_large, as messages.encode does."""
    pack = [{0: "x" * 1000}]
    pack[0][0] += "x" * (MAX_PAYLOAD - len(up.telemetry(1, 2, pack)))
    assert len(up.telemetry(1, 2, pack)) == MAX_PAYLOAD
    assert up.telemetry(1, 2, pack) == messages.encode(Telemetry(1, 2, pack))
    pack[0][0] += "x"
    for encode in (lambda: up.telemetry(1, 2, pack), lambda: messages.encode(Telemetry(1, 2, pack))):
        with pytest.raises(ProtocolError) as caught:
            encode()
        assert caught.value.reason == "too_large"


def test_bad_fields_name_the_key():
    with pytest.raises(ProtocolError) as caught:
        up.event(1, 2, "flood", 1, 3, 1.0, 1.0, -5)
    assert caught.value.reason == "bad_field" and "key 5" in str(caught.value)
    with pytest.raises(ProtocolError) as caught:
        up.telemetry(1, 2, [])
    assert caught.value.reason == "senml_pack"


VECTORS = [v for v in json.loads((REPO / "protocols/vectors/messages.json").read_text())["vectors"] if up_call(v)]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_message_vectors(vector):
    assert check_up_vector(vector) is None


def test_only_telemetry_and_event_are_in_the_resident_module():
    """The node keeps protocols.up loaded; the encoders it needs now and then are up_status's alone (whether
    up imports up_status shows in the VM: tests/test_protocols_up_vm.py)."""
    rare = {"state", "health", "ack", "ota_progress", "pull"}
    assert {"telemetry", "event"} <= set(vars(up)) and not rare & set(vars(up))
    assert rare <= set(vars(up_status)) and not {"telemetry", "event"} & set(vars(up_status))


def test_every_device_message_has_vectors():
    assert {up_call(v)[0] for v in VECTORS} == {"telemetry", "event", "state", "health", "ack", "ota_progress",
                                                "pull"}
