"""Commands from the fleet (`cmd/<fleet>/<device>/<type>`): config, ping, reboot, rebirth; OTA offers go to
agent/ota.py (no ack: progress reports), chunks are for update mode only.

The MQTT reader hands each message over synchronously with views into its receive buffer; `offer()`
copies it into a small bounded queue (a burst beyond it is dropped and counted: the fleet resends
commands it got no ack for), and `run()` handles them one by one and acks each with its command id.
Commands are rare, so the code that reads them (agent/command_read.py and its CBOR decoder) and the code
that applies a config (agent/reconfig.py) are loaded per command and dropped afterwards
(agent/transient.py): they would otherwise sit in the heap for good.
"""

import asyncio

from agent import transient
from protocols import up

_QUEUE = 4
_OK = 0  # protocols/ack.py OK, REFUSED
_REFUSED = 1


class Commands:
    """Decodes, applies and acks commands; `agent` supplies config, reporter, sequence and reboot."""

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
            await self.handle(topic, payload)

    async def handle(self, topic, payload):
        """Apply one command and publish its ack."""
        if topic.endswith(b"/ota"):  # an OTA offer: no ack, progress reports (agent/ota.py)
            return await transient.call(ota, "offer", self.agent, payload)
        agent = self.agent
        kind, cid, arg = transient.call(_read, agent, topic, payload)
        if kind is None:
            self.refused += 1  # malformed: nothing to ack without a cid
        elif kind == "config":
            await self.ack(cid, arg)  # the reasons for what was refused
        elif kind == "ping":
            await self.ack(cid, None, arg)
        elif kind == "rebirth":
            await self.ack(cid, None)
            await agent.rebirth()
        elif kind == "reboot":
            await self.ack(cid, None)
            await agent.reboot()
        else:
            await self.ack(cid, ["unsupported"])

    async def ack(self, cid, reasons, result=None):
        """Publish the ack of command `cid` (refused when there are reasons)."""
        agent = self.agent
        seq = agent.sequence.next()
        payload = up.ack(agent.sequence.boot, seq, cid, _REFUSED if reasons else _OK, reasons or None,
                         agent.config.version, result)
        await agent.publish_now("ack", payload, seq)


def _read(agent, topic, payload):
    # (kind, cid, argument); a config is applied here and its argument is the reasons for what was
    # refused. One call for both: the document read is garbage by its end, and the room comes back
    # whole (agent/transient.py). Each step loads and drops its own code, so no two are in the heap
    # together: the reader, then the checks, the defaults and the merge (agent/config.py), then what
    # follows from the new config (agent/reconfig.py).
    kind, cid, arg = transient.call(_decode, topic, payload)
    if kind == "config":
        arg = agent.config.apply(arg)
        from agent import reconfig

        reconfig.follow(agent)
    return kind, cid, arg


def _decode(topic, payload):
    from agent import command_read

    return command_read.decode(topic, payload)


def ota(how, *args):
    """agent/ota.py's `how`(*args), for a transient.call."""
    from agent import ota

    return getattr(ota, how)(*args)
