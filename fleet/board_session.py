"""A MicroPython board on a serial port: run code on it, move files, reset it.

`BoardSession.open(port)` talks through mpremote's `SerialTransport` (the official tool's raw REPL and
raw-paste mode) to a real board or an emulated one alike; PORT is a device path or a pyserial URL
(`rfc2217://`, `socket://`). Opening interrupts whatever runs (the agent) and soft-resets into the raw
REPL, so the board's heap is clean and main.py does not run; `soft_reset()` starts main.py again.

Files go to the board through a small receiver that runs on it (`_fr` below). Bytes cross the line
as they are (no repr or base64 inflation), in frames that start with their kind: `H` + length + a
header (path, size, SHA-256), `D` + up to 127 data bytes, and `E` at the end. The board acks each frame
it takes in (0x01) and each file it has checked and renamed into place (0x02); the host keeps at most
256 bytes unacked, as an ESP32 buffers only 260 received bytes (its stdin ring buffer). Ctrl-C is off
while the receiver runs (data may hold 0x03). It stops by itself after `_QUIET_MS` of silence before a
frame, and at any frame that does not start with a kind; a host that died inside a frame leaves it
waiting for the frame's rest, so `open` retries after a burst of Ctrl-C longer than any frame.

Every failure is a FleetError with one line: port missing, no MicroPython answering, the board
stopping mid-transfer, or an error raised on the board.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import hashlib
import io
import struct
import time
from collections.abc import Callable, Iterable, Iterator

from fleet.errors import FleetError

FRAME = 128  # the largest frame; the board's receive buffer
DATA_FRAME = FRAME - 1  # data bytes a frame (after its kind): two frames fill the window (83% of the
#                         line rate for a bundle at 115200; 79% with three of 85 bytes, 77% with 41)
WINDOW = 256  # bytes in flight at most: an ESP32's stdin ring buffer holds 260
_QUIET_MS = 3000  # the receiver gives up after this much silence from the host
_ACK_TIMEOUT = 6.0  # seconds without a frame ack from the board: it stopped answering
_ENTER_TIMEOUT = 5.0  # seconds to get the raw REPL banner, per attempt
_EXEC_TIMEOUT = 10  # seconds of silence while code runs on the board

#: Helpers defined on the board once per session (after each soft reset). Hashes are computed on the
#: board through a 512-byte buffer, never by reading a whole file into its small heap.
_HELPERS = """\
import os, sys, hashlib, binascii
_fb = bytearray(512)
def _fh(p):
    h = hashlib.sha256(); m = memoryview(_fb)
    with open(p, 'rb') as f:
        while True:
            n = f.readinto(_fb)
            if not n:
                break
            h.update(m[:n])
    return binascii.hexlify(h.digest()).decode()
def _fw(d, f):
    for e in os.ilistdir(d):
        p = d.rstrip('/') + '/' + e[0]
        if e[1] == 0x4000:
            _fw(p, f)
        else:
            f(p)
def _fp(ps, k):
    for p in ps:
        try:
            print(_fh(p)[:k], p)
        except OSError:
            pass
def _ft(d):
    r = []
    try:
        _fw(d, lambda p: r.append(p + ' ' + _fh(p)))
    except OSError:
        pass
    r.sort()
    h = hashlib.sha256()
    for x in r:
        h.update(x + '\\n')
    print(binascii.hexlify(h.digest()).decode(), len(r))
def _fn(s, d):
    try:
        os.rename(s, d)
    except OSError:
        os.remove(d)  # a FAT volume refuses to rename over a file; littlefs replaces it atomically
        os.rename(s, d)
def _fm(p):
    q = ''
    for s in p.strip('/').split('/'):
        q += '/' + s
        try:
            os.mkdir(q)
        except OSError:
            if not os.stat(q)[0] & 0x4000:
                raise
def _fc(s, d):
    m = memoryview(_fb)
    with open(s, 'rb') as i, open(d + '.tmp', 'wb') as o:
        while True:
            n = i.readinto(_fb)
            if not n:
                break
            o.write(m[:n])
    _fn(d + '.tmp', d)
