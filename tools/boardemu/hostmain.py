"""Entry of the board host process: detach, take DIR's lock, serve the verbs, run the board.

`python -m tools.boardemu.host --dir DIR [--owner-pid PID]` returns once the host listens (exit 0) or
has failed to start (exit 1, the reason on stderr); the host itself goes on in the background, its
log in DIR/host.log. With --owner-pid it stops when that process is gone (tests: no stray boards).
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from tools.boardemu import BoardEmuError, boardconf
from tools.boardemu.control import HOST_FILE, ControlServer, pid_alive, write_host_file
from tools.boardemu.host import BoardHost

log = logging.getLogger("boardemu.host")
LOCK_FILE = "host.lock"
LOG_FILE = "host.log"


def board_state(host: BoardHost) -> str:
    """off | reset (held by DTR/RTS) | running | deepsleep | rebooting."""
    if not host.powered:
        return "off"
    if host.held_in_reset:
        return "reset"
    if host.vm is not None:
        return "running"
    return "deepsleep" if host.next_start_cause == "deepsleep" else "rebooting"


def describe(host: BoardHost) -> dict:
    """`boardemu status`: what the board is doing, its resets, its serial port and its hardware."""
    vm = host.vm
    now = time.monotonic()
    hardware: dict
    if host.hw is not None:
        try:
            hardware = host.hw.status()
        except Exception as exc:
            hardware = {"error": "status failed: %s" % exc}
    else:
        hardware = {"error": "hardware emulation unavailable: %s" % host.hw_error}
    return {
        "dir": str(host.dir), "kind": host.config.kind, "uid": host.config.uid, "host_pid": os.getpid(),
        "state": board_state(host), "running": vm is not None, "vm_pid": vm.pid if vm else None,
        "uptime_s": round(now - host.vm_started, 3) if vm else None,
        "host_uptime_s": round(now - host.started, 3),
        "boots": host.boots, "reset_count": max(0, host.boots - 1),
        "last_reset_cause": host.history[-1][1] if host.history else None,
        "reset_causes": dict(host.causes),
        "reset_history": [{"time": t, "cause": c} for t, c in host.history],
        "repl": "raw" if host.raw_repl else "friendly",
        "serial": {
            "plugged": host.port.plugged, "port": str(host.port.link) if host.port.plugged else None,
            "device": host.port.device, "open": host.port.client_present(), "baud": host.config.baud,
            "tx_dropped": host.port.dropped, "rx_dropped": host.rx_dropped + (vm.rx_dropped if vm else 0),
        },
        "rfc2217": None if host.rfc is None else {"port": host.rfc.port, "connected": host.rfc.connected},
        "heap": host.config.heap, "flash_size": host.config.flash_size,
        "hardware": hardware,
    }


class Verbs:
    """The control server's handler: one method per verb."""

    def __init__(self, host: BoardHost):
        self.host = host

    def __call__(self, op, args):
        method = getattr(self, "op_%s" % op, None)
        if method is None:
            raise BoardEmuError("unknown request %r" % (op,))
        return method(**args)

    def _hw(self):
        if self.host.hw is None:
            raise BoardEmuError("hardware emulation is unavailable on this board: %s" % self.host.hw_error)
        return self.host.hw

    def op_status(self):
        return describe(self.host)

    def op_wait_up(self, seconds=20.0):
        if not self.host.up.wait(float(seconds)):
            raise BoardEmuError("the board did not boot within %.0f s (state %s): see %s"
                                % (float(seconds), board_state(self.host), self.host.dir / LOG_FILE))
        return True

    def op_reset(self):
        return self.host.submit("reset", "hard")

    def op_power(self, on):
        return self.host.submit("power", bool(on))

    def op_serial(self, plugged):
        return self.host.submit("serial", bool(plugged))

    def op_stop(self):
        return self.host.submit("stop")

    def op_set(self, values):
        return self._hw().set(dict(values))

    def op_play(self, path, speed=1.0):
        return self._hw().play(str(path), float(speed))

    def op_net(self, up):
        return self._hw().net(bool(up))


def _watch_owner(host: BoardHost, owner: int) -> None:
    while pid_alive(owner):
        time.sleep(1.0)
    log.info("owner %d is gone: stopping", owner)
    host.post("stop")


def _detach(log_path: Path) -> int | None:
    """Fork; the parent returns the read end of a pipe the child reports on, the child None."""
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        return read_end
    os.close(read_end)
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    os.environ["BOARDEMU_REPORT_FD"] = str(write_end)
    return None


def _report(message: str) -> None:
    fd = os.environ.pop("BOARDEMU_REPORT_FD", None)
    if fd is not None:
        os.write(int(fd), message.encode())
        os.close(int(fd))
    elif message != "ok":
        print("boardemu: " + message, file=sys.stderr)


def _serve(state_dir: Path, owner: int | None) -> int:
    lock = open(state_dir / LOCK_FILE, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _report("a board host already runs in %s" % state_dir)
        return 1
    try:
        config = boardconf.load(state_dir)
        if config is None:
            raise BoardEmuError("%s holds no board: create it with `boardemu start --kind K --dir DIR`" % state_dir)
        host = BoardHost(state_dir, config)
        host.open()
        control = ControlServer(Verbs(host))
        info = {"pid": os.getpid(), "control_port": control.port, "token": control.token,
                "port": str(host.port.link), "rfc2217_port": host.rfc.port if host.rfc else None}
        write_host_file(state_dir, info)
    except BoardEmuError as exc:
        _report(str(exc))
        return 1
    except Exception as exc:
        log.exception("start failed")
        _report("the board host failed to start: %s (see %s)" % (exc, state_dir / LOG_FILE))
        return 1
    signal.signal(signal.SIGTERM, lambda *_: host.post("stop"))
    if owner:
        threading.Thread(target=_watch_owner, args=(host, owner), name="owner", daemon=True).start()
    log.info("board %s (%s) up on %s", config.uid, config.kind, host.port.device)
    _report("ok")
    try:
        host.run()
    finally:
        (state_dir / HOST_FILE).unlink(missing_ok=True)
        control.close()
        log.info("stopped")
    return 0


def main(argv=None) -> int:
    """Start a board host for --dir; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m tools.boardemu.host")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--owner-pid", type=int, default=None)
    parser.add_argument("--foreground", action="store_true", help="do not detach (debugging)")
    args = parser.parse_args(argv)
    state_dir = args.dir.resolve()
    if not args.foreground:
        read_end = _detach(state_dir / LOG_FILE)
        if read_end is not None:
            with os.fdopen(read_end, "rb") as report:
                message = report.read().decode() or "the board host died while starting: see %s" % (
                    state_dir / LOG_FILE)
            if message == "ok":
                return 0
            print("boardemu: " + message, file=sys.stderr)
            return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    return _serve(state_dir, args.owner_pid)
