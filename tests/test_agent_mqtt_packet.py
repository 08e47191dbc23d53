"""MQTT 3.1.1 packet codec: exact bytes against the spec, strict rejection of malformed input.

The case_* functions run under CPython and under the MicroPython VM; the hypothesis properties are
CPython only. Section numbers are MQTT 3.1.1 (OASIS standard, 29 October 2014).
"""

try:
    import pytest
except ImportError:  # under the MicroPython VM only the case_* functions and run_cases() are used
    pytest = None

from agent import mqtt_packet as mp
from agent.errors import AgentError
from agent.mqtt_packet import MQTTError, MQTTProtocolError


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


def encoded(fn, *args, **kw):
    buf = bytearray(300)
    n = fn(buf, *args, **kw)
    return bytes(buf[:n])


def publish(buf, topic, payload, qos=0, retain=False, dup=False, pid=0):
    """A whole PUBLISH as the client sends it: publish_header, then the payload right after it."""
    n = mp.publish_header(buf, topic, len(payload), qos, retain, dup, pid)
    buf[n : n + len(payload)] = payload
    return n + len(payload)


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        # a wire error must never pass for a caller's mistake or the reverse
        assert exc is not MQTTError or not isinstance(e, MQTTProtocolError)
        return str(e)
    raise AssertionError("%s did not raise %s" % (fn.__name__, exc.__name__))


def case_errors_share_the_agent_base():
    assert issubclass(MQTTProtocolError, MQTTError) and issubclass(MQTTError, AgentError)


def case_remaining_length_table_2_4():
    table = [(0, "00"), (127, "7f"), (128, "80 01"), (16383, "ff 7f"), (16384, "80 80 01"),
             (2097151, "ff ff 7f"), (2097152, "80 80 80 01"), (268435455, "ff ff ff 7f")]
    for value, wire in table:
        buf = bytearray(4)
        end = mp.encode_varint(buf, 0, value)
        assert bytes(buf[:end]) == h(wire), value
        assert mp.decode_varint(h(wire), 0, len(h(wire))) == (value, end)
    raises(MQTTError, mp.encode_varint, bytearray(5), 0, 268435456)
    raises(MQTTError, mp.encode_varint, bytearray(5), 0, -1)


def case_remaining_length_strict_and_incremental():
    assert mp.decode_varint(h("80 80"), 0, 2) is None  # more bytes needed
    assert mp.decode_varint(h("ff ff ff 7f"), 0, 3) is None
    raises(MQTTProtocolError, mp.decode_varint, h("80 80 80 80 01"), 0, 5)  # 2.2.3: four bytes at most


def case_connect_minimal_3_1():
    # fixed header, "MQTT", level 4, flags: clean session, keepalive 60, client id "cid"
    assert encoded(mp.connect, "cid", 60) == h("10 0f 0004 4d515454 04 02 003c 0003 636964")
    assert encoded(mp.connect, b"cid", 60, clean_session=False)[9] == 0x00


def case_connect_with_will_user_password():
    wire = encoded(mp.connect, "c", 10, True, ("w", b"x", 1, True), "u", b"p")
    # flags 3.1.2.3: user 80 | password 40 | will retain 20 | will qos 1 08 | will 04 | clean 02 = ee
    assert wire == h("10 19 0004 4d515454 04 ee 000a 0001 63 0001 77 0001 78 0001 75 0001 70")
    wire = encoded(mp.connect, "c", 0, False, ("w", b"", 0, False))
    assert wire == h("10 12 0004 4d515454 04 04 0000 0001 63 0001 77 0000")


def case_connect_rejects_bad_arguments():
    buf = bytearray(100)
    raises(MQTTError, mp.connect, buf, "c", 65536)
    raises(MQTTError, mp.connect, buf, "c", 60, True, None, None, b"p")  # 3.1.2.9
    raises(MQTTError, mp.connect, buf, "c", 60, True, ("w/#", b"", 0, False))
    raises(MQTTError, mp.connect, buf, "c", 60, True, ("w", b"", 2, False))
    raises(MQTTError, mp.connect, bytearray(20), "c" * 20, 60)  # does not fit


