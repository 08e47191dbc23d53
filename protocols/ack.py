"""Answer of a device to a command (SPEC.md "Ack")."""

from protocols import fields
from protocols.errors import ProtocolError
from protocols.limits import check_depth
from protocols.message import UpMessage

OK = 0
REFUSED = 1


class Ack(UpMessage):
    """Command `cid` was done (OK) or refused (REFUSED, with reason codes).

    `config` is the config version in force after the command; `result` is the command's answer (a ping's
    echo value), any CBOR value nested at most 2 deep.
    """

    KIND = "ack"

    def __init__(self, boot, seq, cid, status, reasons=None, config=None, result=None) -> None:
        super().__init__(boot, seq)
        self.cid = fields.uint(cid, "cid")
        self.status = fields.choice(status, "status", (OK, REFUSED))
        self.reasons = None if reasons is None else fields.texts(reasons, "reasons")
        if status == REFUSED and not self.reasons:
            raise ProtocolError("bad_field", "a refusal must give at least one reason")
        self.config = None if config is None else fields.uint(config, "config")
        if result is not None:
            check_depth(result, 2)
        self.result = result

    def to_obj(self) -> dict:
        """Key 3 cid, 4 status, 5 reasons, 6 config version, 7 result."""
        out = self.header()
        out[3] = self.cid
        out[4] = self.status
        fields.put(out, 5, self.reasons)
        fields.put(out, 6, self.config)
        fields.put(out, 7, self.result)
        return out
