"""MQTTClient and Link under CPython asyncio, against a real private Mosquitto.

paho-mqtt is the observing peer. Misbehaving brokers (silent, never acking, sending malformed packets)
are scripted asyncio servers on loopback, because a correct broker cannot produce them. The exact bytes
of every packet are in tests/test_agent_mqtt_packet.py.
"""

from __future__ import annotations

import asyncio
import threading
import time

import paho.mqtt.client as paho
import pytest

from agent.errors import AgentError
from agent.link import AUTH_REFUSED, BROKER_UNREACHABLE, CONNECTED, NET_DOWN, PROTOCOL_ERROR, STOPPED, Link
from agent.mqtt import PROTOCOL, TIMEOUT, WINDOW_FULL, MQTTClient
from tests.brokerproc import Broker

DEBUG_LOG = "log_type debug\n"  # mosquitto then logs every PINGREQ/PUBACK it receives


async def until(cond, timeout=10.0, what="condition"):
    """Poll `cond` until true; fail with `what` after `timeout` seconds (a hang guard, not a timing test)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        await asyncio.sleep(0.01)


async def reaches(link, state, timeout=10.0):
    """Poll the link until it is in `state`; fail after `timeout` seconds."""
    await until(lambda: link.state == state, timeout, "link state " + state)


def is_timeout(err):
    return type(err) is AgentError and err.code == TIMEOUT


class Observer:
    """A paho-mqtt subscriber collecting (topic, payload, qos, retain)."""

    def __init__(self, port: int, topic: str = "#", user: str | None = None, password: str | None = None):
        self.messages: list[tuple[str, bytes, int, bool]] = []
        self._subscribed = threading.Event()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="observer-%d" % id(self))
        if user:
            self.c.username_pw_set(user, password)
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.qos, bool(m.retain)))
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, 1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("observer could not subscribe")

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.c.publish(topic, payload, qos).wait_for_publish(10)

    def topics(self) -> list[str]:
        return [m[0] for m in self.messages]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path / "broker", extra=DEBUG_LOG) as b:
        yield b


@pytest.fixture
def observer(broker):
    o = Observer(broker.port)
    yield o
    o.close()


class Stream:
    """CPython's (StreamReader, StreamWriter) as one stream the way MicroPython's asyncio has it, the
    only kind the client takes: readinto, write (a copy: CPython >= 3.12 keeps a view of what it could
    not send yet, and the client reuses its buffer at once), drain, close, wait_closed."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    async def readinto(self, buf):
        data = await self.reader.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def write(self, data):
        self.writer.write(bytes(data))

    async def drain(self):
        await self.writer.drain()

    def close(self):
        self.writer.close()

    async def wait_closed(self):
        try:  # CPython waits for unsent data to go; a broker that reads nothing never takes it
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (TimeoutError, OSError):
            self.writer.transport.abort()


async def open_connection(host, port):
    """asyncio.open_connection, as MicroPython returns it: (stream, stream)."""
    s = Stream(*await asyncio.open_connection(host, port))
    return s, s


async def connected(port, client_id="node", client=None, **kw):
    """A client (a new one, or `client` again) connected to 127.0.0.1:port; `kw` split between the
    constructor and connect()."""
    reader, writer = await open_connection("127.0.0.1", port)
    connect_kw = {k: kw.pop(k) for k in ("keepalive", "will", "user", "password", "clean_session") if k in kw}
    client = client or MQTTClient(**kw)
    await client.connect(reader, writer, client_id, **connect_kw)
    return client


# ---- scripted misbehaving servers ---------------------------------------------------------------


async def read_packet(reader):
    """One packet from a client -> (first byte, body)."""
    first, length, shift = (await reader.readexactly(1))[0], 0, 0
    while True:
        b = (await reader.readexactly(1))[0]
        length |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return first, await reader.readexactly(length)


async def scripted(script):
    """Serve one connection with `script(reader, writer)` after reading CONNECT; return (server, port)."""

    async def handle(reader, writer):
        try:
            first, _ = await read_packet(reader)
            assert first == 0x10
            await script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def accept(reader, writer):
    writer.write(b"\x20\x02\x00\x00")


