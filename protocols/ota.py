"""Over-the-air update messages (SPEC.md "OTA"): the fleet's offer, the device's pulls, the fleet's chunks
and the device's progress reports.

The offer (`cmd/…/ota`, retained) names a stored release; the device pulls its signed envelope (file
index 0) and the manifest's files (index i >= 1: files[i-1], in their compressed stored form) a window of
chunks at a time (`dt/…/pull`), and the fleet answers each pull with that many chunks (`cmd/…/chunk`).
The release format itself (manifest, envelope, trust list) is protocols/manifest.py.
"""

from protocols import fields
from protocols.errors import ProtocolError
from protocols.message import Command, UpMessage

DOWNLOADING, VERIFYING, STAGED, DONE, FAILED, ROLLED_BACK = 1, 2, 3, 4, 5, 6
STATES = (DOWNLOADING, VERIFYING, STAGED, DONE, FAILED, ROLLED_BACK)
#: Bytes of data per chunk (the last chunk of a file is shorter): a chunk message is ~540 bytes, well
#: inside the 1024-byte payload limit the device's receive buffer is sized for.
CHUNK = 512
#: Most chunks one pull asks for: the device's window (it asks for the next once it has written these).
WINDOW = 8
#: Reason codes of a failed or rolled-back update (SPEC.md "OTA"); readers accept others (added later).
REASONS = ("BAD_SIGNATURE", "UNTRUSTED_KEY", "DOWNGRADE", "ABI_MISMATCH", "BOARD_MISMATCH", "NO_SPACE",
           "HASH_MISMATCH", "TRANSFER_FAILED", "BAD_MANIFEST", "TRIAL_FAILED", "CRASHED", "CANCELLED")


def _bytes(value, name, low, high):
    if not isinstance(value, (bytes, bytearray)) or not low <= len(value) <= high:
        fields.bad(name, "a byte string of %d..%d bytes" % (low, high))
    return bytes(value)


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
    """Offer of release `release` (its seq) of firmware version `firmware` as update `cid`: its signed
    envelope (release.cbor) is `size` bytes with SHA-256 `sha256`. `cancel`: stop and discard any download
    of this cid (the fleet sends it live to a device mid-download when a campaign ends without it)."""

    KIND = "ota"

    def __init__(self, cid, firmware, release, size, sha256, cancel=False) -> None:
        super().__init__(cid)
        self.firmware = fields.text(firmware, "firmware", 32)
        self.release = fields.uint(release, "release")
        if release == 0:
            fields.bad("release", "a release seq >= 1", (release,))
        self.size = fields.uint(size, "size")
        self.sha256 = _bytes(sha256, "sha256", 32, 32)
        self.cancel = fields.flag(cancel, "cancel")

    def to_obj(self) -> dict:
        """Key 2 firmware version, 3 release seq, 4 envelope size, 5 envelope SHA-256, 6 cancel (only when
        true: optional fields are left out)."""
        out = self.header()
        out.update({2: self.firmware, 3: self.release, 4: self.size, 5: self.sha256})
        if self.cancel:
            out[6] = True
        return out

    @classmethod
    def from_obj(cls, obj) -> "OtaOffer":
        """Validate a decoded OTA offer map."""
        obj, _, cid = cls.read_header(obj, "ota")
        need = fields.require
        return cls(cid, need(obj, 2, "firmware"), need(obj, 3, "release"), need(obj, 4, "size"),
                   need(obj, 5, "sha256"), obj.get(6, False))


class Pull(UpMessage):
    """The device asks for `count` (1..WINDOW) chunks of file `index` (0: the envelope, i >= 1: the
    manifest's files[i-1]) of update `cid`, from byte `offset` of the file's stored form."""

    KIND = "pull"

    def __init__(self, boot, seq, cid, index, offset, count) -> None:
        super().__init__(boot, seq)
        self.cid = fields.uint(cid, "cid")
        self.index = fields.uint(index, "index")
        self.offset = fields.uint(offset, "offset")
        if fields.uint(count, "count", WINDOW) == 0:
            fields.bad("count", "1..%d" % WINDOW, (count,))
        self.count = count

    def to_obj(self) -> dict:
        """Key 3 cid, 4 file index, 5 offset, 6 count."""
        out = self.header()
        out.update({3: self.cid, 4: self.index, 5: self.offset, 6: self.count})
        return out


class Chunk(Command):
    """`data` (at most CHUNK bytes) of file `index` of update `cid` from byte `offset`; `total` is the size
    of the file's stored form. A pull at or past the end gets one empty chunk at `total`."""

    KIND = "chunk"

    def __init__(self, cid, index, offset, data, total) -> None:
        super().__init__(cid)
        self.index = fields.uint(index, "index")
        self.offset = fields.uint(offset, "offset")
        self.data = _bytes(data, "data", 0, CHUNK)
        self.total = fields.uint(total, "total")
        if offset + len(self.data) > total:
            fields.bad("offset + data", "at most total %d" % total, (offset + len(self.data),))

    def to_obj(self) -> dict:
        """Key 2 file index, 3 offset, 4 data, 5 total size of the file's stored form."""
        out = self.header()
        out.update({2: self.index, 3: self.offset, 4: self.data, 5: self.total})
        return out

    @classmethod
    def from_obj(cls, obj) -> "Chunk":
        """Validate a decoded chunk map."""
        obj, _, cid = cls.read_header(obj, "chunk")
        need = fields.require
        return cls(cid, need(obj, 2, "index"), need(obj, 3, "offset"), need(obj, 4, "data"), need(obj, 5, "total"))
