"""Update mode on a simulated device: pulling one update and checking it (SPEC.md "OTA", Transfer, and
"OTA on the device", 2), as agent/ota_mode.py and agent/ota_fetch.py do on a board.

The envelope (file index 0) first: its size and SHA-256 must be the offer's, its key id one of the running
firmware's trust list and its Ed25519 signature valid (`cryptography`) before the manifest is read; then
the release seq, board, `.mpy` version and free flash. Then, in manifest order, only the files whose
SHA-256 differs from what the device runs, each inflated as its chunks come (zlib, 1 KB window) into a
running SHA-256 checked at its end. A chunk is taken only when it is the next expected one; the next
window (up to 8 chunks) is pulled when the last is in, a window not complete after WAIT_S is pulled again
from the last good offset, and at once on a new session. Progress as update mode sends it, live:
2 verifying, 1 downloading at every 10 % of the files, 3 staged, or 5 failed with the reason.

Memory: an `Update` exists only while its device is in update mode; it holds the envelope while it comes
(at most 16.5 KB, dropped once checked; the manifest is decoded once per process, `Catalogue.manifest`)
and, for the file under way, an inflater and a hash: never a whole file.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocols import manifest as mf
from protocols import up_status
from protocols.errors import ProtocolError
from protocols.ota import CHUNK, DOWNLOADING, FAILED, STAGED, VERIFYING, WINDOW
from tools.fleetsim.items import OTA, PULL

WAIT_S = 5.0  # agent/ota_fetch.py _WAIT_MS: a window not complete by then is pulled again
TRIES = 5  # windows in a row that brought nothing on a live session: TRANSFER_FAILED
WINDOW_BITS = 10  # fleet/ota/store.py: the files are zlib streams with a 1 KB window
CUT_AFTER = 3 * CHUNK  # a device that loses its link mid-download does so this far into a file
# what a device does with the updates it takes (tools/fleetsim/ota.py `behaviour` draws one per device)
WORKS, ROLLS_BACK, NO_SPACE, CUTS = range(4)


class Failed(Exception):
    """The update failed; the message is its reason code."""


class Update:
    """Update `offer` (protocols.ota.OtaOffer) of device `dev` in update mode. `on_end(reason)` is called
    once when it ends: None when staged, else the reason code."""

    __slots__ = ("dev", "offer", "on_end", "plan", "index", "offset", "total", "end", "envelope", "inflater",
                 "digest", "size", "expect", "manifest", "pulled", "todo", "reported", "tries", "timer", "session", "cut",
                 "ended")

    def __init__(self, dev: Any, offer: Any, on_end: Any) -> None:
        self.dev = dev
        self.offer = offer
        self.on_end = on_end
        self.plan: list[tuple[int, list[Any]]] = []  # (file index, manifest entry) still to pull, in order
        self.index, self.offset, self.total, self.end = 0, 0, offer.size, 0  # the chunk expected next
        self.envelope: bytearray | None = bytearray()
        self.inflater: Any = None
        self.digest: Any = None
        self.size = 0
        self.expect: list[Any] | None = None  # the manifest entry of the file under way
        self.manifest: mf.Manifest | None = None  # once the envelope is checked
        self.pulled = self.todo = self.reported = self.tries = 0
        self.timer: Any = None
        self.session = -1  # the device's session the last pull went out on
        self.cut = False
        self.ended = False

    # ---- the device's session ----
    def session_up(self) -> None:
        """A session of update mode is up: what was asked on an earlier one is lost, pull it again."""
        if not self.ended:
            self.pull()

    def offer_again(self, offer: Any | None) -> None:
        """An offer came: this update's (pulled again if the last pull went out on an earlier session),
        or its cancel, an empty payload or another update's: the end, CANCELLED."""
        if offer is not None and offer.cid == self.offer.cid and not offer.cancel:
            if self.session != self.dev.ledger.connects:
                self.pull()
            return
        self.finish("CANCELLED")

    # ---- pulling ----
    def pull(self) -> None:
        """Ask for the next window of the file under way (nothing while there is no session: the next
        one pulls again)."""
        dev = self.dev
        if self.ended or not dev.online():
            return
        at = self.offset
        count = max(1, min(WINDOW, (self.total - at + CHUNK - 1) // CHUNK))  # at the end: one empty chunk
        self.end = min(self.total, at + count * CHUNK)
        seq = dev.next_seq()
        dev.mode_live(PULL, seq, up_status.pull(dev.boot, seq, self.offer.cid, self.index, at, count))
        dev.ledger.ota.pulls += 1
        self.session = dev.ledger.connects
        if self.timer is not None:
            self.timer.cancel()
        self.timer = dev.ctx.loop.call_later(WAIT_S, self._stale, at)

    def _stale(self, at: int) -> None:
        self.timer = None
        if self.ended:
            return
        if self.offset == at and self.dev.online():
            self.tries += 1
            if self.tries > TRIES:
                self.finish("TRANSFER_FAILED")
                return
        self.pull()

    def chunk(self, chunk: Any) -> None:
        """A chunk (protocols.ota.Chunk): taken when it is the next expected, else dropped (a duplicate,
        or a chunk of an earlier window)."""
        if self.ended or (chunk.cid, chunk.index, chunk.offset, chunk.total) != \
                (self.offer.cid, self.index, self.offset, self.total):
            return
        data = chunk.data
        try:
            if self.envelope is not None:
                self.envelope += data
            else:
                out = self.inflater.decompress(data)
                self.digest.update(out)
                self.size += len(out)
                self.pulled += len(data)
        except zlib.error:
            self.finish("HASH_MISMATCH")
            return
        self.offset += len(data)
        self.dev.ledger.ota.received += len(data)
        if not data or self.offset >= self.end:
            self._window_done()
        elif self.dev.behaviour == CUTS and not self.cut and self.offset >= CUT_AFTER:
            self.cut = True  # mid-window: the rest of it is lost with the link
            self.dev.ledger.ota.cuts += 1
            self.dev.cut(self.dev.ctx.settings.ota_cut_s)

    def _window_done(self) -> None:
        self.tries = 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            if self.offset < self.total:
                self._percent()
                self.pull()
            elif self.envelope is not None:
                self._checked(bytes(self.envelope))
            else:
                self._file_done()
        except Failed as failure:
            self.finish(str(failure))

    def _percent(self) -> None:
        if self.envelope is None:
            done = self.pulled * 100 // self.todo
            if done >= self.reported + 10:
                self.reported = done
                self.report(DOWNLOADING, done)

    # ---- checks ----
    def _checked(self, envelope: bytes) -> None:
        """The envelope is in: report verifying, check it, plan the files."""
        self.envelope = None
        self.report(VERIFYING)
        dev, offer = self.dev, self.offer
        running = dev.firmware
        digest = hashlib.sha256(envelope).digest()
        if len(envelope) != offer.size or digest != offer.sha256:
            raise Failed("TRANSFER_FAILED")
        try:
            manifest_bytes, kid, signature = mf.read_signed(envelope)
            key = mf.trusted_key(running.trust, kid)
        except ProtocolError as error:
            raise Failed(error.reason) from None
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(signature, manifest_bytes)
        except InvalidSignature:
            raise Failed("BAD_SIGNATURE") from None
        try:
            manifest = dev.ctx.catalogue.manifest(digest, manifest_bytes)
        except ProtocolError:
            raise Failed("BAD_MANIFEST") from None
        if manifest.seq <= running.release:
            raise Failed("DOWNGRADE")
        if manifest.board != running.board:
            raise Failed("BOARD_MISMATCH")
        if manifest.mpy != running.mpy:
            raise Failed("ABI_MISMATCH")
        if dev.behaviour == NO_SPACE:
            raise Failed("NO_SPACE")
        self.plan = [(i, entry) for i, entry in enumerate(manifest.files, 1) if running.files.get(entry[0]) != entry[2]]
        self.todo = 1 + sum(entry[3] for _i, entry in self.plan)  # as agent/ota_fetch.py counts
        self.manifest = manifest
        self._next_file()

    def _next_file(self) -> None:
        if not self.plan:
            self.finish(None)  # installed: the restart is into the new release, on trial
            return
        self.index, self.expect = self.plan.pop(0)
        self.offset, self.total = 0, self.expect[3]
        self.inflater = zlib.decompressobj(WINDOW_BITS)
        self.digest = hashlib.sha256()
        self.size = 0
        self.pull()

    def _file_done(self) -> None:
        tail = self.inflater.flush()
        self.digest.update(tail)
        self.size += len(tail)
        entry = self.expect
        if entry is None or not self.inflater.eof or (self.size, self.digest.digest()) != (entry[1], entry[2]):
            raise Failed("HASH_MISMATCH")
        self.inflater = self.digest = self.expect = None
        self._percent()
        self._next_file()

    # ---- the end ----
    def report(self, state: int, percent: int | None = None, reason: str | None = None) -> None:
        """Progress of this update, live (update mode has no outbox)."""
        dev = self.dev
        seq = dev.next_seq()
        dev.mode_live(OTA, seq, up_status.ota_progress(dev.boot, seq, self.offer.cid, state, percent, reason,
                                                           self.offer.firmware))

    def finish(self, reason: str | None) -> None:
        """End the update: staged (reason None) or failed; reported, then `on_end`."""
        if self.ended:
            return
        self.ended = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.envelope = self.inflater = self.digest = self.expect = None
        self.plan = []
        if reason is None:
            self.report(STAGED)
        else:
            self.report(FAILED, None, reason)
        self.on_end(reason)
