"""Uplink: drains the outbox over QoS 1, a bounded window at a time, at a bounded rate, losing nothing.

The client runs over the in-memory Wire of tests/test_agent_mqtt_packet.py; the test plays the broker,
so every PUBLISH is seen byte for byte and acked (or not) on purpose.
"""

from __future__ import annotations

import asyncio
import time

from agent.mqtt import MQTTClient
from agent.uplink import Uplink
from tests.test_agent_mqtt_packet import CONNACK, Wire, until


class Outbox:
    """The outbox's draining side (agent/outbox.py): peek oldest first as views, ack from the front."""

    def __init__(self, records):
        self.records = list(records)
        self.acked = []

    @property
    def count(self):
        return len(self.records)

    def peek(self, n=1):
        return [(kind, seq, memoryview(bytearray(payload))) for kind, seq, payload in self.records[:n]]

    def ack(self, n):
        self.acked += self.records[:n]
        del self.records[:n]


class Link:
    """What the uplink reads of agent/link.py: the client while a session is up, else None."""

    client = None


def published(data):
    """The (pid, topic, payload) of each QoS 1 PUBLISH in `data`, checking each one's fixed header."""
    out = []
    while data:
        assert data[0] == 0x32 and data[1] < 0x80, data  # QoS 1, no DUP, no RETAIN; a short packet
        body, data = data[2 : 2 + data[1]], data[2 + data[1] :]
        end = 2 + int.from_bytes(body[:2], "big")
        out.append((int.from_bytes(body[end : end + 2], "big"), body[2:end].decode(), body[end + 2 :]))
    return out


async def session(link, wire=None, window=4):
    wire = wire or Wire()
    wire.feed(CONNACK)
    client = MQTTClient(retry_s=30, window=window)
    await client.connect(wire, wire, "node", 0)
    wire.take()
    link.client = client
    return client, wire


def test_drains_a_window_at_a_time_and_acks_the_outbox_after_the_pubacks():
    records = [(i % 2, i, b"r%d" % i) for i in range(10)]  # telemetry and events alternating
    outbox, link = Outbox(records), Link()

    async def scenario():
        uplink = Uplink(link, outbox, "city", "wl-7", window=4, max_rate=1000)
        task = asyncio.create_task(uplink.run())
        client, wire = await session(link)
        uplink.wake.set()
        seen = []
        while len(seen) < 10:
            await until(lambda: wire.sent, "a window")
            await asyncio.sleep(0.02)  # whatever else the uplink would send without an ack
            window = published(wire.take())
            assert 1 <= len(window) <= 4, window  # never more than `window` in flight
            assert not outbox.acked[len(seen) :]  # nothing acked before its PUBACK
            seen.extend(window)
            wire.feed(b"".join(b"\x40\x02" + pid.to_bytes(2, "big") for pid, _, _ in window))
            await until(lambda: len(outbox.acked) == len(seen), "the outbox acked")
        task.cancel()
        await client.close()
        return uplink, seen

    uplink, seen = asyncio.run(scenario())
    kinds = ("telemetry", "event")
    assert [(t, p) for _, t, p in seen] == [("dt/city/wl-7/" + kinds[k], p) for k, _, p in records]
    assert outbox.acked == records and uplink.sent == 10 and uplink.failed == 0


def test_the_drain_rate_is_bounded():
    outbox, link = Outbox([(0, i, b"x") for i in range(12)]), Link()

    async def scenario():
        uplink = Uplink(link, outbox, "city", "wl-7", window=4, max_rate=50)
        client, wire = await session(link)

        async def broker():  # acks everything at once
            while True:
                await until(lambda: wire.sent, "a window", 10000)
                wire.feed(b"".join(b"\x40\x02" + pid.to_bytes(2, "big") for pid, _, _ in published(wire.take())))

        acker = asyncio.create_task(broker())
        task = asyncio.create_task(uplink.run())
        t0 = time.monotonic()
        await until(lambda: not outbox.records, "the outbox drained")
        took = time.monotonic() - t0
        task.cancel()
        acker.cancel()
        await client.close()
        return took

    # three windows of four, each followed by 4/50 s: the first two pauses come before the last window
    assert asyncio.run(scenario()) >= 2 * 4 / 50


