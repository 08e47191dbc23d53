"""What the VM writes, turned into what a board's UART sends.

- In-band markers from vm/_emuboot.py (`ESC ] boardemu;<name> BEL`) are cut out and reported.
- A lone "\\n" becomes "\\r\\n": a board's stdout is "cooked" (mp_hal_stdout_tx_strn_cooked), the unix
  port's is not, and the VM's pty must not do it (its output processing is off, or "\\r\\n" from the
  REPL would become "\\r\\r\\n" and mpremote could not find the raw REPL's prompts).
- The REPL mode is followed from the banners the REPL prints, so a soft reboot can come back to the
  raw REPL as a board does (pyexec keeps its mode across a soft reset; mpremote relies on that).
- After a soft reboot in raw-REPL mode, the unix REPL starts in friendly mode: the host sends it
  Ctrl-A and this filter swallows the friendly banner until the raw REPL's own banner.
"""

from __future__ import annotations

MARK_PREFIX = b"\x1b]boardemu;"
MARK_END = b"\x07"
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_BANNER = b'Type "help()" for more information.\r\n'
_MARK_MAX = 64


class BoardOutput:
    """Feed VM output chunks in order; get back the bytes the board's UART sends."""

    def __init__(self, on_marker=None):
        self._on_marker = on_marker or (lambda name: None)
        self._pending = b""  # the start of what may be a marker, held until it completes
        self._last_cr = False
        self._tail = b""  # recent output, to find banners split across chunks
        self._swallowing = False
        self._swallowed = b""
        self.raw_repl = False

    def restart(self) -> None:
        """A new VM run begins: forget half-read markers and swallowing (the REPL mode stays)."""
        self._pending = b""
        self._swallowing = False
        self._swallowed = b""
        self._tail = b""

    def swallow_until_raw_banner(self) -> None:
        """Drop output until the raw REPL's banner (see module docstring)."""
        self._swallowing = True
        self._swallowed = b""

    def feed(self, data: bytes) -> bytes:
        """Process one chunk; markers found in it are reported (in order) before it returns."""
        data = self._pending + data
        self._pending = b""
        out = bytearray()
        i = 0
        while i < len(data):
            j = data.find(b"\x1b", i)
            if j < 0:
                out += self._emit(data[i:])
                break
            out += self._emit(data[i:j])
            rest = data[j:]
            if rest.startswith(MARK_PREFIX):
                end = rest.find(MARK_END, 0, _MARK_MAX)
                if end > 0:
                    self._on_marker(rest[len(MARK_PREFIX):end].decode("ascii", "replace"))
                    i = j + end + 1
                    continue
                if len(rest) < _MARK_MAX:
                    self._pending = rest
                    break
            elif MARK_PREFIX.startswith(rest):
                self._pending = rest
                break
            out += self._emit(b"\x1b")
            i = j + 1
        return bytes(out)

    def _emit(self, seg: bytes) -> bytes:
        if not seg:
            return b""
        head = b""
        if self._last_cr and seg[:1] == b"\n":
            head, seg = b"\n", seg[1:]
        cooked = head + seg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        self._last_cr = cooked.endswith(b"\r")
        window = self._tail + cooked
        raw_at, friendly_at = window.rfind(RAW_BANNER), window.rfind(FRIENDLY_BANNER)
        if raw_at > friendly_at:
            self.raw_repl = True
        elif friendly_at > raw_at:
            self.raw_repl = False
        self._tail = window[-_MARK_MAX:]
        if not self._swallowing:
            return cooked
        self._swallowed += cooked
        at = self._swallowed.find(RAW_BANNER)
        if at < 0:
            self._swallowed = self._swallowed[-len(RAW_BANNER):]
            return b""
        self._swallowing = False
        rest, self._swallowed = self._swallowed[at:], b""
        return rest