def case_publish_3_3():
    assert encoded(publish, "a/b", b"hi") == h("30 07 0003 612f62 6869")
    # DUP 08 | QoS 1 02 | RETAIN 01, packet id 10
    assert encoded(publish, b"a/b", b"hi", 1, True, True, 10) == h("3b 09 0003 612f62 000a 6869")
    assert encoded(publish, "a/b", b"", 1, False, False, 0xFFFF) == h("32 07 0003 612f62 ffff")
    wire = encoded(publish, "a/b", bytes(200))
    assert wire[:4] == h("30 cd 01 00") and len(wire) == 3 + 205


def case_publish_header_leaves_the_payload_to_the_caller():
    buf = bytearray(16)  # far smaller than the payload
    n = mp.publish_header(buf, "t", 1000, 1, False, False, 7)
    assert bytes(buf[:n]) == h("32 ed 07 0001 74 0007")  # 2 + 1 + 2 + 1000 = 1005 = 0x6d | 0x80, 7


def case_publish_rejects_bad_arguments():
    buf = bytearray(64)
    for topic in ("", "a/+", "a/#", "a\x00b"):  # 4.7.1, 4.7.3, 1.5.3
        raises(MQTTError, publish, buf, topic, b"")
    raises(MQTTError, publish, buf, "t", b"", 2, False, False, 1)
    raises(MQTTError, publish, buf, "t", b"", 1, False, False, 0)  # 2.3.1: id 0 is not allowed
    raises(MQTTError, publish, buf, "t", b"", 0, False, True, 0)  # 3.3.1.1: no DUP at QoS 0
    raises(MQTTError, mp.publish_header, bytearray(8), "topic", 0, 1, False, False, 1)  # does not fit


def case_acks_subscriptions_and_empty_packets():
    assert encoded(mp.short_packet, mp.PUBACK, 0x1234) == h("40 02 1234")
    assert encoded(mp.subscribe, 1, "a/#", 1) == h("82 08 0001 0003 612f23 01")  # 3.8.1: flags 0010
    assert encoded(mp.short_packet, mp.PINGREQ) == h("c0 00")
    assert encoded(mp.short_packet, mp.DISCONNECT) == h("e0 00")
    raises(MQTTError, mp.short_packet, bytearray(4), mp.PUBACK, 0)  # 2.3.1: id 0 is not allowed
    raises(MQTTError, mp.subscribe, bytearray(20), 0, "a", 0)
    raises(MQTTError, mp.subscribe, bytearray(20), 1, "", 0)
    raises(MQTTError, mp.subscribe, bytearray(20), 1, "a", 2)


def case_connack_3_2():
    assert mp.decode_connack(h("00 00")) == (False, 0)
    assert mp.decode_connack(h("01 00")) == (True, 0)
    assert mp.decode_connack(h("ff 00 05"), 1) == (False, 5)
    assert mp.CONNACK_REASONS[mp.REFUSED_BAD_CREDENTIALS] == "bad user name or password"
    raises(MQTTProtocolError, mp.decode_connack, h("02 00"))  # 3.2.2.1 reserved bits
    raises(MQTTProtocolError, mp.decode_connack, h("00 06"))  # 3.2.2.3 reserved codes
    raises(MQTTProtocolError, mp.decode_connack, h("01 04"))  # 3.2.2.2 refusal with session


def case_fixed_headers_from_the_server():
    assert mp.check_header(0x20, 2) == mp.CONNACK
    assert mp.check_header(0x3B, 9) == mp.PUBLISH
    assert mp.check_header(0xD0, 0) == mp.PINGRESP
    assert mp.check_header(0x90, 3) == mp.SUBACK
    bad = [(0x21, 2), (0x20, 3), (0x40, 3), (0xD0, 1), (0x90, 2), (0xB0, 0), (0x36, 9), (0x32, 3),
           (0x30, 1), (0x10, 2), (0x82, 5), (0xC0, 0), (0xE0, 0), (0x00, 0), (0xF0, 0), (0x42, 2)]
    for first, length in bad:
        raises(MQTTProtocolError, mp.check_header, first, length)