def test_what_a_dropped_session_did_not_ack_goes_again_on_the_next():
    records = [(0, i, b"r%d" % i) for i in range(3)]
    outbox, link = Outbox(records), Link()

    async def scenario():
        uplink = Uplink(link, outbox, "city", "wl-7", window=4, max_rate=1000)
        task = asyncio.create_task(uplink.run())
        client, wire = await session(link)
        uplink.wake.set()
        await until(lambda: len(published(bytes(wire.sent))) == 3, "the window")
        first = published(wire.take())
        wire.feed(b"\x40\x02" + first[0][0].to_bytes(2, "big"))  # one PUBACK, then the broker is gone
        wire.hang_up()
        await until(lambda: outbox.acked, "the acked record acked in the outbox")
        await client.close()
        link.client = None
        assert outbox.acked == records[:1] and uplink.failed == 1
        client, wire = await session(link, Wire())  # the next session: the same client, as the link does
        uplink.wake.set()
        await until(lambda: len(published(bytes(wire.sent))) == 2, "the rest again")
        again = published(wire.take())
        wire.feed(b"".join(b"\x40\x02" + pid.to_bytes(2, "big") for pid, _, _ in again))
        await until(lambda: not outbox.records, "the outbox drained")
        task.cancel()
        await client.close()
        return first, again

    first, again = asyncio.run(scenario())
    assert [p for _, _, p in again] == [p for _, _, p in first[1:]]  # the two not acked, in order
    assert outbox.acked == records


def test_a_full_client_window_shrinks_the_uplinks_window_without_losing_records():
    # The client's window is shared with the agent's live messages: when it is full the uplink waits for
    # what it has out and goes on, rather than dropping or repeating records.
    records = [(0, i, b"r%d" % i) for i in range(5)]
    outbox, link = Outbox(records), Link()

    async def scenario():
        uplink = Uplink(link, outbox, "city", "wl-7", window=4, max_rate=1000)
        task = asyncio.create_task(uplink.run())
        client, wire = await session(link, window=2)
        uplink.wake.set()
        sizes = []
        while outbox.records:
            await until(lambda: wire.sent, "a window")
            await asyncio.sleep(0.02)
            window = published(wire.take())
            sizes.append(len(window))
            wire.feed(b"".join(b"\x40\x02" + pid.to_bytes(2, "big") for pid, _, _ in window))
            await until(lambda: len(outbox.acked) == sum(sizes), "the outbox acked")
        task.cancel()
        await client.close()
        return sizes

    assert asyncio.run(scenario()) == [2, 2, 1]
    assert outbox.acked == records


class KeepingOutbox(Outbox):
    """The outbox's filling side too: what Agent.publish_now keeps goes to the end."""

    def append(self, kind, seq, payload):
        self.records.append((kind, seq, bytes(payload)))


def test_a_live_message_the_broker_did_not_take_is_kept_and_resent_on_its_own_topic():
    # SPEC.md "Topics": health, ack and ota progress are resent like readings until a PUBACK. The agent
    # tries them at once (agent/app.py publish_now); one whose session ends first goes to the outbox
    # under its seq, since the fleet would otherwise report that number missing.
    from agent.app import Agent
    from agent.reporter import KIND_TOPIC

    outbox, link = KeepingOutbox([]), Link()
    counted = []

    async def scenario():
        uplink = Uplink(link, outbox, "city", "wl-7", window=4, max_rate=1000)
        agent = type("Node", (), {})()
        agent.link, agent.outbox, agent.uplink = link, outbox, uplink
        agent._topic = lambda kind: "dt/city/wl-7/" + kind
        agent._count = counted.append
        client, wire = await session(link)
        taken = asyncio.create_task(Agent.publish_now(agent, "ack", b"a4", 4))
        await until(lambda: wire.sent, "the ack")
        (pid, topic, payload), = published(wire.take())
        wire.feed(b"\x40\x02" + pid.to_bytes(2, "big"))
        assert await taken and not outbox.records and topic == "dt/city/wl-7/ack"  # taken: not kept

        lost = asyncio.create_task(Agent.publish_now(agent, "health", b"h5", 5))
        await until(lambda: wire.sent, "the health report")
        wire.hang_up()  # no PUBACK: the session is gone
        assert not await lost
        await client.close()
        link.client = None
        assert outbox.records == [(KIND_TOPIC.index("health"), 5, b"h5")]
        assert not await Agent.publish_now(agent, "ota", b"o6", 6)  # no session at all: kept too
        assert not await Agent.publish_now(agent, "pull", b"p7")  # no seq given: live only

        task = asyncio.create_task(uplink.run())
        client, wire = await session(link, Wire())
        uplink.wake.set()
        await until(lambda: len(published(bytes(wire.sent))) == 2, "the kept messages")
        again = published(wire.take())
        wire.feed(b"".join(b"\x40\x02" + pid.to_bytes(2, "big") for pid, _, _ in again))
        await until(lambda: not outbox.records, "the outbox drained")
        task.cancel()
        await client.close()
        return again

    again = asyncio.run(scenario())
    assert [(t, p) for _, t, p in again] == [("dt/city/wl-7/health", b"h5"), ("dt/city/wl-7/ota", b"o6")]
    assert counted == ["publish"]