def _fr(t):
    import micropython, select
    i = sys.stdin.buffer; w = sys.stdout.write
    p = select.poll(); p.register(sys.stdin, select.POLLIN)
    b = bytearray(%(frame)d); m = memoryview(b)
    def get(n):
        if n > %(frame)d:
            raise ValueError('bad frame')
        g = 0
        while g < n:
            if not p.poll(t):
                raise OSError(116)
            g += i.readinto(m[g:n])
        w('\\x01')
        return m[:n]
    micropython.kbd_intr(-1)
    try:
        w('\\x06')
        while True:
            k = get(2)
            if k[0] == 69:  # E: the end
                break
            if k[0] != 72:  # H: a file's header, k[1] bytes long
                raise ValueError('bad frame')
            q, s, x = str(bytes(get(k[1])), 'utf-8').split('\\t')
            s = int(s); h = hashlib.sha256()
            with open(q + '.tmp', 'wb') as f:
                while s:
                    n = min(s, %(data)d)
                    c = get(n + 1)
                    if c[0] != 68:  # D: data
                        raise ValueError('bad frame')
                    h.update(c[1:]); f.write(c[1:]); s -= n
            if binascii.hexlify(h.digest()).decode() != x:
                os.remove(q + '.tmp')
                raise ValueError('hash mismatch on ' + q)
            _fn(q + '.tmp', q)
            w('\\x02')
    except Exception:
        while p.poll(200):
            i.read(1)  # what the host sent before it hears of the error, so none reaches the REPL
        raise
    finally:
        micropython.kbd_intr(3)
""" % {"frame": FRAME, "data": DATA_FRAME}

_IDENTIFY = """\
import sys, os, binascii
try:
    import machine
    u = binascii.hexlify(machine.unique_id()).decode()
except Exception:
    u = None
s = os.statvfs('/')
a = v = None
try:
    with open('/app/active') as f:
        a = f.read().strip()
    import json
    with open('/app/' + a + '/manifest.json') as f:
        v = json.load(f).get('version')
except Exception:
    pass
print(repr({'uid': u, 'version': tuple(sys.implementation.version), 'mpy': getattr(sys.implementation, '_mpy', 0),
 'platform': sys.platform, 'block': s[0], 'blocks': s[2], 'free': s[3], 'slot': a, 'app_version': v}))
"""


def _printed_bytes(text: str) -> bytes:
    """What mpremote read before giving up: it prints it as repr(bytes) lines."""
    found = b""
    for line in text.splitlines():
        try:
            value = ast.literal_eval(line.strip())
        except (ValueError, SyntaxError):
            value = line.encode(errors="replace")
        found += value if isinstance(value, bytes) else str(value).encode(errors="replace")
    return found


def _mpy_version(code: int) -> str:
    """sys.implementation._mpy -> '6.3': the low byte is the .mpy version, bits 8-9 its sub-version."""
    return "%d.%d" % (code & 0xFF, (code >> 8) & 3) if code else "unknown"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def folder_digest(files: dict[str, str]) -> str:
    """One SHA-256 over {path: sha256 hex}: of the sorted lines "path sha256", each ended by a newline,
    as the board computes it over a folder (`BoardSession.folder_digest`)."""
    digest = hashlib.sha256()
    for line in sorted("%s %s" % item for item in files.items()):
        digest.update((line + "\n").encode())
    return digest.hexdigest()


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256, as the board's helpers report it."""
    return hashlib.sha256(data).hexdigest()


