"""All message types by topic, and the two functions the agent and the fleet call: `encode`, `decode`.

`decode` enforces the limits of SPEC.md before and after CBOR decoding and turns every codec error into a
ProtocolError, so a caller handles one exception type for anything that came off the wire.
"""

from protocols import cbor
from protocols.ack import Ack
from protocols.commands import Ping, Rebirth, Reboot
from protocols.config import Config
from protocols.errors import ProtocolError
from protocols.event import Event
from protocols.health import Health
from protocols.limits import MAX_DEPTH, check_depth, check_size
from protocols.ota import OtaOffer, OtaProgress
from protocols.state import State
from protocols.telemetry import Telemetry
from protocols.topics import DOWN, UP, parse

#: (direction, topic type) -> message class
CLASSES = {}
for _cls in (Telemetry, Event, Health, State, Ack, OtaProgress, Config, Ping, Reboot, Rebirth, OtaOffer):
    CLASSES[(_cls.DIRECTION, _cls.KIND)] = _cls


def encode(message) -> bytes:
    """CBOR bytes of `message`, checked against the size and depth limits."""
    obj = message.to_obj()
    check_depth(obj)
    data = cbor.dumps(obj)
    check_size(data)
    return data


def load(data):
    """Decode a payload within the limits; any malformed input raises ProtocolError("bad_cbor")."""
    check_size(data)
    try:
        obj = cbor.loads(data, max_depth=MAX_DEPTH)
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
    cls = CLASSES.get((topic.direction, topic.kind))
    if cls is None:
        raise ProtocolError("bad_type", "no message type for %s" % topic)
    return cls.from_obj(load(data))


def decode_up(kind: str, data):
    """Shortcut for the fleet: a device message of topic type `kind`."""
    return _by(UP, kind).from_obj(load(data))


def decode_down(kind: str, data):
    """Shortcut for the device: a command of topic type `kind`."""
    return _by(DOWN, kind).from_obj(load(data))


def _by(direction, kind):
    cls = CLASSES.get((direction, kind))
    if cls is None:
        raise ProtocolError("bad_type", "no %s message type %r" % (direction, kind))
    return cls
