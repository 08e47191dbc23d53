"""The board's USB serial port as tools see it: a pty whose path a stable symlink DIR/tty points at.

The host holds the pty's master side. Tools open the slave through the symlink (mpremote on a bare
/dev/pts/N waits forever when the board is silent; through a symlink it times out as it should).
Unplugging closes the master: open clients get end-of-file, as when a USB cable is pulled; plugging
makes a new pty (a new /dev/pts/N, as a re-enumerated USB device gets) and moves the symlink.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
import tty
from pathlib import Path

log = logging.getLogger("boardemu.serial")

_CHUNK = 64


class Throttle:
    """Paces one direction of a UART: 10 bit times per byte (8N1) at `baud`."""

    def __init__(self, baud: int):
        self.byte_time = 10.0 / baud
        self._free_at = 0.0
        self._lock = threading.Lock()

    def pace(self, n: int) -> None:
        """Block until `n` more bytes have had the time to cross the line."""
        with self._lock:
            now = time.monotonic()
            self._free_at = max(self._free_at, now) + n * self.byte_time
            delay = self._free_at - now
        if delay > 0:
            time.sleep(delay)


class ClientPort:
    """The pty tools open. `on_receive(bytes)` gets what they write (called from the reader thread)."""

    def __init__(self, link: Path, on_receive):
        self.link = Path(link)
        self._on_receive = on_receive
        self._lock = threading.Lock()
        self._master: int | None = None
        self._reader: threading.Thread | None = None
        self.device: str | None = None
        self.dropped = 0  # bytes the board sent while no tool had the port open or read it

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def plug(self) -> None:
        """Make the port appear (a new pty) and point the symlink at it."""
        with self._lock:
            if self._master is not None:
                return
            master, slave = os.openpty()
            tty.setraw(slave)
            self.device = os.ttyname(slave)
            os.close(slave)  # the master reports POLLHUP until a tool opens the slave
            os.set_blocking(master, False)
            self._master = master
            tmp = self.link.with_name(self.link.name + ".new")
            tmp.unlink(missing_ok=True)
            os.symlink(self.device, tmp)
            os.replace(tmp, self.link)
            self._reader = threading.Thread(target=self._read_loop, args=(master,), name="serial-rx", daemon=True)
            self._reader.start()

    def unplug(self) -> None:
        """Make the port disappear: remove the symlink, hang up on whoever has it open."""
        with self._lock:
            master, self._master = self._master, None
            reader, self._reader = self._reader, None
            self.link.unlink(missing_ok=True)
            self.device = None
        if master is not None:
            os.close(master)
        if reader is not None:
            reader.join(timeout=2)

    def client_present(self) -> bool:
        """True while some tool has the port open."""
        master = self._master
        if master is None:
            return False
        poller = select.poll()
        poller.register(master, select.POLLOUT)
        events = poller.poll(0)
        return bool(events) and not events[0][1] & select.POLLHUP

    def send(self, data: bytes) -> None:
        """Hand board output to the tool; lost when nobody has the port open or reads it (as on a UART)."""
        with self._lock:
            master = self._master
            if master is None or not self.client_present():
                self.dropped += len(data)
                return
            try:
                written = os.write(master, data)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EIO):
                    raise
                written = 0
            self.dropped += len(data) - written

    def _read_loop(self, master: int) -> None:
        poller = select.poll()
        poller.register(master, select.POLLIN)
        while self._master == master:
            try:
                events = poller.poll(200)
            except (OSError, ValueError):
                return
            if not events:
                continue
            if events[0][1] & select.POLLHUP:
                time.sleep(0.02)  # nobody has the port open: nothing to read until someone does
                continue
            try:
                data = os.read(master, _CHUNK)
            except BlockingIOError:
                continue
            except OSError:
                if self._master != master:
                    return
                time.sleep(0.02)
                continue
            if data:
                try:
                    self._on_receive(data)
                except Exception:  # a relay bug must not silently kill the port
                    log.exception("delivering serial input")
