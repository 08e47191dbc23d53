"""One MQTT topic of the contract as a checked value (SPEC.md "Topics"): `Topic`, `parse`, `down`, the id
checks and the QoS/retain of each type.

Device to fleet: ``dt/<fleet>/<device_id>/<type>``; fleet to device: ``cmd/<fleet>/<device_id>/<type>``.
Topics are short on purpose: MQTT resends the topic with every PUBLISH. The node keeps only the string
builder of `protocols.topics` loaded; it imports this module to read a command's topic and drops it
afterwards (agent/transient.py). Every name here also reads as `protocols.topics.<name>`. The fleet's
subscription filter lives in `protocols.fleet_topics`.
"""

from protocols.errors import ProtocolError
from protocols.fields import bad
from protocols.limits import MAX_TOPIC

UP = "dt"
DOWN = "cmd"

#: type -> (qos, retain). Retained up: only `state`, so the fleet always finds the last birth/will.
#: `pull` is sent live (never kept in the outbox): a lost one is pulled again after a time-out.
UP_TYPES = {
    "telemetry": (1, False),
    "event": (1, False),
    "health": (1, False),
    "state": (1, True),
    "ack": (1, False),
    "ota": (1, False),
    "pull": (1, False),
}
#: Retained down: `config` (the desired state) and the `ota` offer, which a sleeping or offline device
#: gets on its next (re)subscribe; the campaign clears it with an empty retained payload. A retained
#: reboot/ping would be replayed at each connect, and a chunk answers one pull, so those are not.
DOWN_TYPES = {
    "config": (1, True),
    "ping": (1, False),
    "reboot": (1, False),
    "ota": (1, True),
    "rebirth": (1, False),
    "chunk": (1, False),
}

FLEET_MAX = 16
DEVICE_MAX = 32
_ID_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789"
_ID_CHARS = _ID_FIRST + "-_"


def check_id(value, what: str, longest: int) -> str:
    """Return `value` when it is a valid fleet or device id, else raise ProtocolError("bad_id")."""
    # strip() removes every allowed character from both ends: anything left is a character not allowed
    if not isinstance(value, str) or not 0 < len(value) <= longest or value[0] not in _ID_FIRST \
            or value.strip(_ID_CHARS):
        bad(what + " id", "1..%d characters of a-z 0-9 - _ starting with a-z or 0-9" % longest, (value,), "bad_id")
    return value


class Topic:
    """One concrete topic: direction (`UP`/`DOWN`), fleet id, device id and message type, validated;
    `qos` and `retain` are those its messages are published with."""

    def __init__(self, direction: str, fleet: str, device: str, kind: str) -> None:
        types = UP_TYPES if direction == UP else DOWN_TYPES if direction == DOWN else {}
        if not types:
            bad("direction", "%r or %r" % (UP, DOWN), (direction,), "bad_topic")
        check_id(fleet, "fleet", FLEET_MAX)
        check_id(device, "device", DEVICE_MAX)
        if kind not in types:
            raise ProtocolError("bad_type", "unknown %s type %r" % (direction, kind))
        self.direction = direction
        self.fleet = fleet
        self.device = device
        self.kind = kind
        self.qos, self.retain = types[kind]

    def __str__(self) -> str:
        return "/".join((self.direction, self.fleet, self.device, self.kind))

    def __eq__(self, other) -> bool:
        return isinstance(other, Topic) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


def down(fleet: str, device: str, kind: str) -> Topic:
    """Topic the fleet sends command `kind` to one device on."""
    return Topic(DOWN, fleet, device, kind)


def parse(text) -> Topic:
    """Parse a concrete topic; raise ProtocolError with a reason when it is not one of ours."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode()
        except UnicodeError:
            text = None
    # one test, one message: text, short enough, no wildcards, 4 levels (the prefix is Topic's check)
    parts = text.split("/") if isinstance(text, str) and len(text) <= MAX_TOPIC and "+" not in text \
        and "#" not in text else []
    if len(parts) != 4:
        bad("topic %r" % (text,), "<dt|cmd>/<fleet>/<device>/<type>, UTF-8, at most %d bytes, no wildcards"
            % MAX_TOPIC, (), "bad_topic")
    return Topic(parts[0], parts[1], parts[2], parts[3])


def device_filter(fleet: str, device: str) -> str:
    """Subscription filter a device uses for all of its commands."""
    check_id(fleet, "fleet", FLEET_MAX)
    check_id(device, "device", DEVICE_MAX)
    return DOWN + "/" + fleet + "/" + device + "/+"
