"""Uplink: drains the flash outbox to the broker, oldest first, at a bounded rate.

Records stay in the outbox until the broker's PUBACK (QoS 1), so a drop mid-drain resends them on the
next session (duplicates are dropped by the fleet on (device, boot id, seq)); nothing is lost. A backlog
after an outage drains at `max_rate` messages a second so the node's link and the broker's ingest are not
flooded; the readings keep their own times, so they are stored as history, not as now.
"""

import asyncio

from agent.mqtt_packet import MQTTError
from agent.reporter import KIND_TOPIC
from protocols import topics


class Uplink:
    """Publishes outbox records over `link` (agent/link.py) as soon as a session is up."""

    def __init__(self, link, outbox, fleet, device, window=4, max_rate=20):
        self.link = link
        self.outbox = outbox
        self.window = window
        self.max_rate = max_rate
        self.topics = [str(topics.up(fleet, device, kind)) for kind in KIND_TOPIC]
        self.wake = asyncio.Event()
        self.sent = 0
        self.failed = 0

    async def run(self):
        """Forever: wait for records and a session, publish a window, wait for the acks, ack the outbox."""
        while True:
            if not self.outbox.count or self.link.client is None:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), 1)
                except asyncio.TimeoutError:
                    pass
                continue
            try:
                done = await self._send_window()
            except MQTTError:
                self.failed += 1
                await asyncio.sleep(1)
                continue
            if done:
                # Bounded drain rate: a window of `done` messages per done/max_rate seconds.
                await asyncio.sleep(done / self.max_rate)

    async def _send_window(self):
        client = self.link.client
        if client is None:
            return 0
        records = self.outbox.peek(self.window)
        pids = []
        for kind, _, payload in records:
            topic = self.topics[kind] if kind < len(self.topics) else self.topics[0]
            # The view is valid only until the outbox's next peek or append, and the client keeps the
            # payload for retransmission: give it its own copy (a few dozen bytes).
            pids.append(await client.publish(topic, bytes(payload), 1))
        acked = 0
        for pid in pids:
            if not await client.wait_ack(pid):
                break
            acked += 1
        if acked:
            self.outbox.ack(acked)
            self.sent += acked
        if acked < len(pids):
            self.failed += 1
            return 0
        return acked
