"""Outbox: the store-and-forward queue on flash that keeps readings and events through network loss.

Layout. A directory of numbered segment files ("<n>.seg", n counting up), each at most `seg_bytes` long;
the budget is `max_segments` x `seg_bytes`. A record is

    len u16 | type u8 | seq u32 | payload (len bytes) | crc32 u32 of everything before it   (little-endian)

`type` (the topic type) and `seq` are the caller's; the payload is an encoded message, opaque here.

Crash safety. Records are only ever appended (open "ab", write, close), so a power cut can tear at most
the record being written. Opening checks every record's CRC (one pass at boot: agent/outbox_open.py);
a segment's valid part ends at its first bad record, and a segment with a torn tail is sealed: appends go
to a new segment, so nothing valid ever follows garbage.

Full. When a new segment is needed and `max_segments` exist, the oldest is deleted; the unsent records
in it are added to `dropped` (kept on flash with the ack position).

Drain. peek(n) returns up to n of the oldest records, their payloads read as bytes objects that together
hold at most `buf_bytes` (by default 1024: no MQTT payload may be larger, SPEC.md "Limits" MAX_PAYLOAD,
so a record never needs more, and a window of the uplink's small records fits); RAM is those plus small
bookkeeping, never a segment. The uplink hands the payloads to the MQTT client, which keeps them until
their PUBACK, so a buffer of the outbox's own would only be copied from (and take 1 KB for good).
ack(count) marks the first `count` of them sent.
Consumed segments are deleted at once; the ack position inside a segment is written to flash only every
`ack_every` acked records (flash wear), so a reboot resends at most `ack_every` - 1 records, which the
fleet drops as duplicates by (device, boot id, seq). Nothing acked-but-unsent is possible: the position
on flash never runs ahead of ack().
"""

import struct
from array import array

from agent import flashio, transient
from agent.errors import AgentError

try:
    from micropython import const
except ImportError:  # CPython (tests, tools): const() is the value itself
    const = int  # type: ignore[assignment, no-redef]

_HEAD = const(7)  # len, type, seq
OVERHEAD = const(11)  # _HEAD + crc
_MAX_PEEK = const(64)  # records per peek: the SenML pack limit


