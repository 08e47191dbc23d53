"""MQTT 3.1.1 on the wire: the exact bytes MQTTClient sends, and strict rejection of what a broker must
not send. The client runs over an in-memory stream (`Wire`), so every byte is seen and nothing waits on
a network.

The case_* functions run under CPython and under the MicroPython VM (110 KB heap); the hypothesis
properties are CPython only. Section numbers are MQTT 3.1.1 (OASIS standard, 29 October 2014).
"""

import asyncio

try:
    import pytest
except ImportError:  # under the MicroPython VM only the case_* functions and run_cases() are used
    pytest = None

from agent.errors import AgentError
from agent.mqtt import LOST, PROTOCOL, TIMEOUT, WINDOW_FULL, MQTTClient

CONNACK = b"\x20\x02\x00\x00"


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


class Wire:
    """A socket's two directions in memory: the test feeds what the broker says (`feed`, `hang_up`)
    and reads what the client wrote (`sent`). Offers both read (CPython's StreamReader) and readinto
    (MicroPython's Stream)."""

    def __init__(self):
        self.inbox = bytearray()
        self.sent = bytearray()
        self.eof = False
        self.closed = False
        self.ev = asyncio.Event()

    def feed(self, data):
        self.inbox += data
        self.ev.set()

    def hang_up(self):
        self.eof = True
        self.ev.set()

    async def _ready(self):
        while not self.inbox and not self.eof:
            self.ev.clear()
            await self.ev.wait()

    async def read(self, n):
        await self._ready()
        data = bytes(self.inbox[:n])
        self.inbox = self.inbox[n:]
        return data

    async def readinto(self, buf):
        await self._ready()
        n = min(len(buf), len(self.inbox))
        buf[:n] = self.inbox[:n]
        self.inbox = self.inbox[n:]
        return n

    def write(self, data):
        self.sent += data

    async def drain(self):
        await asyncio.sleep(0)

    def close(self):
        self.closed = True

    async def wait_closed(self):
        pass

    def take(self):
        """What the client wrote since the last take()."""
        out = bytes(self.sent)
        self.sent = bytearray()
        return out


