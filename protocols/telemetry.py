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


class Telemetry(UpMessage):
    """Readings of one device: `pack` is a SenML pack (list of records keyed by RFC 8428 integer labels).

    The node builds packs with `senml_pack.PackBuilder` and encodes them with `protocols.up.telemetry`
    (the same bytes as this class); only the shape is checked here, the fleet checks a received pack in
    full (`protocols.read_up`).
    """

    KIND = "telemetry"

    def __init__(self, boot: int, seq: int, pack: list) -> None:
        super().__init__(boot, seq)
        if not isinstance(pack, list) or not pack:
            raise ProtocolError("senml_pack", "a SenML pack is a non-empty array of records")
        self.pack = pack

    def to_obj(self) -> list:
        """``[version, boot, seq] + pack``."""
        return [fields.VERSION, self.boot, self.seq] + self.pack

    def records(self, now: int, units=None) -> list:
        """The pack resolved (RFC 8428 §4.6) against the receiver's clock `now`; catalogue units filled in
        (`units`, default `senml.MEASUREMENTS`). Fleet side: the resolver is imported only here."""
        from protocols.senml import MEASUREMENTS
        from protocols.senml_resolve import resolve

        return resolve(self.pack, now, MEASUREMENTS if units is None else units)
