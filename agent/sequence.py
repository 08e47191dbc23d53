"""Sequence: the boot id and the 32-bit message sequence number, unique across reboots (SPEC.md
"Common fields").

Writing flash per message would wear it out and cost a write per publish, so numbers are reserved in
blocks: the file holds (boot id, mark) where every seq below `mark` may have been used. At open the boot
id is incremented and the next block [mark, mark + block) reserved with one write; next() hands numbers
out of it and reserves the following block when it runs out. A reboot therefore skips at most `block` - 1
numbers (the SPEC allows skipping ahead; a skip across a boot id change is not loss) and never repeats
one. seq wraps from 2**32 - 1 to 0 as the SPEC says.

A missing file is a new device: boot id 1, seq 0. A file that exists but fails its CRC on both copies
cannot say which numbers were used, so the boot id is drawn at random (os.urandom): (device, boot id, seq)
stays unique even if seq restarts. File: 8 bytes little-endian boot id, mark, via flashio (atomic).
"""

import os
import struct

from agent import flashio
from agent.errors import AgentError

_MASK = 0xFFFFFFFF  # seq and boot id are uint32


class Sequence:
    """Boot id and message counter persisted at `path`; opening it starts a new boot."""

    def __init__(self, path, block=256):
        if not isinstance(block, int) or not 1 <= block <= 1 << 20:
            raise AgentError("sequence block must be an integer 1..1048576")
        self.path = path
        self.block = block
        self.recovered = False  # True when the state file was corrupt and the boot id random
        data = flashio.read(path)
        if data is not None and len(data) == 8:
            boot, mark = struct.unpack("<II", data)
            self.boot = (boot + 1) & _MASK
        elif data is None and not flashio.exists(path) and not flashio.exists(path + flashio.TMP):
            self.boot, mark = 1, 0
        else:
            self.recovered = True
            self.boot, mark = struct.unpack("<I", os.urandom(4))[0] | 1, 0
        self._seq = mark
        self._left = 0
        self._reserve()

    def _reserve(self):
        mark = (self._seq + self.block) & _MASK
        flashio.write(self.path, struct.pack("<II", self.boot, mark))
        self._left = self.block

    def next(self):
        """The next sequence number (reserves the following block on flash when this one is used up)."""
        if self._left == 0:
            self._reserve()
        seq = self._seq
        self._seq = (seq + 1) & _MASK
        self._left -= 1
        return seq
