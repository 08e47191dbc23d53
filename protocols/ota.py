"""Over-the-air update messages (SPEC.md "OTA"). The offer is a placeholder: issue 7 defines the update
itself (manifest, signature, chunks) and may add keys; only what progress reporting needs is fixed now."""

from protocols import fields
from protocols.errors import ProtocolError
from protocols.message import Command, UpMessage

DOWNLOADING, VERIFYING, STAGED, DONE, FAILED, ROLLED_BACK = 1, 2, 3, 4, 5, 6
STATES = (DOWNLOADING, VERIFYING, STAGED, DONE, FAILED, ROLLED_BACK)


class OtaProgress(UpMessage):
    """Progress of update `cid` towards firmware `target`: `state`, `percent`, and a reason code when it
    failed or rolled back."""

    KIND = "ota"

    def __init__(self, boot, seq, cid, state, percent=None, reason=None, target=None) -> None:
        super().__init__(boot, seq)
        self.cid = fields.uint(cid, "cid")
        self.state = fields.choice(state, "state", STATES)
        self.percent = None if percent is None else fields.uint(percent, "percent", 100)
        self.reason = None if reason is None else fields.text(reason, "reason", 32)
        if state in (FAILED, ROLLED_BACK) and reason is None:
            raise ProtocolError("bad_field", "a failed or rolled-back update must give a reason")
        self.target = None if target is None else fields.text(target, "target", 32)

    def to_obj(self) -> dict:
        """Key 3 cid, 4 state, 5 percent, 6 reason, 7 target firmware version."""
        out = self.header()
        out[3] = self.cid
        out[4] = self.state
        fields.put(out, 5, self.percent)
        fields.put(out, 6, self.reason)
        fields.put(out, 7, self.target)
        return out


class OtaOffer(Command):
    """Placeholder offer of firmware `firmware` (version text) at `url`, `size` bytes, SHA-256 `sha256`."""

    KIND = "ota"

    def __init__(self, cid, firmware, url, size, sha256) -> None:
        super().__init__(cid)
        self.firmware = fields.text(firmware, "firmware", 32)
        self.url = fields.text(url, "url")
        self.size = fields.uint(size, "size")
        if not isinstance(sha256, (bytes, bytearray)) or len(sha256) != 32:
            raise ProtocolError("bad_field", "sha256 must be 32 bytes")
        self.sha256 = bytes(sha256)

    def to_obj(self) -> dict:
        """Key 2 firmware version, 3 url, 4 size, 5 sha256."""
        out = self.header()
        out.update({2: self.firmware, 3: self.url, 4: self.size, 5: self.sha256})
        return out

    @classmethod
    def from_obj(cls, obj) -> "OtaOffer":
        """Validate a decoded OTA offer map."""
        obj, _, cid = cls.read_header(obj, "ota")
        need = fields.require
        return cls(cid, need(obj, 2, "firmware"), need(obj, 3, "url"), need(obj, 4, "size"),
                   need(obj, 5, "sha256"))
