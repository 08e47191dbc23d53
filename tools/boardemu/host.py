"""The board host: the long-running process that is one emulated board.

It owns the board's serial port (pty + RFC 2217), the UART between the port and the VM (paced to the
baud rate, both ways), the VM's life (power on, hard/soft/WDT resets, deep sleep, power cuts), the
emulated hardware (E2's `Hardware`) and the control server the `boardemu` verbs talk to. All state
changes run on one supervisor thread, in the order they were asked for.

Run as `python -m tools.boardemu.host --dir DIR` (see `hostmain.py`): it detaches and keeps running.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
from pathlib import Path

from tools.boardemu import BoardEmuError, boardconf
from tools.boardemu.rfc2217 import Rfc2217Server
from tools.boardemu.serialport import ClientPort, Throttle
from tools.boardemu.stream import BoardOutput
from tools.boardemu.vmproc import VM_DIR, VmProcess

log = logging.getLogger("boardemu.host")
SOFT_REBOOT = b"MPY: soft reboot\r\n"  # what pyexec-based firmware prints (mpremote waits for it)
CAUSES = ("power_on", "hard", "wdt", "soft", "deepsleep")
CONSOLE_LOG = "console.log"
#: Past this size console.log becomes console.log.1 (the one before is dropped): two files at most.
CONSOLE_LOG_BYTES = 1 << 20


class BoardHost:
    """One board; `open()` brings up its ports and hardware, `run()` is the supervisor loop.

    It is also the `lifecycle` the hardware gets (EMULATOR_CONTRACT.md): `request_reset` and
    `request_deepsleep` are thread-safe and never block.
    """

    def __init__(self, state_dir: Path, config: boardconf.BoardConfig):
        self.dir = Path(state_dir).resolve()
        self.config = config
        self.flash = self.dir / boardconf.FLASH_FILE
        boardconf.create_flash(self.flash, config.flash_bytes)
        self._tx, self._rx = Throttle(config.baud), Throttle(config.baud)
        self._tx_lock = threading.Lock()
        self._output = BoardOutput(self._on_marker)
        self.port = ClientPort(self.dir / "tty", self.receive)
        self.rfc: Rfc2217Server | None = None
        self.hw = None
        self.hw_error: str | None = None
        self._hw_env: dict = {}
        self._queue: queue.Queue = queue.Queue()
        self.vm: VmProcess | None = None
        self.powered = True
        self.held_in_reset = False
        self._next_start: tuple[float, str] | None = None  # (monotonic time, cause): deep sleep, crash backoff
        self._raw_boot = False
        self._quick_exits = 0
        self.up = threading.Event()
        self.started = time.monotonic()
        self.vm_started = 0.0
        self.boots = 0
        self.causes: collections.Counter = collections.Counter()
        self.history: collections.deque = collections.deque(maxlen=20)
        self.rx_dropped = 0
        self._console = ConsoleLog(self.dir / CONSOLE_LOG, CONSOLE_LOG_BYTES)

    @property
    def raw_repl(self) -> bool:
        """True while the REPL is in raw mode, as followed from the REPL's banners."""
        return self._output.raw_repl

    @property
    def next_start_cause(self) -> str | None:
        """Why the VM will start again by itself (deepsleep, or a reboot in progress), if it will."""
        return None if self._next_start is None else self._next_start[1]

    def open(self) -> None:
        """Bring up the serial port, the RFC 2217 server and the hardware (the VM starts in run())."""
        self.port.plug()
        if self.config.rfc2217_port is not None:
            self.rfc = Rfc2217Server(self.config.rfc2217_port, self.config.baud, self.receive, self.lines)
        try:
            from tools.boardemu.hardware import Hardware

            self.hw = Hardware(self.config.kind, self.dir, self)
            self._hw_env = dict(self.hw.start())
        except Exception as exc:  # the board still runs without its sensors; status says why
            log.exception("hardware emulation unavailable")
            self.hw, self.hw_error = None, "%s: %s" % (type(exc).__name__, exc)

    def vm_env(self, cause: str, raw: bool) -> dict:
        """Environment of one VM start (EMULATOR_CONTRACT.md), plus where the flash image is."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MICROPY", "BOARDEMU_"))}
        env.update(self._hw_env)
        env.update({
            "BOARDEMU_RESET_CAUSE": cause, "BOARDEMU_UID": self.config.uid, "BOARDEMU_KIND": self.config.kind,
            "MICROPYPATH": "%s:.frozen" % VM_DIR, "BOARDEMU_FLASH": str(self.flash),
            "BOARDEMU_FLASH_ERASE_US": str(self.config.erase_us),
            "BOARDEMU_FLASH_PROG_US": str(self.config.prog_us),
            "BOARDEMU_HW": "1" if self.hw is not None else "0",
            "BOARDEMU_HEAP": str(self.config.heap_bytes),
        })
        if raw:
            env["BOARDEMU_REPL"] = "raw"
        return env

    def transmit(self, data: bytes) -> None:
        """Board -> tools, at the baud rate, to the pty and the RFC 2217 client alike."""
        if not data:
            return
        with self._tx_lock:
            self._tx.pace(len(data))
            self.port.send(data)
            if self.rfc is not None:
                self.rfc.send(data)

    def receive(self, data: bytes) -> None:
        """Tools -> board, at the baud rate; lost while the VM is not running (board off or in reset)."""
        self._rx.pace(len(data))
        vm = self.vm
        if vm is None:
            self.rx_dropped += len(data)
            return
        vm.send(data)

    def _vm_output(self, data: bytes) -> None:
        shown = self._output.feed(data)
        self._console.write(shown)
        self.transmit(shown)

    def _on_marker(self, name: str) -> None:
        if name == "up":
            self.up.set()
        elif name == "repl" and self._raw_boot:
            # A soft reboot in raw-REPL mode: the unix REPL starts friendly; switch it to raw unseen.
            self._raw_boot = False
            self._output.swallow_until_raw_banner()
            vm = self.vm
            if vm is not None:
                vm.send(b"\x01")

    def request_reset(self, cause: str) -> None:
        """Kill the VM if it runs and restart it with this reset cause ("hard", "wdt", "soft")."""
        self.post("reset", cause if cause in CAUSES else "hard")

    def request_deepsleep(self, ms: int) -> None:
        """Kill the VM, keep it off for `ms`, then restart it with cause "deepsleep"."""
        self.post("deepsleep", int(ms))

    def lines(self, dtr: bool, rts: bool) -> None:
        """DTR/RTS from RFC 2217: a devkit's auto-reset circuit holds EN low while RTS is on, DTR off."""
        self.post("lines", rts and not dtr)

    def post(self, op: str, *args) -> None:
        """Queue a state change without waiting (hardware and line events)."""
        self._queue.put((op, args, None))

    def submit(self, op: str, *args, timeout: float = 60.0):
        """Queue a state change and wait for its result; BoardEmuError as raised by the handler."""
        reply: queue.Queue = queue.Queue(1)
        self._queue.put((op, args, reply))
        try:
            result, error = reply.get(timeout=timeout)
        except queue.Empty:
            raise BoardEmuError("the board did not answer %r in %.0f s: see host.log" % (op, timeout)) from None
        if error is not None:
            raise error
        return result

    def run(self) -> None:
        """The supervisor loop; returns after a stop request."""
        self._start_vm("power_on")
        while True:
            timeout = 1.0
            if self._next_start is not None:
                timeout = max(0.0, min(timeout, self._next_start[0] - time.monotonic()))
            try:
                op, args, reply = self._queue.get(timeout=timeout)
            except queue.Empty:
                op, args, reply = "tick", (), None
            result, error = None, None
            try:
                result = getattr(self, "_do_" + op)(*args)
            except BoardEmuError as exc:
                error = exc
            except Exception as exc:
                log.exception("%s failed", op)
                error = BoardEmuError("%s failed: %s (see host.log)" % (op, exc))
            if reply is not None:
                reply.put((result, error))
            if op == "stop":
                return

    def _start_vm(self, cause: str) -> None:
        self._next_start = None
        raw = cause == "soft" and self._output.raw_repl  # pyexec keeps its REPL mode over a soft reset only
        if cause != "soft":
            self._output.raw_repl = False
        self._output.restart()
        self._raw_boot = raw
        self._hw_call("vm_starting", cause)
        self.up.clear()
        self.vm = VmProcess(self.config.heap_bytes, self.vm_env(cause, raw), self.dir, self._vm_output)
        self.vm_started = time.monotonic()
        self.boots += 1
        self.causes[cause] += 1
        self.history.append((round(time.time(), 3), cause))
        log.info("VM %d started (%s%s)", self.vm.pid, cause, ", raw REPL" if raw else "")
        threading.Thread(target=self._watch_exit, args=(self.vm,), name="vm-wait", daemon=True).start()

    def _watch_exit(self, vm: VmProcess) -> None:
        self._queue.put(("vm_exited", (vm, vm.wait()), None))

    def _stop_vm(self) -> None:
        vm, self.vm = self.vm, None
        if vm is not None:
            vm.kill()
            self._vm_stopped()

    def _vm_stopped(self) -> None:
        self._hw_call("vm_stopped")

    def _hw_call(self, name: str, *args) -> None:
        if self.hw is not None:
            try:
                getattr(self.hw, name)(*args)
            except Exception:  # a hardware model bug must not take the board's serial line down
                log.exception("hw.%s", name)

    def _do_vm_exited(self, vm: VmProcess, code: int) -> None:
        if vm is not self.vm or vm.killed:
            return  # the host killed it and has dealt with what follows
        self.vm = None
        self._vm_stopped()
        # A VM that crashes, or dies before it mounted its flash, is restarted ever more slowly (no busy
        # crash loop); soft reboots, however frequent, are what tools ask for and follow at once.
        failed = code < 0 or not self.up.is_set()
        self._quick_exits = self._quick_exits + 1 if failed else 0
        delay = 0.0 if self._quick_exits < 3 else min(5.0, 0.5 * self._quick_exits)
        if code >= 0:
            # The unix port exits where a board soft-reboots (Ctrl-D, machine.soft_reset(), sys.exit()).
            self.transmit(SOFT_REBOOT)
            cause = "soft"
        else:
            log.warning("VM %d died of signal %d: restarting it as after a panic", vm.pid, -code)
            cause = "hard"
        self._next_start = (time.monotonic() + delay, cause)

    def _do_tick(self) -> None:
        if self._next_start is not None and time.monotonic() >= self._next_start[0]:
            if self.powered and not self.held_in_reset and self.vm is None:
                self._start_vm(self._next_start[1])
            self._next_start = None

    def _do_reset(self, cause: str = "hard") -> None:
        if not self.powered:
            raise BoardEmuError("the board is powered off: turn it on with `boardemu power --dir %s on`" % self.dir)
        self._stop_vm()
        if not self.held_in_reset:
            self._start_vm(cause)

    def _do_deepsleep(self, ms: int) -> None:
        if self.powered and not self.held_in_reset:
            self._stop_vm()
            self._next_start = (time.monotonic() + ms / 1000.0, "deepsleep")

    def _do_power(self, on: bool) -> None:
        if not on:
            self._stop_vm()
            self.powered = False
            self._next_start = None
        elif not self.powered:
            self.powered = True
            if not self.held_in_reset:
                self._start_vm("power_on")

    def _do_lines(self, in_reset: bool) -> None:
        if in_reset and not self.held_in_reset:
            self.held_in_reset = True
            self._stop_vm()
            self._next_start = None
        elif not in_reset and self.held_in_reset:
            self.held_in_reset = False
            if self.powered:
                self._start_vm("hard")

    def _do_serial(self, plugged: bool) -> None:
        (self.port.plug if plugged else self.port.unplug)()

    def _do_stop(self) -> None:
        self._stop_vm()
        self._hw_call("close")
        self.port.unplug()
        if self.rfc is not None:
            self.rfc.close()
        self._console.close()


if __name__ == "__main__":
    from tools.boardemu.hostmain import main

    raise SystemExit(main())


class ConsoleLog:
    """What the board printed on its serial line, kept in its folder whether or not a tool reads the port
    (a demo's or a test's boards run unattended): a console.log and one older file, `limit` bytes each."""

    def __init__(self, path: Path, limit: int):
        self.path = path
        self.limit = limit
        self._lock = threading.Lock()
        self._size = path.stat().st_size if path.exists() else 0
        self._failed = False
        self._file = None  # kept open (unbuffered): the VM's output comes in chunks of 64 bytes

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            try:
                if self._size and self._size + len(data) > self.limit:
                    if self._file is not None:
                        self._file.close()
                        self._file = None
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                    self._size = 0
                if self._file is None:
                    self._file = open(self.path, "ab", buffering=0)  # closed by close() or a rotation
                self._file.write(data)
                self._size += len(data)
            except OSError as exc:  # the serial line matters more than its copy: say so once, go on
                if not self._failed:
                    log.warning("console log %s: %s", self.path, exc)
                self._failed = True
