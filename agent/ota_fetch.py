"""Pulling an update's files from the fleet, a window of chunks at a time (SPEC.md "OTA"), in update mode.

`Fetch.pull()` takes each file in its stored form (the envelope as it is, a file compressed) into the
inactive slot. Chunks come through the MQTT reader's callback (`chunk`) and are written from its receive
buffer straight to flash: a chunk is taken only when it is the next expected one. The next window (at
most 8 chunks) is pulled once the last is written; a window not complete within _WAIT_MS is pulled again
from the last good offset, and at once after a reconnect (`poke`: its offer comes again). What was
written stays on flash, so after a power cut the update resumes each file where it stopped. The node
(agent/ota_mode.py) supplies `sequence` and `publish_now`.
"""

import asyncio
import os
import time

from protocols import up_status

_WAIT_MS = 5000  # a window not complete by then is pulled again
_TRIES = 5  # windows in a row that brought nothing on a live session: TRANSFER_FAILED
IDLE_S = 300  # nothing pulled for this long (no network, no fleet): TRANSFER_FAILED


class Failed(Exception):
    """The update failed; the message is its reason code."""


def head(p, i):
    """(major type, argument, next index) of the CBOR head at p[i]."""
    first = p[i]
    arg = first & 31
    i += 1
    if arg >= 24:
        n = 1 << (arg - 24)
        if n > 8:
            raise ValueError("bad CBOR head")
        arg = int.from_bytes(bytes(p[i:i + n]), "big")
        i += n
    return first >> 5, arg, i


def _chunk(p):
    # (cid, index, offset, total, data start, data end) of a chunk {0 version, 1 cid, 2 index, 3 offset,
    # 4 data, 5 total}, read in the receive buffer without a copy
    kind, n, i = head(p, 0)
    if kind != 5:
        raise ValueError("not a map")
    got = [-1, -1, -1, -1, -1, -1]  # by key
    a = b = 0
    for _ in range(n):
        kind, key, i = head(p, i)
        kind, value, i = head(p, i)
        if kind == 2:
            a = i
            i = b = i + value
        elif kind != 0:
            raise ValueError("not a chunk")
        if key < 6:
            got[key] = value
    if i > len(p):
        raise ValueError("truncated")
    return got[1], got[2], got[3], got[5], a, b


def size(path):
    """Bytes in the file at `path`, 0 when there is none."""
    try:
        return os.stat(path)[6]
    except OSError:
        return 0


class Fetch:
    """The download of update `cid` (firmware `firmware`) for `node`."""

    def __init__(self, node, cid, firmware):
        self.node = node
        self.cid = cid
        self.firmware = firmware
        self.file = self.error = None
        self.index = self.offset = self.end = self.total = -1  # the chunk expected next
        self.pulled = self.todo = self.reported = 0  # bytes pulled and to pull; last percent reported
        self.got = asyncio.Event()

    def poke(self):
        """Pull again at once (a new session: what was asked on the last one is lost)."""
        self.got.set()

    def stop(self, reason):
        """End the download with `reason` at its next step."""
        self.error = reason
        self.got.set()

    def again(self, payload):
        """An offer came: this update's again (poke), its cancel or an empty one (stop, CANCELLED), or
        another update's (stop: the fleet moved on; the agent takes that one after the restart)."""
        try:
            kind, n, i = head(payload, 0)
            kind, key, i = head(payload, i)  # key 0
            kind, key, i = head(payload, head(payload, i)[2])  # key 1...
            kind, cid, i = head(payload, i)  # ...its value: the cid
        except (ValueError, IndexError):
            cid = None
        if cid == self.cid and payload[-2:] != b"\x06\xf5":  # canonical (SPEC.md): a cancel ends with 6: true
            self.poke()
        else:
            self.stop("CANCELLED")

    def chunk(self, payload):
        """MQTT callback (no await): write a chunk (a view into the receive buffer) if it is the next."""
        try:
            cid, index, offset, total, a, b = _chunk(payload)
        except (ValueError, IndexError):
            return
        file = self.file
        if cid != self.cid or index != self.index or offset != self.offset or total != self.total or file is None:
            return  # a duplicate, or a chunk of an earlier window or update
        if b > a:
            try:
                file.write(payload[a:b])
            except OSError:
                self.stop("NO_SPACE")
                return
            self.offset = offset + b - a
            self.pulled += b - a
        if self.offset >= self.end or a == b:
            self.got.set()

    async def report(self, state, percent=None, reason=None):
        """Publish progress of this update (SPEC.md "OTA"), live."""
        seq = self.node.sequence
        await self.node.publish_now("ota", up_status.ota_progress(seq.boot, seq.next(), self.cid, state, percent,
                                                                  reason, self.firmware))

    async def pull(self, files, folder, percent=False):
        """Pull `files` [(index, name, stored size)] into `folder`; with `percent`, report downloading
        progress every 10 %. Raises Failed with the reason code."""
        self.pulled = self.reported = 0
        self.todo = 1
        for _, name, total in files:
            self.todo += max(0, total - size(folder + "/" + name))
        for index, name, total in files:
            await self._fetch(index, folder + "/" + name, total, percent)

    async def _fetch(self, index, path, total, percent):
        have = size(path)
        if have > total:
            os.remove(path)
        self.file = open(path, "ab")
        self.index, self.offset, self.total = index, min(have, total), total
        tries = 0
        node = self.node
        last = time.time()
        try:
            while self.offset < total:
                if self.error is not None:
                    raise Failed(self.error)
                at = self.offset
                count = min(8, (total - at + 511) // 512)  # protocols/ota.py WINDOW, CHUNK
                self.end = min(total, at + count * 512)
                self.got.clear()
                seq = node.sequence
                ask = up_status.pull(seq.boot, seq.next(), self.cid, index, at, count)
                if await node.publish_now("pull", ask):
                    try:
                        await asyncio.wait_for(self.got.wait(), _WAIT_MS / 1000)
                    except asyncio.TimeoutError:
                        tries += 1
                else:
                    await asyncio.sleep(1)  # no session: pull again once one is up (or in a second)
                if self.offset > at:
                    tries = 0
                    last = time.time()
                    self.file.flush()  # kept across a power cut from here
                    done = self.pulled * 100 // self.todo
                    if percent and done >= self.reported + 10:
                        self.reported = done
                        await self.report(1, done)  # downloading
                elif tries > _TRIES or time.time() - last > IDLE_S:
                    raise Failed("TRANSFER_FAILED")
        finally:
            self.index = -1
            self.file.close()
            self.file = None