async def until(cond, what, timeout_ms=5000):
    """Poll `cond` until true; fail with `what` after `timeout_ms` (a hang guard, not a timing test)."""
    for _ in range(timeout_ms // 5):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out waiting for " + what)


def session(scenario, connack=CONNACK, client_id="c", keepalive=0, **client_kw):
    """Connect a client over a Wire answered with `connack`, run `scenario(client, wire)` and close;
    return what the scenario returned. The CONNECT is taken off the wire first."""

    async def main():
        wire = Wire()
        client = MQTTClient(**client_kw)
        wire.feed(connack)
        try:
            await client.connect(wire, wire, client_id, keepalive)
            wire.take()
            return await scenario(client, wire)
        finally:
            await client.close()

    return asyncio.run(main())


def connect_bytes(*args, **kw):
    """The CONNECT the client sends for connect(wire, wire, *args, **kw)."""

    async def main():
        wire = Wire()
        wire.feed(CONNACK)
        client = MQTTClient()
        await client.connect(wire, wire, *args, **kw)
        await client.close(disconnect=False)
        return wire.take()

    return asyncio.run(main())


def fails(code, fn, *args):
    """Run fn(*args) (a coroutine function) expecting an AgentError with `code`; return its message."""
    try:
        asyncio.run(fn(*args))
    except AgentError as e:
        assert e.code == code, (code, e.code, str(e))
        return str(e)
    raise AssertionError("no error %d" % code)


def dies_on(packet, **client_kw):
    """Feed `packet` to a connected client; return the error that ended its session."""

    async def scenario(client, wire):
        wire.feed(packet)
        return await asyncio.wait_for(client.wait_dead(), 5)

    return session(scenario, **client_kw)


# ---- what the client sends ----------------------------------------------------------------------



def case_connect_minimal_3_1():
    # fixed header, "MQTT", level 4, flags: clean session, keepalive 60, client id "cid"
    assert connect_bytes("cid", 60) == h("10 0f 0004 4d515454 04 02 003c 0003 636964")
    assert connect_bytes(b"cid", 60, False)[9] == 0x00


def case_connect_with_will_user_password():
    wire = connect_bytes("c", 10, True, ("w", b"x", 1, True), "u", b"p")
    # flags 3.1.2.3: user 80 | password 40 | will retain 20 | will qos 1 08 | will 04 | clean 02 = ee
    assert wire == h("10 19 0004 4d515454 04 ee 000a 0001 63 0001 77 0001 78 0001 75 0001 70")
    wire = connect_bytes("c", 0, False, ("w", b"", 0, False))
    assert wire == h("10 12 0004 4d515454 04 04 0000 0001 63 0001 77 0000")


def case_connect_rejects_bad_arguments():
    async def connect(client_id, keepalive, will=None, user=None, password=None, max_packet=100):
        wire = Wire()
        client = MQTTClient(max_packet)
        try:
            await client.connect(wire, wire, client_id, keepalive, True, will, user, password)
        finally:
            await client.close()
            assert wire.closed and not wire.sent  # nothing went out, not even DISCONNECT; closed

    fails(0, connect, "c", 65536)
    fails(0, connect, "c", -1)
    fails(0, connect, "c", 60, None, None, b"p")  # 3.1.2.9: a password needs a user name
    fails(0, connect, "c", 60, ("w/#", b"", 0, False))  # 4.7.1: no wildcard in a topic name
    fails(0, connect, "c", 60, ("w", b"", 2, False))
    fails(0, connect, "c" * 30, 60, None, None, None, 40)  # does not fit the buffer


def case_publish_3_3():
    async def scenario(client, wire):
        assert await client.publish("a/b", b"hi") == 0
        assert wire.take() == h("30 07 0003 612f62 6869")
        # QoS 1 and RETAIN 01; the first packet id is 1 (2.3.1: never 0)
        assert await client.publish(b"a/b", b"hi", 1, True) == 1
        assert wire.take() == h("33 09 0003 612f62 0001 6869")
        assert await client.publish("a/b", b"", 1) == 2
        assert wire.take() == h("32 07 0003 612f62 0002")
        await client.publish("a/b", bytes(200))  # remaining length 205 = cd 01 (2.2.3)
        out = wire.take()
        assert out[:4] == h("30 cd 01 00") and len(out) == 3 + 205
        await client.publish("é", b"")  # topics go out as UTF-8 (1.5.3)
        assert wire.take() == h("30 04 0002 c3a9")

    session(scenario)


def case_remaining_length_table_2_4():
    # PUBLISH "t" at QoS 0 has 3 bytes before the payload; each size is at a boundary of table 2.4
    # (the larger ones below, under CPython only: the VM's 110 KB heap is no place for them).
    table = [(127, "7f"), (128, "80 01")]

    async def scenario(client, wire):
        for remaining, header in table:
            await client.publish("t", bytes(remaining - 3))
            out = wire.take()
            assert out[: 1 + len(h(header))] == b"\x30" + h(header), remaining
            assert len(out) == 1 + len(h(header)) + remaining

    session(scenario, max_packet=64)  # all but the first go out in two writes: header, then payload


def case_publish_rejects_bad_arguments():
    async def scenario(client, wire):
        for topic, qos in (("", 0), ("a/+", 0), ("a/#", 1), ("a\x00b", 0), ("t", 2), ("t", -1),
                           ("t" * 40, 1)):  # 4.7.3, 4.7.1, 1.5.3; QoS 2; too long for the buffer
            try:
                await client.publish(topic, b"", qos)
            except AgentError as e:
                assert e.code == 0
            else:
                raise AssertionError("published to %r at QoS %r" % (topic, qos))
        assert wire.take() == b"" and client.error is None  # nothing went out, the session lives on
        for _ in range(2):  # and no slot of the window was taken
            await client.publish("t", b"", 1)

    session(scenario, max_packet=32, window=2)


def case_qos1_window_and_puback():
    async def scenario(client, wire):
        assert await client.publish("t", b"0", 1) == 1
        assert await client.publish("t", b"1", 1) == 2
        try:
            await client.publish("t", b"x", 1)
        except AgentError as e:
            assert e.code == WINDOW_FULL and client.refused == 1
        else:
            raise AssertionError("a third message in a window of two")
        wire.take()
        wire.feed(h("40 02 0002"))  # PUBACK (3.4) out of order is fine
        assert await client.wait_ack(2) is True
        assert await client.publish("t", b"y", 1) == 3  # a new id, never one in flight
        wire.feed(h("40 02 0001 40 02 0003 40 02 0009"))  # and an ack for nothing: ignored
        assert await client.wait_ack(1) and await client.wait_ack(3)
        assert await client.publish("t", b"", 1) == 4 and await client.publish("t", b"", 1) == 5
        assert await client.wait_ack(0) is True  # QoS 0 has nothing to wait for
        assert client.error is None

    session(scenario, window=2)


def case_subscribe_3_8():
    async def scenario(client, wire):
        wire.feed(h("90 03 ffff 01"))
        assert await client.subscribe("a/#", 1) == 1
        assert wire.take() == h("82 08 ffff 0003 612f23 01")  # 3.8.1: flags 0010
        wire.feed(h("90 03 ffff 80"))  # 3.9.3: failure
        try:
            await client.subscribe(b"b", 0)
        except AgentError as e:
            assert e.code == 0 and "refused" in str(e)
        else:
            raise AssertionError("a refused subscription passed")
        assert wire.take() == h("82 06 ffff 0001 62 00")
        for bad in ((b"", 0), ("a", 2), ("a" * 40, 0)):  # empty, QoS 2, too long for the buffer
            try:
                await client.subscribe(*bad)
            except AgentError as e:
                assert e.code == 0
            else:
                raise AssertionError("subscribed to %r" % (bad,))
        assert client.error is None and wire.take() == b""
        wire.feed(h("90 03 ffff 00"))
        assert await client.subscribe("c", 0) == 0  # and the next one goes

    session(scenario, max_packet=48)


def case_publish_from_the_broker_is_delivered_and_acked():
    got = []

    async def scenario(client, wire):
        wire.feed(h("3b 09 0003 612f62 1234 6869"))  # DUP, QoS 1, RETAIN, id 0x1234 (3.3.1)
        wire.feed(h("30 06 0001 74 7878 78"))
        await until(lambda: len(got) == 2, "two messages")
        await until(lambda: wire.sent, "the PUBACK")
        assert wire.take() == h("40 02 1234")  # PUBACK (3.4), only for QoS 1
        return got

    got = session(scenario, on_message=lambda t, p, r: got.append((bytes(t), bytes(p), r)))
    assert got == [(b"a/b", b"hi", True), (b"t", b"xxx", False)]


def case_oversized_publish_is_skipped_counted_and_acked():
    got = []

    async def scenario(client, wire):
        wire.feed(h("32 ed 07 0001 74 0007") + bytes(1000))  # 1005 bytes > a 64-byte buffer
        wire.feed(h("30 08 0001 74 6166746572"))
        await until(lambda: got, "the message after it")
        assert wire.take() == h("40 02 0007") and client.oversized == 1 and client.error is None
        return got

    assert session(scenario, max_packet=64, on_message=lambda t, p, r: got.append(bytes(p))) == [b"after"]


def case_pingreq_and_disconnect():
    async def main():
        wire = Wire()
        wire.feed(CONNACK)
        client = MQTTClient(retry_s=0.2)
        await client.connect(wire, wire, "c", 1)  # keepalive 1 s: a PINGREQ after 0.75 s of quiet
        wire.take()
        await until(lambda: wire.sent, "the PINGREQ", 3000)
        assert wire.take() == h("c0 00") and client.pings == 1
        wire.feed(h("d0 00"))  # PINGRESP
        await client.close()
        assert wire.take() == h("e0 00") and wire.closed  # DISCONNECT (3.14), then the socket
        assert (await client.wait_dead()).code == LOST

    asyncio.run(main())


# ---- what the client refuses --------------------------------------------------------------------


def case_connack_refusals_3_2_2_3():
    for code in range(1, 6):
        assert fails(code, connect_bytes_async, h("20 02 00 0%d" % code)) == "refused: %d" % code


async def connect_bytes_async(connack):
    wire = Wire()
    wire.feed(connack)
    client = MQTTClient()
    try:
        await client.connect(wire, wire, "c", 0)
    finally:
        await client.close()


def case_malformed_connack():
    for reply in ["20 02 00 06",  # reserved return code (3.2.2.3)
                  "21 02 00 00",  # reserved flags in the fixed header (2.2.2)
                  "20 02 02 00",  # reserved acknowledge flags (3.2.2.1)
                  "20 02 01 04",  # a refusal with session present (3.2.2.2)
                  "20 03 00 00 00",  # wrong length
                  "d0 00",  # PINGRESP where CONNACK must come (3.2.0)
                  "20 ff ff ff ff 01"]:  # remaining length of five bytes (2.2.3)
        fails(PROTOCOL, connect_bytes_async, h(reply))


def case_connack_session_present():
    async def scenario(client, wire):
        return client.session_present

    assert session(scenario, connack=h("20 02 01 00")) is True


def case_malformed_packets_mid_session():
    for packet in ["36 05 0001 74 0001",  # PUBLISH with QoS 3 (3.3.1.2)
                   "38 03 0001 74",  # DUP on a QoS 0 PUBLISH (3.3.1.1)
                   "30 03 0001 23",  # wildcard in a PUBLISH topic (3.3.2.1)
                   "30 05 0003 61 00 62",  # U+0000 in a topic (1.5.3)
                   "30 02 0000",  # empty topic (4.7.3)
                   "30 03 0009 61",  # topic longer than the packet
                   "32 05 0001 74 0000",  # QoS 1 with packet id 0 (2.3.1)
                   "32 03 0001 74",  # QoS 1 without room for the id
                   "82 05 0001 0001 74",  # SUBSCRIBE sent by a server
                   "20 02 00 00",  # a second CONNACK (3.2.0)
                   "40 02 0000",  # PUBACK for id 0
                   "40 03 0001 00",  # PUBACK of the wrong length
                   "42 02 0001",  # reserved flags on a PUBACK (2.2.2)
                   "90 03 ffff 00",  # SUBACK nobody asked for
                   "90 80 08 " + "00" * 8,  # SUBACK of 1024 bytes
                   "d0 01 00",  # PINGRESP with a body
                   "00 00", "f0 00", "50 02 0001", "c0 00", "e0 00"]:  # reserved, QoS 2, client-only
        err = dies_on(h(packet))
        assert type(err) is AgentError and err.code == PROTOCOL, (packet, err)


def case_unsuback_and_pingresp_are_accepted():
    async def scenario(client, wire):
        wire.feed(h("b0 02 0001 d0 00"))
        await until(lambda: not wire.inbox, "the packets read")
        await asyncio.sleep(0.01)
        return client.error

    assert session(scenario) is None


def case_subscribe_answered_wrongly():
    for suback in ["90 03 fffe 00",  # another packet id
                   "90 03 ffff 03",  # a return code that does not exist (3.9.3)
                   "90 04 ffff 00 00"]:  # two return codes for one filter

        async def scenario(client, wire, suback=suback):
            wire.feed(h(suback))
            try:
                await client.subscribe("a", 0)
            except AgentError as e:
                assert e.code == LOST  # the session ended ...
            return client.error

        assert session(scenario).code == PROTOCOL  # ... for a protocol error


def case_a_broker_that_hangs_up():
    async def scenario(client, wire):
        wire.hang_up()
        err = await asyncio.wait_for(client.wait_dead(), 5)
        try:
            await client.publish("t", b"", 0)
        except AgentError as e:
            assert e.code == LOST
        return err

    assert session(scenario).code == LOST


def case_no_connack_in_time():
    async def main():
        wire = Wire()
        client = MQTTClient(io_timeout=0.2)
        try:
            await client.connect(wire, wire, "c", 0)
        finally:
            await client.close()

    fails(TIMEOUT, main)


def run_cases():
    """Run every case_* function (the MicroPython VM calls this)."""
    names = [name for name in sorted(globals()) if name.startswith("case_")]
    for name in names:
        globals()[name]()
    print("ok", len(names))


if pytest is not None:
    from hypothesis import HealthCheck, given, settings
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

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=40))
    def test_garbage_from_the_wire_is_a_protocol_error_or_harmless(wire):
        async def scenario(client, w):
            w.feed(wire)
            w.hang_up()
            return await asyncio.wait_for(client.wait_dead(), 5)

        err = session(scenario, on_message=lambda t, p, r: None)
        assert type(err) is AgentError and err.code in (PROTOCOL, LOST), err

    @settings(max_examples=100, deadline=None)
    @given(st.text(min_size=1, max_size=30).filter(lambda t: not set(t) & set("+#\x00")),
           st.binary(max_size=100), st.integers(min_value=0, max_value=1), st.booleans())
    def test_publish_round_trip(topic, payload, qos, retain):
        # What the client sends, fed back to a client, arrives as it left.
        got = []

        async def scenario(client, wire):
            await client.publish(topic, payload, qos, retain)
            wire.feed(wire.take())
            await until(lambda: got, "the message")
            return got

        got = session(scenario, on_message=lambda t, p, r: got.append((bytes(t), bytes(p), r)))
        assert got == [(topic.encode(), payload, retain)]

    @pytest.mark.parametrize("remaining,header", [(16383, "ff 7f"), (16384, "80 80 01"), (2097151, "ff ff 7f"),
                                                  (2097152, "80 80 80 01")])
    def test_remaining_length_table_2_4_large(remaining, header):
        async def scenario(client, wire):
            await client.publish("t", bytes(remaining - 3))
            return wire.take()

        out = session(scenario)
        assert out[: 1 + len(h(header))] == b"\x30" + h(header) and len(out) == 1 + len(h(header)) + remaining
