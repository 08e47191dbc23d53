"""Fixtures for hardware-in-the-loop tests.

- `broker`: a private Mosquitto for the test session (per xdist worker) on a free 127.0.0.1 port,
  generated config; `broker_factory(users=..., acl=...)` makes more (users/ACL/TLS variants).
- `board_factory(kind, name=None, **options)`: emulated boards in the test's tmp folder, stopped after
  the test (and by their host when the test process dies). `board`: one board; with HIL_PORT set it is
  the real board on that port instead, and `emulated_board`/`board_factory` tests are skipped.
- `fleet_cli("provision --port X")` or `fleet_cli("provision", "--port", x)`: runs the `fleet`
  command in a subprocess as a person types it; returns (code, stdout, stderr).
On failure the report shows the broker's log and the boards' host logs.
"""

from __future__ import annotations

import os
import resource
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.brokerproc import Broker
from tools.boardemu.api import EmulatedBoard

HIL_PORT = os.environ.get("HIL_PORT")
# Fleet-scale tests connect hundreds of clients; mosquitto holds a queue per offline persistent
# session. Bound it (a real deployment does too) and give the broker file descriptors to spare.
BROKER_EXTRA = "max_queued_messages 10000\nmax_connections -1\n"


def _raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))  # inherited by mosquitto


@pytest.fixture(scope="session")
def broker_factory(tmp_path_factory):
    """Start private brokers: `broker_factory(users={"u": "pw"}, acl="...", extra="...")`."""
    _raise_open_files_limit()
    started: list[Broker] = []

    def make(users=None, acl=None, extra="") -> Broker:
        folder = tmp_path_factory.mktemp("mosquitto")
        broker = Broker(folder, users=users, acl=acl, extra=BROKER_EXTRA + extra).start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture(scope="session")
def broker(broker_factory) -> Broker:
    """The session's Mosquitto: anonymous access, 127.0.0.1:broker.port; its log at broker.log."""
    return broker_factory()


@pytest.fixture
def board_factory(tmp_path, request):
    """Make emulated boards: `board_factory("water-level", name="b1", baud=9600, rfc2217_port=0)`."""
    if HIL_PORT:
        pytest.skip("emulator-only test: HIL_PORT points at a real board")
    boards: list[EmulatedBoard] = []
    request.node.boardemu_boards = boards

    def make(kind: str = "manhole-tilt", name: str | None = None, **options) -> EmulatedBoard:
        folder = tmp_path / (name or "board%d" % len(boards))
        board = EmulatedBoard.start(kind, folder, owner_pid=os.getpid(), **options)
        boards.append(board)
        return board

    yield make
    for board in boards:
        board.stop()


@pytest.fixture
def emulated_board(board_factory) -> EmulatedBoard:
    """One emulated manhole-tilt board (skipped when HIL_PORT is set)."""
    return board_factory("manhole-tilt")


class RealBoard:
    """The board on HIL_PORT: only its port; fault injection needs the emulator."""

    def __init__(self, port: str):
        self.port = port


@pytest.fixture
def board(request):
    """A board to talk to over serial: the real one on HIL_PORT, else an emulated manhole-tilt."""
    if HIL_PORT:
        return RealBoard(HIL_PORT)
    return request.getfixturevalue("emulated_board")


class CliResult(NamedTuple):
    code: int
    stdout: str
    stderr: str


def _console_script(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@pytest.fixture
def fleet_cli(tmp_path):
    """Run `fleet ...` as a subprocess, as typed in a shell; (code, stdout, stderr)."""

    def run(*args, input: str | None = None, env: dict | None = None, timeout: float = 120,
            cwd: str | os.PathLike | None = None) -> CliResult:
        words = shlex.split(args[0]) if len(args) == 1 and isinstance(args[0], str) else [str(a) for a in args]
        proc = subprocess.run([_console_script("fleet"), *words], capture_output=True, text=True, input=input,
                              env={**os.environ, **(env or {})}, cwd=cwd or tmp_path, timeout=timeout,
                              check=False)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def boardemu_cli(tmp_path):
    """Run `boardemu ...` as a subprocess, as typed in a shell; (code, stdout, stderr)."""

    def run(*args, timeout: float = 60) -> CliResult:
        words = shlex.split(args[0]) if len(args) == 1 and isinstance(args[0], str) else [str(a) for a in args]
        proc = subprocess.run([_console_script("boardemu"), *words], capture_output=True, text=True,
                              cwd=tmp_path, timeout=timeout, check=False)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return "(%s)" % exc


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, show where the broker and the boards logged, with their last lines."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    found = item.funcargs.get("broker") if hasattr(item, "funcargs") else None
    if isinstance(found, Broker):
        report.sections.append(("mosquitto log %s" % found.log, _tail(found.log)))
    for board in getattr(item, "boardemu_boards", []):
        log = board.dir / "host.log"
        report.sections.append(("board host log %s" % log, _tail(log)))


class SerialRepl:
    """A board's REPL over pyserial, the way mpremote/pyboard drive it (raw REPL, raw paste)."""

    def __init__(self, port: str, baud: int = 115200):
        import serial

        self.serial = serial.serial_for_url(port, baud, timeout=0.05)
        self._buffer = b""  # read from the port, not yet handed out

    def write(self, data: bytes) -> None:
        self.serial.write(data)

    def _fill(self) -> bytes:
        return self.serial.read(max(1, min(self.serial.in_waiting, 4096)))

    def read_until(self, ending: bytes, timeout: float = 15.0) -> bytes:
        """Everything up to and including `ending`; AssertionError with what came when it does not."""
        import time

        deadline = time.monotonic() + timeout
        while ending not in self._buffer:
            if time.monotonic() > deadline:
                raise AssertionError("no %r within %.0f s; got %r" % (ending, timeout, self._buffer[-500:]))
            self._buffer += self._fill()
        cut = self._buffer.index(ending) + len(ending)
        data, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return data

    def read_exactly(self, n: int, timeout: float = 15.0) -> bytes:
        """The next `n` bytes."""
        import time

        deadline = time.monotonic() + timeout
        while len(self._buffer) < n:
            if time.monotonic() > deadline:
                raise AssertionError("no %d bytes within %.0f s; got %r" % (n, timeout, self._buffer))
            self._buffer += self._fill()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def pending(self) -> bool:
        """True when bytes from the board wait to be read."""
        return bool(self._buffer) or self.serial.in_waiting > 0

    def drain(self, quiet: float = 0.2) -> bytes:
        """Read until the board has been silent for `quiet` seconds."""
        import time

        data, self._buffer = self._buffer, b""
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            chunk = self.serial.read(4096)
            if chunk:
                data += chunk
                last = time.monotonic()
        return data

    def enter_raw(self) -> None:
        """Interrupt whatever runs, then enter the raw REPL (no soft reset)."""
        self.write(b"\r\x03")
        self.drain(0.2)
        self.write(b"\r\x01")
        self.read_until(b"raw REPL; CTRL-B to exit\r\n>")

    def exec_raw(self, code: str, timeout: float = 15.0) -> tuple[bytes, bytes]:
        """Run `code` from the raw REPL; (stdout, stderr) as the board sent them."""
        self.write(code.encode() + b"\x04")
        self.read_until(b"OK", timeout)
        out = self.read_until(b"\x04", timeout)[:-1]
        err = self.read_until(b"\x04", timeout)[:-1]
        self.read_until(b">", timeout)
        return out, err

    def close(self) -> None:
        self.serial.close()

    def __enter__(self) -> SerialRepl:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
