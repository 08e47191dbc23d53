"""MQTT topics of the contract (SPEC.md "Topics"), the part the node keeps loaded: the topic strings it
publishes on. Device to fleet: ``dt/<fleet>/<device_id>/<type>``; fleet to device: ``cmd/...``.

Everything else (`Topic`, `parse`, `down`, `device_filter`, `check_id`, the QoS/retain tables) is in
`protocols.topic` and reads as `protocols.topics.<name>` too: `__getattr__` below imports it on first use
(PEP 562; MicroPython has module `__getattr__` too), so the node pays for it only while it reads a
command's topic (agent/commands.py, through agent/transient.py).
"""


def up(fleet, device, kind):
    """The topic string a device publishes `kind` on. Ids and type are not checked here: the ids come from
    the provisioned identity (`fleet provision` checks them with `check_id`), the type from agent code."""
    return "dt/" + fleet + "/" + device + "/" + kind


def __getattr__(name):
    """The names of protocols.topic, imported on first use."""
    if name[0] == "_":  # dunders probed by import machinery and tools: not the topic module's business
        raise AttributeError(name)
    from protocols import topic

    return getattr(topic, name)
