"""Base classes of the messages: what every device message and every command carries (SPEC.md "Common").

Up (device -> fleet) maps: key 0 protocol version, 1 boot id, 2 sequence number; their own keys from 3.
Down (fleet -> device) maps: key 0 protocol version, 1 command id; their own keys from 2.
Readers ignore keys they do not know, so a newer fleet reads an older device and the other way round.
"""

from protocols import fields
from protocols.topic import DOWN, UP


class Message:
    """A message of the contract; subclasses set KIND/DIRECTION and implement `to_obj`.

    Commands read themselves (`from_obj`, the node needs it); device messages are read by the fleet's
    `protocols.read_up`, which the node never imports."""

    KIND = ""
    DIRECTION = ""

    def to_obj(self):
        """The message as the plain value (dict with int keys, or list) that is CBOR-encoded."""
        raise NotImplementedError

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.to_obj() == self.to_obj()

    def __repr__(self) -> str:
        return "%s(%r)" % (type(self).__name__, self.to_obj())


class UpMessage(Message):
    """A device message: carries the boot id and the 32-bit sequence number (SPEC.md "Sequence")."""

    DIRECTION = UP

    def __init__(self, boot: int, seq: int) -> None:
        self.boot = fields.uint(boot, "boot")
        self.seq = fields.uint(seq, "seq")
        self.protocol = fields.VERSION

    def header(self) -> dict:
        """The common keys 0..2 as a fresh dict for `to_obj` to extend."""
        return {0: fields.VERSION, 1: self.boot, 2: self.seq}


class Command(Message):
    """A fleet command: carries the command id the device's ack refers to."""

    DIRECTION = DOWN

    def __init__(self, cid: int) -> None:
        self.cid = fields.uint(cid, "cid")

    def header(self) -> dict:
        """The common keys 0..1 as a fresh dict for `to_obj` to extend."""
        return {0: fields.VERSION, 1: self.cid}

    def to_obj(self) -> dict:
        """The header only; commands with fields of their own extend it."""
        return self.header()

    @classmethod
    def from_obj(cls, obj):
        """Validate a decoded map of a command that is its header only."""
        return cls(cls.read_header(obj, cls.KIND)[2])

    @staticmethod
    def read_header(obj, name: str):
        """(map, version, cid) of a decoded command."""
        obj = fields.as_map(obj, name)
        return obj, fields.version(obj), fields.require(obj, 1, "cid")
