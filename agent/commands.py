"""Commands from the fleet (`cmd/<fleet>/<device>/<type>`): config, ping, reboot, rebirth.

The MQTT reader hands each message over synchronously with views into its receive buffer; `offer()`
copies it into a small bounded queue (a burst beyond it is dropped and counted: the fleet resends
commands it got no ack for), and `run()` handles them one by one and acks each with its command id.
Commands are rare, so the code that reads them (topic parser, CBOR decoder, message classes) is loaded
per command and dropped afterwards (agent/transient.py): it would otherwise sit in the heap for good.
"""

import asyncio

from agent import transient
from protocols import up

_QUEUE = 4
_MAX_PAYLOAD = 1024  # protocols/limits.py MAX_PAYLOAD, MAX_DEPTH (SPEC.md "Limits")
_MAX_DEPTH = 4
_OK = 0  # protocols/ack.py OK, REFUSED
_REFUSED = 1


def decode(topic, payload):
    """(kind, cid, argument) of a command; (None, None, None) when it is malformed (nothing to ack).

    Only the header is checked here (SPEC.md "Common": key 0 protocol version >= 1, key 1 cid); a
    config document is checked entry by entry by agent/config_check.py, which refuses what is wrong
    with reasons in the ack, so the node needs none of the fleet's message classes.
    """
    from protocols.cbor_lite import loads

    kind = bytes(topic).rsplit(b"/", 1)[-1].decode()
    if len(payload) > _MAX_PAYLOAD:
        return None, None, None
    try:
        obj = loads(payload, max_depth=_MAX_DEPTH)
    except ValueError:  # malformed, or CBOR the fleet never sends
        return None, None, None
    if not isinstance(obj, dict):
        return None, None, None
    version, cid = obj.get(0), obj.get(1)
    if not _is_uint(version) or version < 1 or not _is_uint(cid) or cid > 0xFFFFFFFF:
        return None, None, None
    if kind == "config":
        return kind, cid, obj
    echo = obj.get(2)
    if kind == "ping" and echo is not None and not (_is_uint(echo) and echo <= 0xFFFFFFFFFFFFFFFF):
        return None, None, None
    return kind, cid, echo


def _is_uint(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


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
        kind, cid, arg = transient.call(decode, topic, payload)
        agent = self.agent
        if kind is None:
            self.refused += 1  # malformed: nothing to ack without a cid
        elif kind == "config":
            await self.ack(cid, transient.call(agent.apply_config, arg))
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
        payload = up.ack(agent.sequence.boot, agent.sequence.next(), cid, _REFUSED if reasons else _OK,
                         reasons or None, agent.config.version, result)
        await agent.publish_now("ack", payload)
