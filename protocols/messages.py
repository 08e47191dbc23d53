"""The functions the agent and the fleet call: `encode`, `decode` (and `decode_up`, `decode_down`).

`decode` enforces the limits of SPEC.md before and after CBOR decoding and turns every codec error into a
ProtocolError, so a caller handles one exception type for anything that came off the wire. Message
classes are imported when first needed, not here. The node encodes its own messages with `protocols.up`
and `protocols.up_status` and reads commands with `protocols.cbor_lite` (agent/command_read.py); it
never imports the fleet's readers of device messages (`protocols.read_up`).
"""

from protocols.cbor import dumps
from protocols.cbor_decode import loads
from protocols.errors import ProtocolError
from protocols.limits import MAX_DEPTH, check_depth, check_size
from protocols.topic import DOWN, UP, parse

#: command topic type -> (module under protocols, class)
COMMANDS = {"config": ("config", "Config"), "ping": ("commands", "Ping"), "reboot": ("commands", "Reboot"),
            "rebirth": ("commands", "Rebirth"), "ota": ("ota", "OtaOffer"), "chunk": ("ota", "Chunk")}


def encode(message) -> bytes:
    """CBOR bytes of `message`, checked against the size and depth limits."""
    obj = message.to_obj()
    check_depth(obj)
    data = dumps(obj)
    check_size(data)
    return data


def load(data):
    """Decode a payload within the limits; any malformed input raises ProtocolError("bad_cbor")."""
    check_size(data)
    try:
        obj = loads(data, max_depth=MAX_DEPTH)
    except ProtocolError:
        raise
    except ValueError as error:
        raise ProtocolError("bad_cbor", str(error)) from None
    check_depth(obj)
    return obj


def decode(topic, data):
    """The message of `data` received on `topic` (a str, bytes or `Topic`), validated."""
    if not hasattr(topic, "kind"):
        topic = parse(topic)
    if topic.direction == UP:
        return decode_up(topic.kind, data)
    return decode_down(topic.kind, data)


def decode_up(kind: str, data):
    """The fleet's reader: a device message of topic type `kind`."""
    from protocols.read_up import READERS

    reader = READERS.get(kind)
    if reader is None:
        raise ProtocolError("bad_type", "no %s message type %r" % (UP, kind))
    return reader(load(data))


def decode_down(kind: str, data):
    """The device's reader: a command of topic type `kind`."""
    entry = COMMANDS.get(kind)
    if entry is None:
        raise ProtocolError("bad_type", "no %s message type %r" % (DOWN, kind))
    module = __import__("protocols." + entry[0], None, None, (entry[1],))
    return getattr(module, entry[1]).from_obj(load(data))
