"""Opening an Outbox (agent/outbox.py) at boot: scan its segments on flash, once.

Loaded for the call and dropped after it (agent/transient.py): the running node never needs it again.
"""

import os
import struct

from agent import flashio
from agent.outbox import OVERHEAD


def scan(box):
    """Find `box`'s segments on flash, their valid ends and the ack position; count the records."""
    try:
        os.mkdir(box.root)
    except OSError:
        pass  # exists
    segs = []
    for name in os.listdir(box.root):
        if name.endswith(".seg") and name[:-4].isdigit():
            segs.append(int(name[:-4]))
    segs.sort()
    state = flashio.read(box.root + "/state")
    first, head = (segs[0] if segs else 0), 0
    if state is not None and len(state) == 12:
        seg, off, box.dropped = struct.unpack("<III", state)
        if seg > first:  # consumed segments whose deletion was cut short (segs is sorted)
            while segs and segs[0] < seg:
                flashio.remove(box._path(segs.pop(0)))
            first = seg
        if segs and seg == segs[0]:
            head = off
    box._next_seg = (segs[-1] + 1) if segs else first
    for seg in segs:
        # The valid part of each segment: up to its first record that fails its CRC.
        size = os.stat(box._path(seg))[6]
        end = 0
        with open(box._path(seg), "rb") as f:
            while end + OVERHEAD <= size:
                payload = box._read_record(f)
                if payload is None:
                    break
                end += OVERHEAD + len(payload)
        box._segs.append(seg)
        box._ends.append(end)
        box._sealed = end < size
    box._head = min(head, box._ends[0]) if segs else 0
    box._recount()
    box._normalise()