# ---- the client against Mosquitto ---------------------------------------------------------------


def test_publish_qos0_qos1_and_large_payloads_reach_a_subscriber(broker, observer):
    big = bytes(range(256)) * 12  # 3 KB: more than the 1 KB send buffer, goes out in two writes

    async def scenario():
        c = await connected(broker.port)
        assert await c.publish("t/0", b"zero") == 0
        pid = await c.publish(b"t/1", b"one", qos=1, retain=True)
        assert await c.wait_ack(pid) is True
        assert await c.wait_ack(await c.publish("t/big", big, qos=1)) is True
        await until(lambda: len(observer.messages) == 3, what="three messages")
        await c.close()
        return c

    c = asyncio.run(scenario())
    assert observer.messages == [("t/0", b"zero", 0, False), ("t/1", b"one", 1, False), ("t/big", big, 1, False)]
    assert c.retransmits == 0
    late = Observer(broker.port, "t/1")  # the retain flag went out: a late subscriber gets it
    try:
        deadline = time.monotonic() + 10
        while not late.messages and time.monotonic() < deadline:
            time.sleep(0.01)
        assert late.messages == [("t/1", b"one", 1, True)]
    finally:
        late.close()


def test_subscribe_dispatches_and_acks_qos1(broker, observer):
    got = []

    async def scenario():
        c = await connected(broker.port, client_id="sub", on_message=lambda t, p, r: got.append((bytes(t), bytes(p), r)))
        assert await c.subscribe("cmd/#", 1) == 1
        await asyncio.to_thread(observer.publish, "cmd/a", b"x", 1)
        await asyncio.to_thread(observer.publish, "cmd/b", b"", 0)
        await until(lambda: len(got) == 2, what="two commands")
        await until(lambda: "Received PUBACK from sub" in broker.log_text(), what="PUBACK at the broker")
        assert c.error is None
        await c.close()

    asyncio.run(scenario())
    assert got == [(b"cmd/a", b"x", False), (b"cmd/b", b"", False)]


def test_async_on_message_is_awaited(broker, observer):
    got = []

    async def on_message(topic, payload, retained):
        await asyncio.sleep(0)
        got.append(bytes(payload))

    async def scenario():
        c = await connected(broker.port, on_message=on_message)
        await c.subscribe("in", 0)
        await asyncio.to_thread(observer.publish, "in", b"1", 0)
        await until(lambda: got == [b"1"], what="the message")
        await c.close()

    asyncio.run(scenario())


def test_oversized_incoming_publish_is_skipped_counted_and_acked(broker, observer):
    got = []

    async def scenario():
        c = await connected(broker.port, client_id="small", max_packet=128,
                            on_message=lambda t, p, r: got.append(bytes(p)))
        await c.subscribe("in", 1)
        await asyncio.to_thread(observer.publish, "in", b"x" * 1000, 1)
        await asyncio.to_thread(observer.publish, "in", b"after", 1)
        await until(lambda: got == [b"after"], what="the message after the big one")
        await until(lambda: broker.log_text().count("Received PUBACK from small") == 2, what="both acked")
        assert c.oversized == 1 and c.error is None
        await c.close()

    asyncio.run(scenario())


def test_keepalive_pings_keep_an_idle_session_alive(broker):
    async def scenario():
        c = await connected(broker.port, client_id="idle", keepalive=1)
        await until(lambda: broker.log_text().count("Received PINGREQ from idle") >= 3, what="three pings")
        assert c.error is None and c.pings >= 3  # each PINGRESP arrived within 1.5 keepalives
        await c.close()

    asyncio.run(scenario())


def test_bad_password_is_refused_with_the_connack_code(tmp_path):
    with Broker(tmp_path, users={"node": "right"}) as b:
        async def scenario(password):
            c = MQTTClient()
            try:
                await connected(b.port, client=c, user="node", password=password)
            finally:
                await c.close(disconnect=False)

        with pytest.raises(AgentError) as e:
            asyncio.run(scenario("wrong"))
        assert e.value.code in (4, 5)  # 3.2.2.3: bad user name or password, not authorized
        assert str(e.value).startswith("refused: ")
        asyncio.run(scenario("right"))


