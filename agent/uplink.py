"""Uplink: drains the flash outbox to the broker, oldest first, at a bounded rate.

Records stay in the outbox until the broker's PUBACK (QoS 1), so a drop mid-drain resends them on the
next session (duplicates are dropped by the fleet on (device, boot id, seq)); nothing is lost. At most
`window` records are in flight, and a backlog after an outage drains at `max_rate` messages a second so
the node's link and the broker's ingest are not flooded; the readings keep their own times, so they are
stored as history, not as now.
"""

import asyncio

from agent.errors import AgentError
from agent.reporter import KIND_TOPIC
from protocols import topics


class Uplink:
    """Publishes outbox records over `link` (agent/link.py) as soon as a session is up; `wake.set()`
    when there is something new or a session came up."""

    def __init__(self, link, outbox, fleet, device, window=4, max_rate=20):
        self.link = link
        self.outbox = outbox
        self.window = window
        self.max_rate = max_rate
        self.topics = []  # by record kind; an unknown kind goes to the first
        for kind in KIND_TOPIC:
            self.topics.append(str(topics.up(fleet, device, kind)))
        self.wake = asyncio.Event()
        self.sent = 0
        self.failed = 0

    async def run(self):
        """Forever: wait for records and a session, publish a window, wait for the acks, ack the outbox."""
        pids = []
        while True:
            client = self.link.client
            if not self.outbox.count or client is None:
                # No timeout: every new record and every new session sets `wake` (the sampler sets it
                # while records wait), and a wait_for would allocate about 1.3 KB each time it ran out.
                self.wake.clear()
                await self.wake.wait()
                continue
            pids.clear()
            for kind, _, payload in self.outbox.peek(self.window):
                # The client keeps the payload (bytes of its own) until the PUBACK, for retransmission.
                topic = self.topics[kind] if kind < len(self.topics) else self.topics[0]
                try:
                    pids.append(await client.publish(topic, payload, 1))
                except AgentError:
                    break  # the client's window is full or the session is going: wait for what went out
            acked = 0
            for pid in pids:
                if not await client.wait_ack(pid):
                    break  # not acked: it goes again, on this session or the next
                acked += 1
            if acked:
                self.outbox.ack(acked)
                self.sent += acked
            if pids and acked == len(pids):
                await asyncio.sleep(acked / self.max_rate)  # the bounded drain rate
            else:
                self.failed += 1
                await asyncio.sleep(1)