class BoardSession:
    """An open raw-REPL session with one board; use `BoardSession.open(port)` as a context manager."""

    def __init__(self, transport, port: str, baud: int):
        self._transport = transport
        self.port = port
        self.baud = baud
        self._helpers = False
        self.broken = False  # the line or the board failed: no more talking on this session

    # --- life ---------------------------------------------------------------------------------------
    @classmethod
    def open(cls, port: str, baud: int = 115200, boot_timeout: float = _ENTER_TIMEOUT, attempts: int = 2
             ) -> BoardSession:
        """Open `port`, stop what runs on the board and enter its raw REPL (after a soft reset).

        `boot_timeout`: seconds to wait for each REPL banner; a second attempt first floods Ctrl-C.
        """
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        try:
            with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints while it waits
                transport = SerialTransport(port, baudrate=baud, timeout=1)
        except (TransportError, ValueError):
            check_port(port, baud)  # says why (mpremote only says that it failed)
            raise FleetError("cannot open %s; check the port name and the cable" % port) from None
        session = cls(transport, port, baud)
        try:
            session._enter(boot_timeout, attempts)
        except BaseException:
            session.close()
            raise
        return session

    def _enter(self, boot_timeout: float, attempts: int) -> None:
        from mpremote.transport import TransportError

        transport = self._transport
        seen = b""
        for attempt in range(attempts):
            if attempt:
                # A receiver left running with Ctrl-C off (its host died inside a frame) takes these to
                # fill the frame, then stops at the next, which starts with no kind; a REPL clears its line.
                self._write(b"\x03" * (FRAME + 8))
                seen += self._read_quiet(0.5, _QUIET_MS / 1000 + 1)
            capture = io.StringIO()
            try:
                with contextlib.redirect_stdout(capture):
                    transport.enter_raw_repl(soft_reset=True, timeout_overall=boot_timeout)
                return
            except TransportError:
                seen += _printed_bytes(capture.getvalue())
            except OSError as error:
                self._lost("connecting", error)
        lines = [line.strip() for line in seen.decode("ascii", "replace").splitlines() if line.strip()]
        heard = "it sent %r" % lines[-1][:60] if lines else "it sent nothing"
        raise FleetError("no MicroPython REPL answered on %s (%s): is it a MicroPython board on the right port? "
                         "A blank ESP32 needs `fleet flash --base-firmware`" % (self.port, heard))

    def close(self) -> None:
        """Close the port (the board is left as it is: see soft_reset)."""
        with contextlib.suppress(OSError):
            self._transport.close()

    def __enter__(self) -> BoardSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def soft_reset(self) -> None:
        """Leave the raw REPL and soft-reset, so boot.py and main.py run (the agent starts)."""
        with self._talking("restarting the board"):
            self._write(b"\r\x02")  # friendly REPL: only there does a soft reset run main.py
            self._read_until(b">>> ", 5)
            self._write(b"\x04")
            self._read_until(b"soft reboot\r\n", 10)
        self._helpers = False

    def hard_reset(self) -> None:
        """machine.reset(): the board restarts as from its reset button; the session ends."""
        with self._talking("resetting the board"):
            self._transport.exec_raw_no_follow("import time, machine\ntime.sleep_ms(100)\nmachine.reset()")
        self.broken = True

    # --- code ---------------------------------------------------------------------------------------
    def exec(self, code: str, timeout: float = _EXEC_TIMEOUT) -> str:
        """Run `code` on the board; what it printed (newlines as '\\n'). FleetError if it raised."""
        with self._talking("running code"):
            out, err = self._transport.exec_raw(code, timeout=timeout)
        if err:
            raise FleetError("the board raised %s" % _last_line(err.decode(errors="replace")))
        return out.decode(errors="replace").replace("\r\n", "\n")

    def eval(self, expression: str) -> object:
        """The value of a Python literal expression evaluated on the board."""
        text = self.exec("print(repr(%s))" % expression).strip()
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise FleetError("the board answered %r, not a Python literal" % text[:80]) from None

    def _ensure_helpers(self) -> None:
        if not self._helpers:
            self.exec(_HELPERS)
            self._helpers = True

    def identify(self) -> dict:
        """uid, micropython version, mpy ('6.3'), platform, flash_total/flash_free/flash_block (bytes),
        slot (the active app slot or None) and app_version (its manifest's version or None)."""
        info = self.eval_code(_IDENTIFY)
        version = ".".join(str(part) for part in info["version"][:3])
        if len(info["version"]) > 3 and info["version"][3]:
            version += "-" + str(info["version"][3])
        return {"uid": info["uid"], "micropython": version, "mpy": _mpy_version(info["mpy"]),
                "platform": info["platform"], "flash_block": info["block"],
                "flash_total": info["block"] * info["blocks"], "flash_free": info["block"] * info["free"],
                "slot": info["slot"], "app_version": info["app_version"]}

    def eval_code(self, code: str) -> dict:
        """Run `code` whose last output line is a repr() of a dict; that dict."""
        text = self.exec(code).strip().splitlines()
        try:
            value = ast.literal_eval(text[-1]) if text else None
        except (ValueError, SyntaxError):
            value = None
        if not isinstance(value, dict):
            raise FleetError("the board answered %r where a dict was expected" % (text[-1:] or [""])[0][:80])
        return value

    # --- files --------------------------------------------------------------------------------------
    def read_file(self, path: str) -> bytes:
        """The whole content of a (small) file on the board."""
        import errno

        with self._talking("reading " + path):
            try:
                return bytes(self._transport.fs_readfile(path, chunk_size=256))
            except OSError as error:
                if error.args[1:] != (path,):  # mpremote's OSError(errno, path) for the board's own error
                    raise
                name = errno.errorcode.get(error.args[0], str(error.args[0]))
                raise FleetError("cannot read %s on the board: %s" % (path, name)) from None

    def file_hashes(self, paths: str | Iterable[str], digits: int = 64) -> dict[str, str]:
        """{path: sha256 hex} of the files under a folder (recursively), or of those of `paths` that
        exist; a missing folder gives {}. `digits` < 64 keeps only the start of each hash (less to
        carry over the line when they only tell files apart)."""
        self._ensure_helpers()
        if isinstance(paths, str):
            code = "try:\n _fw(%r, lambda p: print(_fh(p)[:%d], p))\nexcept OSError:\n pass" % (paths, digits)
        else:
            code = "_fp(%r, %d)" % ([str(p) for p in paths], digits)
        hashes = {}
        for line in self.exec(code, timeout=30).splitlines():
            digest, _, path = line.partition(" ")
            if len(digest) == digits and path:
                hashes[path] = digest
        return hashes

    def folder_digest(self, folder: str) -> tuple[str, int]:
        """(digest, file count) of every file under `folder`, hashed on the board: see `folder_digest`."""
        self._ensure_helpers()
        digest, _, count = self.exec("_ft(%r)" % folder, timeout=60).strip().rpartition("\n")[2].partition(" ")
        return digest, int(count or 0)

    def makedirs(self, path: str) -> None:
        """Create a folder and its parents (existing ones are fine)."""
        self._ensure_helpers()
        self.exec("_fm(%r)" % path)

    def remove(self, path: str) -> None:
        """Delete a file; a missing one is fine."""
        self.exec("try:\n import os\n os.remove(%r)\nexcept OSError:\n pass" % path)

    def write_text(self, path: str, text: str) -> None:
        """Write a short text file in one go (not atomic: rename it into place for that)."""
        self.exec("with open(%r, 'w') as f:\n f.write(%r)" % (path, text))

    def rename(self, src: str, dst: str) -> None:
        """Rename `src` over `dst` (atomic on littlefs)."""
        self._ensure_helpers()
        self.exec("_fn(%r, %r)" % (src, dst))

    def copy_files_atomic(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Copy files on the board (no serial transfer), each to `<dst>.tmp` then renamed over `dst`."""
        self._ensure_helpers()
        batch: list[tuple[str, str]] = []
        for pair in pairs:
            batch.append(pair)
            if len(batch) == 8:  # a few per call: a long literal costs the board's parser heap
                self.exec("for s, d in %r:\n _fc(s, d)" % (batch,), timeout=30)
                batch = []
        if batch:
            self.exec("for s, d in %r:\n _fc(s, d)" % (batch,), timeout=30)

    def write_file_atomic(self, path: str, data: bytes, progress: Callable[[int], None] | None = None) -> None:
        """Write `data` to `<path>.tmp`, check its hash on the board, rename it over `path`."""
        self.write_files_atomic([(path, data)], progress)

    def write_files_atomic(self, items: Iterable[tuple[str, bytes]], progress: Callable[[int], None] | None = None,
                           on_file: Callable[[str], None] | None = None) -> None:
        """write_file_atomic for many files in one stream; `progress(n)` as n more bytes leave,
        `on_file(path)` once the board has committed a file."""
        self._ensure_helpers()
        with self._talking("sending files"):
            self._transport.exec_raw_no_follow("_fr(%d)" % _QUIET_MS)
            stream = _Stream(self, on_file)
            for path, data in items:
                if any(c in path for c in "\t\n\r"):
                    raise FleetError("cannot send %r: tab or newline in the name" % path)
                header = ("%s\t%d\t%s" % (path, len(data), sha256_hex(data))).encode()
                if len(header) > min(FRAME, 255):
                    raise FleetError("cannot send %s: its path is too long" % path)
                stream.send(b"H" + bytes([len(header)]), path)
                stream.send(header, path)
                for start in range(0, len(data), DATA_FRAME):
                    chunk = data[start:start + DATA_FRAME]
                    stream.send(b"D" + chunk, path)
                    if progress:
                        progress(len(chunk))
                stream.committed_paths.append(path)
            stream.send(b"E\x00", "")
            stream.finish()

    # --- the line -----------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        self._transport.serial.write(data)

    def _read_some(self) -> bytes:
        serial = self._transport.serial
        return serial.read(max(1, min(serial.in_waiting, 4096)))

    def _read_quiet(self, quiet: float, limit: float) -> bytes:
        """What the board sends until it has been silent for `quiet` seconds (at most `limit`)."""
        data = b""
        start = last = time.monotonic()
        while time.monotonic() - last < quiet and time.monotonic() - start < limit:
            chunk = self._read_some()
            if chunk:
                data += chunk
                last = time.monotonic()
        return data[-4096:]

    def _read_until(self, ending: bytes, timeout: float) -> bytes:
        """Bytes up to and including `ending`, read one at a time so nothing after it is taken."""
        serial = self._transport.serial
        data = b""
        deadline = time.monotonic() + timeout
        while not data.endswith(ending):
            if time.monotonic() > deadline:
                self.broken = True
                raise FleetError("the board on %s stopped answering (waited %.0f s for %r)" % (self.port, timeout, ending))
            data += serial.read(1)
        return data

    def _lost(self, what: str, error: BaseException) -> None:
        self.broken = True
        raise FleetError("lost the serial connection to %s while %s (%s); check the cable, then run the command "
                         "again" % (self.port, what, _last_line(str(error)) if str(error) else type(error).__name__))

    @contextlib.contextmanager
    def _talking(self, what: str) -> Iterator[None]:
        """Turn the transport's failures into one-line FleetErrors naming what was being done."""
        from mpremote.transport import TransportError, TransportExecError

        if self.broken:
            raise FleetError("the connection to %s was lost earlier; run the command again" % self.port)
        try:
            yield
        except TransportExecError:
            raise
        except (TransportError, struct.error):
            self.broken = True
            raise FleetError("the board on %s stopped answering while %s; check its power and cable, then run "
                             "the command again" % (self.port, what)) from None
        except FleetError:
            raise
        except OSError as error:  # serial.SerialException included: the port went away
            self._lost(what, error)


class _Stream:
    """The host's side of the receiver's flow control: frames out, acks in (see module docstring).

    Acks are read one byte at a time: the receiver's end is followed by the raw REPL's prompt, which
    mpremote's next exec must find on the line.
    """

    def __init__(self, session: BoardSession, on_file: Callable[[str], None] | None):
        self.session = session
        self.on_file = on_file
        self.ready = False
        self.in_flight: collections.deque[int] = collections.deque()  # sizes of frames not yet acked
        self.committed = 0
        self.committed_paths: list[str] = []

    def send(self, frame: bytes, path: str) -> None:
        while not self.ready or sum(self.in_flight) + len(frame) > WINDOW:
            self._handle(path)
        self.session._write(frame)
        self.in_flight.append(len(frame))

    def _next_byte(self, path: str) -> int:
        serial = self.session._transport.serial
        deadline = time.monotonic() + _ACK_TIMEOUT
        while True:
            data = serial.read(1)
            if data:
                return data[0]
            if time.monotonic() > deadline:
                self.session.broken = True
                raise FleetError("the board on %s stopped answering while receiving %s; check its power and "
                                 "cable, then run the command again" % (self.session.port, path or "files"))

    def _handle(self, path: str, ending: bool = False) -> bool:
        """Take the board's next byte: \\x06 ready, \\x01 a frame taken in, \\x02 a file committed,
        \\x04 the receiver's end (an error unless `ending`). True at the end."""
        byte = self._next_byte(path)
        if byte == 6:
            self.ready = True
        elif byte == 1 and self.in_flight:
            self.in_flight.popleft()
        elif byte == 2:
            self.committed += 1
            if self.on_file:
                self.on_file(self.committed_paths[self.committed - 1])
        elif byte == 4:
            err = self.session._read_until(b"\x04", 5)[:-1]
            if err or not ending:
                raise FleetError("the board could not write %s: %s"
                                 % (path or "files", _last_line(err.decode(errors="replace"))))
            return True
        else:
            self.session.broken = True
            raise FleetError("the board sent %r while receiving %s; run the command again" % (bytes([byte]), path))
        return False

    def finish(self) -> None:
        """Wait for every file's commit and the receiver's clean end."""
        while True:
            path = self.committed_paths[self.committed] if self.committed < len(self.committed_paths) else ""
            if self._handle(path, ending=self.committed == len(self.committed_paths)):
                return


def check_port(port: str, baud: int = 115200) -> None:
    """FleetError naming why `port` cannot be opened (missing, in use...); nothing when it can."""
    import serial

    try:
        serial.serial_for_url(port, baud, exclusive=True).close()
    except (OSError, ValueError) as error:
        text = str(error)
        if "No such file" in text or "Errno 2" in text:
            reason = "no such port"
        elif "exclusively lock" in text:
            reason = "it is in use by another program"
        else:
            reason = _last_line(text)
        raise FleetError("cannot open %s: %s; check the port name and the cable" % (port, reason)) from None