def test_last_will_only_when_the_connection_vanishes(broker, observer):
    async def scenario():
        clean = await connected(broker.port, client_id="clean", will=("will/clean", b"gone", 1, False))
        await clean.close()  # DISCONNECT: the broker discards the will (3.14.4)
        lost = await connected(broker.port, client_id="lost", will=("will/lost", b"gone", 1, False))
        await lost.close(disconnect=False)  # socket closed without DISCONNECT
        await until(lambda: "will/lost" in observer.topics(), what="the last will")

    asyncio.run(scenario())
    assert [m for m in observer.messages if m[0].startswith("will/")] == [("will/lost", b"gone", 1, False)]


def test_one_client_serves_session_after_session(broker, observer):
    async def scenario():
        c = MQTTClient()
        for i in range(3):
            await connected(broker.port, client=c)
            assert await c.wait_ack(await c.publish("again", b"%d" % i, 1))
            await c.close()
            assert c.error is not None and await c.wait_dead() is c.error
        await until(lambda: len(observer.messages) == 3, what="three messages")

    asyncio.run(scenario())
    assert [m[1] for m in observer.messages] == [b"0", b"1", b"2"]


# ---- misbehaving brokers ------------------------------------------------------------------------


def test_a_silent_broker_is_declared_dead_after_one_and_a_half_keepalives():
    async def silent(reader, writer):
        accept(reader, writer)
        await asyncio.sleep(30)  # answers nothing, not even PINGREQ

    async def scenario():
        server, port = await scripted(silent)
        async with server:
            c = await connected(port, keepalive=1)
            t0 = time.monotonic()
            err = await asyncio.wait_for(c.wait_dead(), 10)
            took = time.monotonic() - t0
            await c.close()
        return c, err, took

    c, err, took = asyncio.run(scenario())
    assert is_timeout(err) and c.pings >= 1
    assert took >= 1.5


def test_no_connack_is_a_timeout():
    async def mute(reader, writer):
        await asyncio.sleep(30)

    async def scenario():
        server, port = await scripted(mute)
        async with server:
            c = MQTTClient(io_timeout=0.3)
            try:
                await connected(port, client=c)
            finally:
                await c.close(disconnect=False)

    with pytest.raises(AgentError) as e:
        asyncio.run(scenario())
    assert is_timeout(e.value)


def test_qos1_is_retransmitted_with_dup_until_acked():
    seen = []

    async def late_acker(reader, writer):
        accept(reader, writer)
        for _ in range(2):
            seen.append(await read_packet(reader))
        pid = seen[-1][1][3:5]  # topic length and "t", then the packet id
        writer.write(b"\x40\x02" + pid)
        await asyncio.sleep(5)

    async def scenario():
        server, port = await scripted(late_acker)
        async with server:
            c = await connected(port, retry_s=0.2)
            pid = await c.publish("t", b"data", qos=1)
            assert await asyncio.wait_for(c.wait_ack(pid), 5) is True
            await c.close()
        return c, pid

    c, pid = asyncio.run(scenario())
    (first, body), (again, body2) = seen
    assert (first, again) == (0x32, 0x3A)  # the copy has DUP (3.3.1.1)
    assert body == body2 == b"\x00\x01t" + pid.to_bytes(2, "big") + b"data"
    assert c.retransmits == 1


def test_full_window_is_refused_and_an_unacking_broker_is_given_up():
    async def never_acks(reader, writer):
        accept(reader, writer)
        while True:
            await read_packet(reader)

    async def scenario():
        server, port = await scripted(never_acks)
        async with server:
            c = await connected(port, window=2, retry_s=0.1, max_retries=2)
            await c.publish("t", b"1", qos=1)
            await c.publish("t", b"2", qos=1)
            with pytest.raises(AgentError) as full:
                await c.publish("t", b"3", qos=1)
            assert full.value.code == WINDOW_FULL
            await c.publish("t", b"qos0 still goes", qos=0)
            err = await asyncio.wait_for(c.wait_dead(), 10)
            await c.close()
        return c, err

    c, err = asyncio.run(scenario())
    assert c.refused == 1 and is_timeout(err) and c.retransmits == 4