def case_publish_from_the_server():
    body = h("0003 612f62 000a 6869")
    topic_end, pid, payload = mp.decode_publish(0x3A, body, 0, len(body))
    assert (bytes(body[2:topic_end]), pid, bytes(body[payload:])) == (b"a/b", 10, b"hi")
    wire = h("ffff 0001 74 7878")  # at an offset, QoS 0
    assert mp.decode_publish(0x31, wire, 2, 5) == (5, 0, 5)
    for first, body in [(0x30, h("0000 78")), (0x30, h("0009 6162")), (0x32, h("0001 61 00")),
                        (0x32, h("0001 61 0000 78")), (0x38, h("0001 61")), (0x30, h("0001 23")),
                        (0x30, h("0003 612b62")), (0x30, h("0001 00"))]:
        raises(MQTTProtocolError, mp.decode_publish, first, body, 0, len(body))


def case_acks_from_the_server():
    assert mp.decode_ack(h("beef")) == 0xBEEF
    assert mp.decode_suback(h("0007 01"), 0, 3) == (7, 1)
    assert mp.decode_suback(h("0007 80"), 0, 3) == (7, mp.SUBACK_FAILURE)
    raises(MQTTProtocolError, mp.decode_ack, h("0000"))
    raises(MQTTProtocolError, mp.decode_suback, h("0007 03"), 0, 3)  # 3.9.3


def parse(wire):
    """What the client does with bytes from the broker, in one function (for the fuzz property)."""
    head = mp.decode_varint(wire, 1, len(wire)) if len(wire) >= 2 else None
    if head is None:
        return None
    length, body = head
    kind = mp.check_header(wire[0], length)
    if len(wire) < body + length:
        return None
    if kind == mp.PUBLISH:
        return mp.decode_publish(wire[0], wire, body, length)
    if kind == mp.CONNACK:
        return mp.decode_connack(wire, body)
    if kind == mp.SUBACK:
        return mp.decode_suback(wire, body, length)
    if kind in (mp.PUBACK, mp.UNSUBACK):
        return mp.decode_ack(wire, body)
    return kind


def case_parse_round_trips_packets_a_broker_sends():
    buf = bytearray(64)
    n = publish(buf, "x/y", b"data", 1, True, True, 99)
    assert parse(bytes(buf[:n])) == (7, 99, 9)
    assert parse(h("20 02 00 00")) == (False, 0)
    assert parse(h("d0 00")) == mp.PINGRESP


def run_cases():
    """Run every case_* function (the MicroPython VM calls this)."""
    names = [name for name in sorted(globals()) if name.startswith("case_")]
    for name in names:
        globals()[name]()
    print("ok", len(names))


if pytest is not None:
    from hypothesis import given
    from hypothesis import strategies as st

    from tests.mpvm import check_micropython

    CASES = [name for name in sorted(globals()) if name.startswith("case_")]

    @pytest.mark.parametrize("name", CASES)
    def test_case_under_cpython(name):
        globals()[name]()

    @pytest.mark.micropython
    def test_cases_under_micropython():
        out = check_micropython("import tests.test_agent_mqtt_packet as t\nt.run_cases()", heap="110k")
        assert "ok %d" % len(CASES) in out

    @given(st.integers(min_value=0, max_value=mp.MAX_REMAINING), st.integers(min_value=0, max_value=3))
    def test_remaining_length_round_trip(value, offset):
        buf = bytearray(offset + 4)
        end = mp.encode_varint(buf, offset, value)
        assert end - offset == 1 + (value > 127) + (value > 16383) + (value > 2097151)
        assert mp.decode_varint(buf, offset, end) == (value, end)
        assert mp.decode_varint(buf, offset, end - 1) is None

    @given(st.binary(max_size=40))
    def test_garbage_from_the_wire_is_a_protocol_error_or_a_packet(wire):
        try:
            parse(wire)
        except MQTTProtocolError:
            pass

    @given(st.text(min_size=1, max_size=30).filter(lambda t: not set(t) & set("+#\x00")),
           st.binary(max_size=100), st.integers(min_value=0, max_value=1), st.booleans(),
           st.integers(min_value=1, max_value=65535))
    def test_publish_round_trip(topic, payload, qos, retain, pid):
        buf = bytearray(300)
        n = publish(buf, topic, payload, qos, retain, bool(qos) and retain, pid)
        topic_end, got_pid, start = parse(bytes(buf[:n]))
        assert bytes(buf[start - (2 if qos else 0) - len(topic.encode()):topic_end]) == topic.encode()
        assert (got_pid, bytes(buf[start:n])) == (pid if qos else 0, payload)