class Outbox:
    """Bounded append-only queue of (type, seq, payload) records under directory `root`."""

    def __init__(self, root, seg_bytes=4096, max_segments=16, buf_bytes=1024, ack_every=32):
        if max_segments < 2 or seg_bytes < OVERHEAD + 1 or buf_bytes < 1 or ack_every < 1:
            raise AgentError("outbox needs max_segments >= 2, seg_bytes > %d, buf_bytes, ack_every >= 1"
                             % OVERHEAD)
        self.root = root
        self.seg_bytes = seg_bytes
        self.max_segments = max_segments
        self.ack_every = ack_every
        self.max_payload = min(buf_bytes, seg_bytes - OVERHEAD, 0xFFFF)
        self._budget = buf_bytes  # payload bytes one peek hands out, together
        self._hdr = bytearray(_HEAD)
        self._crc = bytearray(4)
        # position (segment, offset) after each peeked record; 32-bit ints: 4 bytes each, not a list's 8.
        # Sized by the largest peek asked for (the uplink's window), not for _MAX_PEEK.
        self._pk_seg = self._pk_off = array("i")
        self._peeked = 0
        self._segs = []  # segment numbers, oldest first; the head is always in _segs[0]
        self._ends = []  # valid length of each
        self._head = 0  # offset of the oldest unacked record in _segs[0]
        self._unsaved = 0  # records acked since the ack position was last written
        self._sealed = False  # the last segment has a torn tail: append to a new one
        self._next_seg = 0  # number of the next segment to make
        self.count = 0  # records waiting
        self.dropped = 0  # records deleted unsent because the budget was full (persisted)
        transient.run("agent.outbox_open", "scan", self)  # once, at boot: its code is not kept

    # -- files

    def _path(self, seg):
        return "%s/%d.seg" % (self.root, seg)

    def _read_record(self, f):
        """Read the record at f's position: its payload (bytes), or None when it is bad."""
        hdr = self._hdr
        if f.readinto(hdr) != _HEAD:
            return None
        n = hdr[0] | (hdr[1] << 8)
        if n > self.max_payload:
            return None
        payload = f.read(n) if n else b""
        crc = self._crc
        if len(payload) != n or f.readinto(crc) != 4:
            return None
        want = crc[0] | (crc[1] << 8) | (crc[2] << 16) | (crc[3] << 24)
        return payload if flashio.checksum(payload, flashio.checksum(hdr)) == want else None

    def _records(self, index, start):
        """Number of (valid) records in _segs[index] from offset `start` to its end."""
        end = self._ends[index]
        count = 0
        with open(self._path(self._segs[index]), "rb") as f:
            f.seek(start)
            hdr = self._hdr
            while start < end and f.readinto(hdr) == _HEAD:
                start += OVERHEAD + (hdr[0] | (hdr[1] << 8))
                f.seek(start)
                count += 1
        return count

    def _recount(self):
        count = 0
        for i in range(len(self._segs)):
            count += self._records(i, self._head if i == 0 else 0)
        self.count = count

    def _save(self):
        seg = self._segs[0] if self._segs else self._next_seg
        flashio.write(self.root + "/state", struct.pack("<III", seg, self._head, self.dropped))
        self._unsaved = 0

    def _normalise(self):
        """Delete fully consumed segments (never the last one, appends go there)."""
        while len(self._segs) > 1 and self._head >= self._ends[0]:
            flashio.remove(self._path(self._segs.pop(0)))
            self._ends.pop(0)
            self._head = 0

    # -- writing

    def append(self, kind, seq, payload):
        """Store one record durably (the file is closed before this returns); may drop the oldest segment."""
        n = len(payload)
        if n > self.max_payload:
            raise AgentError("outbox record of %d bytes is larger than %d" % (n, self.max_payload))
        if not self._segs or self._sealed or self._ends[-1] + OVERHEAD + n > self.seg_bytes:
            self._new_segment()
        hdr = self._hdr
        struct.pack_into("<HBI", hdr, 0, n, kind, seq)
        crc = flashio.checksum(payload, flashio.checksum(hdr))
        struct.pack_into("<I", self._crc, 0, crc)
        with open(self._path(self._segs[-1]), "ab") as f:
            f.write(hdr)
            f.write(payload)
            f.write(self._crc)
        self._ends[-1] += OVERHEAD + n
        self.count += 1

    def _new_segment(self):
        if len(self._segs) >= self.max_segments:
            lost = self._records(0, self._head)
            self.dropped += lost
            self.count -= lost
            self._peeked = 0  # positions in the dropped segment are gone
            flashio.remove(self._path(self._segs.pop(0)))
            self._ends.pop(0)
            self._head = 0
            self._save()
        seg = self._next_seg
        self._next_seg += 1
        with open(self._path(seg), "wb"):
            pass
        self._segs.append(seg)
        self._ends.append(0)
        self._sealed = False
        self._normalise()

    # -- draining

    def peek(self, n=1):
        """Up to n oldest records as (type, seq, payload bytes).

        As many as fit in `buf_bytes` of payload together (at least one when any waits).
        """
        out: list = []
        n = min(n, _MAX_PEEK)
        if len(self._pk_seg) < n:
            self._pk_seg = array("i", bytes(4 * n))
            self._pk_off = array("i", bytes(4 * n))
        size = 0
        index, off = 0, self._head
        while len(out) < n and index < len(self._segs):
            seg = self._segs[index]
            if off < self._ends[index]:
                with open(self._path(seg), "rb") as f:
                    f.seek(off)
                    while len(out) < n and off < self._ends[index]:
                        payload = self._read_record(f)
                        if payload is None:  # went bad on flash since open(): the rest of this segment is lost
                            self._ends[index] = off
                            self._recount()
                            break
                        size += len(payload)
                        if out and size > self._budget:
                            n = len(out)  # the budget is spent: no more records this time
                            break
                        hdr = self._hdr
                        out.append((hdr[2], hdr[3] | (hdr[4] << 8) | (hdr[5] << 16) | (hdr[6] << 24), payload))
                        off += OVERHEAD + len(payload)
                        self._pk_seg[len(out) - 1] = seg
                        self._pk_off[len(out) - 1] = off
            index, off = index + 1, 0
        self._peeked = len(out)
        return out

    def ack(self, count):
        """Mark the first `count` records of the last peek as sent; returns how many were acked."""
        count = min(count, self._peeked)
        self._peeked = 0
        seg = self._pk_seg[count - 1] if count > 0 else -1
        if seg not in self._segs:
            return 0  # nothing peeked, or its segment was dropped meanwhile: it will be sent again
        while self._segs[0] != seg:
            flashio.remove(self._path(self._segs.pop(0)))
            self._ends.pop(0)
        self._head = self._pk_off[count - 1]
        self.count -= count
        self._unsaved += count
        self._normalise()
        if self._unsaved >= self.ack_every:
            self._save()
        return count

    def sync(self):
        """Write the ack position now (before a planned reboot)."""
        if self._unsaved:
            self._save()