def test_a_send_the_broker_never_reads_is_given_up():
    # A broker that stops reading: the socket buffers fill, a drain blocks, the supervisor ends it.
    release = asyncio.Event()

    async def deaf(reader, writer):
        accept(reader, writer)
        await release.wait()

    async def scenario():
        server, port = await scripted(deaf)
        async with server:
            c = await connected(port, io_timeout=0.5)
            with pytest.raises(AgentError) as lost:
                while True:  # QoS 0 until the kernel's buffers are full and a drain stalls
                    await c.publish("t", bytes(60000))
            err = c.error
            release.set()
            await c.close()
        return lost.value, err

    lost, err = asyncio.run(scenario())
    assert is_timeout(err) and lost.code != 0


@pytest.mark.parametrize("packet", [
    b"\x36\x05\x00\x01t\x00\x01",  # PUBLISH with QoS 3
    b"\x30\x03\x00\x01#",  # wildcard in a PUBLISH topic
    b"\x20\x02\x00\x00",  # a second CONNACK
])
def test_malformed_packet_mid_session_kills_the_connection(packet):
    async def bad(reader, writer):
        accept(reader, writer)
        writer.write(packet)
        await asyncio.sleep(5)

    async def scenario():
        server, port = await scripted(bad)
        async with server:
            c = await connected(port)
            err = await asyncio.wait_for(c.wait_dead(), 5)
            await c.close()
        return err

    err = asyncio.run(scenario())
    assert type(err) is AgentError and err.code == PROTOCOL


# ---- the link -----------------------------------------------------------------------------------


class Board:
    """The two things the link needs from a board (firmware/boards/*/board.py): network state and a way
    to open a connection. Records the link's pause before each attempt."""

    def __init__(self):
        self.up = True
        self.opened = 0
        self.pauses = []
        self.link = None

    def network_up(self, timeout_ms):
        return self.up

    async def open_connection(self, host, port):
        self.opened += 1
        if self.link is not None:
            self.pauses.append(self.link.pause_s)
        return await open_connection(host, port)


def quick(board, port, **kw):
    """A link with a quick backoff (0.05 s doubling to 0.2 s, the jitter drawing its ceiling)."""
    kw.setdefault("backoff", (0.05, 0.2))
    kw.setdefault("random", lambda: 1.0)
    board.link = Link(board, "127.0.0.1", port, "node", **kw)
    return board.link


def latest_retained(port, topic):
    """The retained message on `topic`, as a fresh subscriber sees it."""
    o = Observer(port, topic)
    try:
        deadline = time.monotonic() + 10
        while not o.messages and time.monotonic() < deadline:
            time.sleep(0.01)
        return o.messages[0][1] if o.messages else None
    finally:
        o.close()


def test_link_survives_a_broker_restart_with_birth_and_will_on_every_connect(broker):
    board = Board()
    births = []
    wills = []

    async def on_connect(client):
        births.append(client)
        await client.subscribe("cmd/node", 1)
        await client.wait_ack(await client.publish("birth/node", b"%d" % len(births), qos=1, retain=True))

    def will():
        wills.append(len(births))
        return ("will/node", b"%d" % len(births), 1, False)

    async def scenario():
        link = quick(board, broker.port, keepalive=5, on_connect=on_connect, will=will, stable_s=0)
        task = asyncio.create_task(link.run())
        await reaches(link, CONNECTED, 10)
        assert await asyncio.to_thread(latest_retained, broker.port, "birth/node") == b"1"
        broker.stop()
        await reaches(link, BROKER_UNREACHABLE, 10)
        await until(lambda: board.opened >= 4, what="attempts against the dead broker")
        await asyncio.to_thread(broker.start)
        await reaches(link, CONNECTED, 10)
        assert await asyncio.to_thread(latest_retained, broker.port, "birth/node") == b"2"
        observer = await asyncio.to_thread(Observer, broker.port, "#")
        await reaches(link, CONNECTED, 10)
        assert await link.client.wait_ack(await link.client.publish("data/node", b"after", 1))
        await until(lambda: "data/node" in observer.topics(), what="data after the restart")
        await link.stop()
        await asyncio.wait_for(task, 5)
        observer.close()
        return link, observer

    link, observer = asyncio.run(scenario())
    assert link.state == STOPPED and link.connects == 2 and link.drops == 1
    assert link.failures[BROKER_UNREACHABLE] >= 3 and link.failures[AUTH_REFUSED] == 0
    assert births[0] is births[1]  # one client, with its buffers, for every session
    assert wills == [0, 1]  # the will is built afresh for every CONNECT
    assert "will/node" not in observer.topics()  # stop() disconnects cleanly
    # No pause before the first attempt; after the drop of a session that lived stable_s (0 here) the
    # backoff starts again from its base, then doubles up to its cap.
    assert board.pauses[:5] == [0, 0.05, 0.1, 0.2, 0.2]


