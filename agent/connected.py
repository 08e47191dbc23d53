"""What the agent does on every new MQTT session (agent/link.py calls back through agent/app.py): the
will reserved for it, then the birth, the subscription to its commands and the OTA confirmation.

Loaded for each connect and dropped afterwards (agent/transient.py): sessions are rare, and between them
this code would only take heap.
"""

from agent import transient

_STATUS = "protocols.up_status"
#: The sensor kind a birth names (SPEC.md "State", key 7).
KIND_NAMES = {"manhole-tilt": "manhole", "water-level": "water", "wind-load": "billboard"}


def will(agent):
    """The last will of the next session: (topic, payload, qos, retain). Reserved at every connect, so
    the will is unique and carries this boot id (SPEC "State")."""
    seq = agent.sequence
    return agent._topic("state"), transient.run(_STATUS, "state", seq.boot, seq.next(), False), 1, True


async def on_connect(agent, client):
    """Birth, the command subscription, the uplink woken, then a new release confirmed (or a rollback
    reported: agent/ota_boot.py)."""
    await birth(agent, client)
    await client.subscribe("cmd/%s/%s/+" % (agent.id.fleet, agent.id.device), 1)  # SPEC.md "Topics"
    agent.uplink.wake.set()
    await transient.run("agent.ota", "connected", agent)


async def birth(agent, client):
    """Publish the retained birth: firmware, config version, boot id, reset cause."""
    seq = agent.sequence
    payload = transient.run(_STATUS, "state", seq.boot, seq.next(), True, agent.firmware, agent.config.version,
                            agent.reset_cause, KIND_NAMES.get(agent.id.kind))
    await client.wait_ack(await client.publish(agent._topic("state"), payload, 1, True))
    agent.reporter.send_ut = True
