"""Telemetry: a SenML pack sharing one array with a three-element header (SPEC.md "Telemetry").

Wire form: ``[version, boot, seq, record, record, ...]``: the SenML pack is the tail of the array from the
first map on. The header is positional, not a map, and shares the pack's array, because every byte counts
here (one reading must fit in 25 bytes). RFC 8428 §6 closes the integer label table, so putting boot/seq
into the pack itself would need text labels, which cost more and make the pack non-standard.
Non-map elements between `seq` and the first record are header fields of later versions, ignored.
"""

from protocols import fields
from protocols.errors import ProtocolError
from protocols.message import UpMessage
from protocols.senml import MEASUREMENTS, check_pack, resolve


class Telemetry(UpMessage):
    """Readings of one device: `pack` is a SenML pack (list of records keyed by RFC 8428 integer labels)."""

    KIND = "telemetry"

    def __init__(self, boot: int, seq: int, pack: list) -> None:
        super().__init__(boot, seq)
        self.pack = check_pack(pack)

    def to_obj(self) -> list:
        """``[version, boot, seq] + pack``."""
        return [fields.VERSION, self.boot, self.seq] + self.pack

    @classmethod
    def from_obj(cls, obj) -> "Telemetry":
        """Validate a decoded telemetry array."""
        if not isinstance(obj, list) or len(obj) < 4:
            raise ProtocolError("bad_message", "telemetry must be an array [version, boot, seq, record...]")
        version = obj[0]
        if not fields.is_int(version) or version < 1:
            raise ProtocolError("bad_version", "protocol version must be an integer >= 1, not %r" % (version,))
        start = 3
        while start < len(obj) and not isinstance(obj[start], dict):
            start += 1
        message = cls(obj[1], obj[2], obj[start:])
        message.protocol = version
        return message

    def records(self, now: int, units=MEASUREMENTS) -> list:
        """The pack resolved (RFC 8428 §4.6) against the receiver's clock `now`; catalogue units filled in."""
        return resolve(self.pack, now, units)
