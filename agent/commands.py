"""Commands from the fleet (`cmd/<fleet>/<device>/<type>`): config, ping, reboot, rebirth; OTA offers go to
agent/ota.py (no ack: progress reports), chunks are for update mode only.

The MQTT reader hands each message over synchronously with views into its receive buffer; `offer()`
copies it into a small bounded queue (a burst beyond it is dropped and counted: the fleet resends
commands it got no ack for), and `run()` handles them one by one and acks each with its command id.
Commands are rare, so the code that handles them (agent/command_run.py), reads them (agent/command_read.py
and its CBOR decoder) and applies a config (agent/reconfig.py) is loaded per command and dropped
afterwards (agent/transient.py): it would otherwise sit in the heap for good.
"""

import asyncio

from agent import transient

_QUEUE = 4


class Commands:
    """Queues commands for agent/command_run.py, which decodes, applies and acks them; `agent` supplies
    config, reporter, sequence and reboot."""

    def __init__(self, agent):
        self.agent = agent
        self.queue = []
        self.dropped = 0
        self.refused = 0
        self.wake = asyncio.Event()
        self.ota = None  # the OTA confirmation under way (agent/ota_boot.py)

    def offer(self, topic, payload, retained):
        """MQTT callback: keep a copy of the message for run(); never blocks, never raises."""
        if topic[-1] == 107 and bytes(topic[-6:]) == b"/chunk":  # OTA data: for update mode only (a late one)
            return
        if len(self.queue) >= _QUEUE:
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
            await transient.run("agent.command_run", "handle", self.agent, topic, payload)