def test_link_backoff_doubles_with_full_jitter_up_to_a_minute():
    assert Link(Board(), "h", 1, "c").backoff == (1, 60)  # issue 4: never more than a minute
    draws = iter([1.0, 1.0, 0.5, 1.0, 0.0] + [1.0] * 20)
    board = Board()

    async def refused(host, port):
        board.pauses.append(board.link.pause_s)
        raise OSError(111, "refused")

    board.open_connection = refused

    async def scenario():
        # the same doubling as (1, 60) but a thousand times quicker
        link = quick(board, 1, backoff=(0.001, 0.06), random=lambda: next(draws))
        task = asyncio.create_task(link.run())
        await until(lambda: len(board.pauses) >= 10, what="ten attempts")
        await link.stop()
        await asyncio.wait_for(task, 5)
        return link

    link = asyncio.run(scenario())
    assert board.pauses[1:10] == pytest.approx([0.001, 0.002, 0.002, 0.008, 0.0, 0.032, 0.06, 0.06, 0.06])
    assert link.failures[BROKER_UNREACHABLE] >= 9 and link.last_error.startswith("BROKER_UNREACHABLE: ")


def test_link_reports_net_down_then_connects(broker):
    board = Board()
    board.up = False

    async def scenario():
        link = quick(board, broker.port, net_poll_s=0.05)
        task = asyncio.create_task(link.run())
        await reaches(link, NET_DOWN, 5)
        await asyncio.sleep(0.2)
        assert board.opened == 0  # no connection attempt without a network
        board.up = True
        await reaches(link, CONNECTED, 5)
        await link.stop()
        await asyncio.wait_for(task, 5)
        return link

    link = asyncio.run(scenario())
    assert link.failures[NET_DOWN] == 1 and link.connects == 1  # an outage counts once


def test_link_reports_auth_refused(tmp_path):
    with Broker(tmp_path, users={"node": "right"}) as b:
        async def scenario():
            link = quick(Board(), b.port, user="node", password="wrong")
            task = asyncio.create_task(link.run())
            await reaches(link, AUTH_REFUSED, 10)
            await link.stop()
            await asyncio.wait_for(task, 5)
            return link

        link = asyncio.run(scenario())
    assert link.connects == 0 and link.failures[AUTH_REFUSED] >= 1
    assert link.last_error.startswith("AUTH_REFUSED: refused: ")


def test_link_reports_protocol_error_and_unreachable_broker():
    async def garbage(reader, writer):
        writer.write(b"\x20\x02\x00\x09")
        await asyncio.sleep(5)

    async def scenario():
        server, port = await scripted(garbage)
        async with server:
            link = quick(Board(), port)
            task = asyncio.create_task(link.run())
            await reaches(link, PROTOCOL_ERROR, 10)
        await reaches(link, BROKER_UNREACHABLE, 10)  # the server is gone now
        await link.stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())


def test_link_bounds_the_tcp_connect():
    board = Board()

    async def hangs(host, port):
        await asyncio.sleep(30)

    board.open_connection = hangs

    async def scenario():
        link = quick(board, 1, connect_timeout=0.1)
        task = asyncio.create_task(link.run())
        await reaches(link, BROKER_UNREACHABLE, 5)
        await link.stop()
        await asyncio.wait_for(task, 5)
        return link

    assert asyncio.run(scenario()).last_error == "BROKER_UNREACHABLE: TCP connect timed out"
