"""Emulated boards for tests and scripts: the `boardemu` verbs as methods.

    board = EmulatedBoard.start("water-level", tmp_path / "b1")   # returns once the board booted
    serial.Serial(board.port, 115200)                              # DIR/tty, the board's serial port
    board.reset(); board.power_cut(); board.power_on(); board.unplug(); board.plug()
    board.set(level_cm=35); board.play("rainstorm", speed=60); board.net(False); board.status()
    board.stop()

Starting again on the same folder is the same board (same unique id, same flash).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tools.boardemu import BoardEmuError, boardconf
from tools.boardemu.control import call, pid_alive, read_host_file

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


def scenario_path(name: str | Path) -> Path:
    """A scenario file: a path, or the name of one shipped in tools/boardemu/scenarios."""
    path = Path(name)
    if path.is_file():
        return path.resolve()
    shipped = SCENARIO_DIR / (path.name if path.suffix == ".json" else path.name + ".json")
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in SCENARIO_DIR.glob("*.json"))
    raise BoardEmuError("no scenario %s: give a JSON file or one of: %s" % (name, ", ".join(names) or "(none)"))


class EmulatedBoard:
    """A board whose state lives in `state_dir` (it may or may not be running)."""

    def __init__(self, state_dir: str | Path):
        self.dir = Path(state_dir).resolve()

    # --- life ---------------------------------------------------------------------------------------
    @classmethod
    def start(cls, kind: str | None, state_dir: str | Path, *, baud: int | None = None, heap: str | None = None,
              rfc2217_port: int | None = None, flash_size: str | None = None, owner_pid: int | None = None,
              timeout: float = 30.0) -> EmulatedBoard:
        """Bring the board of `state_dir` up (create it first if new) and wait until it has booted.

        `rfc2217_port=0` serves RFC 2217 on any free port (see `rfc2217_url`); `owner_pid` stops the
        board when that process ends.
        """
        board = cls(state_dir)
        board.dir.mkdir(parents=True, exist_ok=True)
        if board.running():
            config = boardconf.load(board.dir)
            if kind is not None and config is not None and config.kind != kind:
                raise BoardEmuError("%s runs a %s board, not %s: use another --dir" % (board.dir, config.kind, kind))
        else:
            boardconf.resolve(board.dir, kind, baud, heap, flash_size, rfc2217_port)
            command = [sys.executable, "-m", "tools.boardemu.host", "--dir", str(board.dir)]
            if owner_pid:
                command += ["--owner-pid", str(owner_pid)]
            launched = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
            if launched.returncode != 0 and not board.running():
                message = launched.stderr.strip().splitlines()[-1:] or ["the board host failed to start"]
                raise BoardEmuError(message[0].removeprefix("boardemu: "))
        board.wait_up(timeout)
        return board

    def running(self) -> bool:
        """True while a board host runs for this folder."""
        info = read_host_file(self.dir)
        return info is not None and pid_alive(int(info.get("pid", 0)))

    def stop(self, timeout: float = 15.0) -> None:
        """Switch the board off and end its host process (nothing to do when it is not running)."""
        info = read_host_file(self.dir)
        if info is None or not pid_alive(int(info["pid"])):
            return
        call(self.dir, "stop", timeout=timeout)
        deadline = time.monotonic() + timeout
        while pid_alive(int(info["pid"])) and read_host_file(self.dir) is not None:
            if time.monotonic() > deadline:
                raise BoardEmuError("the board host %d did not stop within %.0f s" % (info["pid"], timeout))
            time.sleep(0.02)

    def wait_up(self, timeout: float = 30.0) -> None:
        """Wait until the VM has mounted its flash after the last (re)start."""
        call(self.dir, "wait_up", timeout=timeout + 5, seconds=timeout)

    # --- identity -----------------------------------------------------------------------------------
    @property
    def port(self) -> str:
        """The serial port to open: the stable symlink DIR/tty (never the bare /dev/pts/N)."""
        return str(self.dir / "tty")

    @property
    def config(self) -> boardconf.BoardConfig:
        config = boardconf.load(self.dir)
        if config is None:
            raise BoardEmuError("%s holds no board" % self.dir)
        return config

    @property
    def uid(self) -> str:
        """The board's unique id (12 hex digits, like an ESP32 MAC)."""
        return self.config.uid

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def flash_image(self) -> Path:
        return self.dir / boardconf.FLASH_FILE

    @property
    def rfc2217_url(self) -> str | None:
        """`rfc2217://127.0.0.1:N` when the board serves RFC 2217."""
        info = read_host_file(self.dir) or {}
        port = info.get("rfc2217_port")
        return None if port is None else "rfc2217://127.0.0.1:%d" % port

    # --- verbs --------------------------------------------------------------------------------------
    def status(self) -> dict:
        """Running, uptime, resets and their causes, serial state, and the hardware's status."""
        return call(self.dir, "status")

    def reset(self, wait: bool = True) -> None:
        """Hard reset (the EN button); waits for the board to boot again unless `wait` is False."""
        call(self.dir, "reset")
        if wait:
            self.wait_up()

    def power_cut(self) -> None:
        """The power goes: the VM dies at once; flash writes in progress are torn."""
        call(self.dir, "power", on=False)

    def power_on(self, wait: bool = True) -> None:
        """Power returns: the board boots with reset cause power_on."""
        call(self.dir, "power", on=True)
        if wait:
            self.wait_up()

    def unplug(self) -> None:
        """Pull the USB cable: the serial port disappears (the board itself runs on)."""
        call(self.dir, "serial", plugged=False)

    def plug(self) -> None:
        """Plug the USB cable back in: a new port appears behind the same DIR/tty symlink."""
        call(self.dir, "serial", plugged=True)

    def set(self, values: dict | None = None, **more) -> object:
        """Set physical quantities (`tilt_deg=12`, `level_cm=35`...)."""
        return call(self.dir, "set", values={**(values or {}), **more})

    def play(self, scenario: str | Path, speed: float = 1.0) -> object:
        """Play a scenario (file or shipped name) in the background, `speed` times real time."""
        return call(self.dir, "play", path=str(scenario_path(scenario)), speed=speed)

    def net(self, up: bool) -> object:
        """Restore (True) or cut (False) the board's network link."""
        return call(self.dir, "net", up=bool(up))
