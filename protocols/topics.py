"""MQTT topics of the contract (SPEC.md "Topics"): build, parse, and the QoS/retain of each type.

Device to fleet: ``dt/<fleet>/<device_id>/<type>``; fleet to device: ``cmd/<fleet>/<device_id>/<type>``.
Topics are short on purpose: MQTT resends the topic with every PUBLISH.
"""

from protocols.errors import ProtocolError
from protocols.limits import MAX_TOPIC

UP = "dt"
DOWN = "cmd"

#: type -> (qos, retain). Retained up: only `state`, so the fleet always finds the last birth/will.
UP_TYPES = {
    "telemetry": (1, False),
    "event": (1, False),
    "health": (1, False),
    "state": (1, True),
    "ack": (1, False),
    "ota": (1, False),
}
#: Retained down: only `config`, the desired state a device gets on every (re)subscribe. A retained
#: reboot/ping would be replayed at each connect, so those are never retained.
DOWN_TYPES = {
    "config": (1, True),
    "ping": (1, False),
    "reboot": (1, False),
    "ota": (1, False),
    "rebirth": (1, False),
}

FLEET_MAX = 16
DEVICE_MAX = 32
_ID_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789"
_ID_CHARS = _ID_FIRST + "-_"


def check_id(value, what: str, longest: int) -> str:
    """Return `value` when it is a valid fleet or device id, else raise ProtocolError("bad_id")."""
    if not isinstance(value, str) or not value:
        raise ProtocolError("bad_id", "%s id must be a non-empty string" % what)
    if len(value) > longest:
        raise ProtocolError("bad_id", "%s id %r longer than %d characters" % (what, value, longest))
    if value[0] not in _ID_FIRST:
        raise ProtocolError("bad_id", "%s id %r must start with a-z or 0-9" % (what, value))
    for char in value:
        if char not in _ID_CHARS:
            raise ProtocolError("bad_id", "%s id %r: character %r not in a-z 0-9 - _" % (what, value, char))
    return value


def _types(direction: str) -> dict:
    if direction == UP:
        return UP_TYPES
    if direction == DOWN:
        return DOWN_TYPES
    raise ProtocolError("bad_topic", "direction must be %r or %r, not %r" % (UP, DOWN, direction))


class Topic:
    """One concrete topic: direction (`UP`/`DOWN`), fleet id, device id and message type, validated."""

    __slots__ = ("direction", "fleet", "device", "kind")

    def __init__(self, direction: str, fleet: str, device: str, kind: str) -> None:
        types = _types(direction)
        check_id(fleet, "fleet", FLEET_MAX)
        check_id(device, "device", DEVICE_MAX)
        if kind not in types:
            raise ProtocolError("bad_type", "unknown %s type %r" % (direction, kind))
        self.direction = direction
        self.fleet = fleet
        self.device = device
        self.kind = kind

    def __str__(self) -> str:
        return "/".join((self.direction, self.fleet, self.device, self.kind))

    def __eq__(self, other) -> bool:
        return isinstance(other, Topic) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return "Topic(%r)" % str(self)

    @property
    def qos(self) -> int:
        """QoS the message of this topic is published with."""
        return _types(self.direction)[self.kind][0]

    @property
    def retain(self) -> bool:
        """Whether messages of this topic are published with the retain flag."""
        return _types(self.direction)[self.kind][1]


def up(fleet: str, device: str, kind: str) -> Topic:
    """Topic a device publishes `kind` on."""
    return Topic(UP, fleet, device, kind)


def down(fleet: str, device: str, kind: str) -> Topic:
    """Topic the fleet sends command `kind` to one device on."""
    return Topic(DOWN, fleet, device, kind)


def parse(text) -> Topic:
    """Parse a concrete topic; raise ProtocolError with a reason when it is not one of ours."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode()
        except UnicodeError:
            raise ProtocolError("bad_topic", "topic is not UTF-8") from None
    if not isinstance(text, str):
        raise ProtocolError("bad_topic", "topic must be text")
    if len(text) > MAX_TOPIC:
        raise ProtocolError("bad_topic", "topic longer than %d characters" % MAX_TOPIC)
    if "+" in text or "#" in text:
        raise ProtocolError("bad_topic", "wildcards are not allowed in a concrete topic: %r" % text)
    parts = text.split("/")
    if len(parts) != 4:
        raise ProtocolError("bad_topic", "%r: expected 4 levels <dt|cmd>/<fleet>/<device>/<type>" % text)
    if parts[0] not in (UP, DOWN):
        raise ProtocolError("bad_topic", "%r: prefix must be %r or %r" % (text, UP, DOWN))
    return Topic(parts[0], parts[1], parts[2], parts[3])


def device_filter(fleet: str, device: str) -> str:
    """Subscription filter a device uses for all of its commands."""
    check_id(fleet, "fleet", FLEET_MAX)
    check_id(device, "device", DEVICE_MAX)
    return DOWN + "/" + fleet + "/" + device + "/+"


def fleet_filter(fleet: str, kind: str = "+") -> str:
    """Subscription filter the fleet uses for every device's `kind` messages (all types by default)."""
    check_id(fleet, "fleet", FLEET_MAX)
    if kind != "+" and kind not in UP_TYPES:
        raise ProtocolError("bad_type", "unknown %s type %r" % (UP, kind))
    return UP + "/" + fleet + "/+/" + kind
