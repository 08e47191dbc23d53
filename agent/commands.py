"""Commands from the fleet (`cmd/<fleet>/<device>/<type>`): config, ping, reboot, rebirth.

The MQTT reader hands each message over synchronously with views into its receive buffer; `offer()`
copies it into a small bounded queue (a burst beyond it is dropped and counted: the fleet resends
commands it got no ack for), and `run()` handles them one by one and acks each with its command id.
"""

import asyncio

from protocols import messages, topics
from protocols.ack import OK, REFUSED, Ack
from protocols.commands import Ping, Rebirth, Reboot
from protocols.config import Config
from protocols.errors import ProtocolError

QUEUE = 4


class Commands:
    """Decodes, applies and acks commands; `agent` supplies config, reporter, sequence and reboot."""

    def __init__(self, agent):
        self.agent = agent
        self.queue = []
        self.dropped = 0
        self.refused = 0
        self.wake = asyncio.Event()

    def offer(self, topic, payload, retained):
        """MQTT callback: keep a copy of the message for run(); never blocks, never raises."""
        if len(self.queue) >= QUEUE:
            self.dropped += 1
            return
        self.queue.append((bytes(topic), bytes(payload)))
        self.wake.set()

    async def run(self):
        """Handle queued commands forever."""
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            topic, payload = self.queue.pop(0)
            try:
                await self.handle(topic, payload)
            except ProtocolError:
                self.refused += 1  # malformed: nothing to ack without a cid

    async def handle(self, topic, payload):
        """Apply one command and publish its ack."""
        kind = topics.parse(topic).kind
        message = messages.decode_down(kind, payload)
        agent = self.agent
        if isinstance(message, Config):
            reasons = agent.apply_config(message.to_obj())
            await self.ack(message.cid, reasons)
        elif isinstance(message, Ping):
            await self.ack(message.cid, None, message.echo)
        elif isinstance(message, Rebirth):
            await self.ack(message.cid, None)
            await agent.rebirth()
        elif isinstance(message, Reboot):
            await self.ack(message.cid, None)
            await agent.reboot()
        else:
            await self.ack(message.cid, ["unsupported"])

    async def ack(self, cid, reasons, result=None):
        """Publish the ack of command `cid` (refused when there are reasons)."""
        agent = self.agent
        status = REFUSED if reasons else OK
        message = Ack(agent.sequence.boot, agent.sequence.next(), cid, status, reasons or None,
                      agent.config.version, result)
        await agent.publish_now("ack", messages.encode(message))
