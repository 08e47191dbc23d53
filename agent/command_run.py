"""One command from the fleet, queued by agent/commands.py: read it, apply it, ack it.

Loaded for each command and dropped afterwards (agent/transient.py), and so is what it loads in turn:
the reader (agent/command_read.py), a config's checks and merge (agent/config.py), what follows from a
new config (agent/reconfig.py) and the ack's encoder (protocols/up_status.py), each for its own call, so
no two of them are in the heap together.
"""

from agent import transient

_OK = 0  # protocols/ack.py OK, REFUSED
_REFUSED = 1


async def handle(agent, topic, payload):
    """Apply one command and publish its ack; an OTA offer goes to agent/ota.py (no ack: progress)."""
    if topic.endswith(b"/ota"):
        return await transient.run("agent.ota", "offer", agent, payload)
    kind, cid, arg = transient.call(_read, agent, topic, payload)
    if kind is None:
        agent.commands.refused += 1  # malformed: nothing to ack without a cid
    elif kind == "config":
        await ack(agent, cid, arg)  # the reasons for what was refused
    elif kind == "ping":
        await ack(agent, cid, None, arg)
    elif kind == "rebirth":
        await ack(agent, cid, None)
        await rebirth(agent)
    elif kind == "reboot":
        await ack(agent, cid, None)
        await agent.reboot()
    else:
        await ack(agent, cid, ["unsupported"])


async def ack(agent, cid, reasons, result=None):
    """Publish the ack of command `cid` (refused when there are reasons)."""
    seq = agent.sequence.next()
    payload = transient.run("protocols.up_status", "ack", agent.sequence.boot, seq, cid,
                            _REFUSED if reasons else _OK, reasons or None, agent.config.version, result)
    await agent.publish_now("ack", payload, seq)


async def rebirth(agent):
    """Resend the birth, the current values and a health report."""
    from agent.app import epoch  # resident: agent/app.py runs the node

    client = agent.link.client
    if client is not None:
        await transient.run("agent.connected", "birth", agent, client)
    agent.reporter.force(epoch())
    agent.uplink.wake.set()
    await agent._health_now()


def _read(agent, topic, payload):
    # (kind, cid, argument); a config is applied here and its argument is the reasons for what was
    # refused. One call for both: the document read is garbage by its end, and the room comes back
    # whole (agent/transient.py). Each step loads and drops its own code, so no two are in the heap
    # together: the reader, then the checks, the defaults and the merge (agent/config.py), then what
    # follows from the new config (agent/reconfig.py).
    kind, cid, arg = transient.run("agent.command_read", "decode", topic, payload)
    if kind == "config":
        arg = agent.config.apply(arg)
        transient.run("agent.reconfig", "follow", agent)
    return kind, cid, arg
