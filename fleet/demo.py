"""The whole system on one machine: a broker, three emulated boards provisioned with the real commands,
the ingest, and the storms played on the boards. Used by `fleet demo` and by the operations-centre tests.

Everything the demo does is what an installation does, typed by a program instead of a person: the
broker gets the fleet's generated configuration (`fleet broker config`, then Mosquitto on it), each board
is flashed and provisioned by `fleet provision` over its serial port, `fleet config` shortens what a
sped-up storm would otherwise outlast, and `fleet ingest` runs as its own process, as in production.
The boards are emulated (tools/boardemu): a real MicroPython VM behind a pseudo-terminal each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.errors import FleetError

#: The provisioning baud rate: the emulated boards' REPL runs as fast as a real USB-serial bridge allows.
BAUD = 921600


@dataclass(frozen=True)
class Node:
    """One demo board: what it measures, where it is, its storm and the config that suits a sped-up one."""

    kind: str
    site: str
    scenario: str
    speed: float
    settings: tuple[str, ...]
    start: dict[str, str] = field(default_factory=dict)
    heap: str | None = None  # the board's heap; None: the emulator's default (110 KB, an ESP32 without PSRAM)


NODES = (
    # A rainstorm at 10x: the street floods past 27 cm for about a minute; defaults raise and clear it.
    # Sampling every 2 s instead of the quiet-day minute lets a sped-up flood be seen as it rises.
    Node("water-level", "Harbour Rd 12, lamp post 3", "rainstorm", 10, ("sample.level=2",),
         {"level_cm": "0", "mount_height_cm": "300"}),
    # A typhoon at 10x. The storm alarm watches the wind itself: the gust is a 10-minute maximum
    # (WMO), which would keep the alarm up ten real minutes after a sped-up storm has passed.
    Node("wind-load", "Ocean Ave 8, billboard", "typhoon", 10, ("alarm.storm.measure=wind",)),
    # Someone lifts a manhole cover, sets it aside for two minutes and drops it back, in real time.
    Node("manhole-tilt", "Market St / 3rd, cover 17", "manhole-lift", 1, ()),
)


class DemoSite:
    """A fleet home with its broker, boards and ingest; `stop()` ends every process it started."""

    def __init__(self, home: Path, *, heap: str | None = None, log: Callable[[str], None] = print,
                 nodes: tuple[Node, ...] = NODES) -> None:
        self.home = Path(home)
        self.heap = heap
        self.log = log
        self.nodes = nodes
        self.env = dict(os.environ, FLEET_HOME=str(self.home))
        self.env.pop("FLEET_BROKER", None)
        self.broker: subprocess.Popen[bytes] | None = None
        self.ingest: subprocess.Popen[bytes] | None = None
        self.boards: dict[str, Any] = {}  # kind -> EmulatedBoard
        self.devices: dict[str, str] = {}  # kind -> device id
        self.port = 0

    # --- the fleet's own commands ------------------------------------------------------------------
    def fleet(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `fleet ARGS` in this site's home, as a user would; FleetError with its message on failure."""
        command = [sys.executable, "-m", "fleet.cli.main", *args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            last = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
            raise FleetError("demo: `fleet %s` failed (exit %d): %s" % (" ".join(args), done.returncode, last))
        return done

    # --- start -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Broker, ingest, boards, provisioning, demo configs: the site ready for its storms."""
        self.start_broker()
        self.start_ingest()  # before any device: its session then holds every message from the first
        self.start_boards()
        self.provision_all()
        self.configure()

    def start_broker(self) -> None:
        from fleet.broker import run_broker

        self.port = free_port()
        self.fleet("broker", "config", "--port", str(self.port), "--bind", "127.0.0.1")
        self.broker = run_broker(home=self.home)
        self.log("broker: Mosquitto on 127.0.0.1:%d (config in %s)" % (self.port, self.home / "broker"))

    def start_boards(self) -> None:
        from tools.boardemu.api import EmulatedBoard

        for node in self.nodes:
            board = EmulatedBoard.start(node.kind, self.home / "boards" / node.kind, baud=BAUD,
                                        heap=self.heap or node.heap,
                                        owner_pid=os.getpid())
            if node.start:
                board.set(node.start)
            self.boards[node.kind] = board
            self.log("board: emulated %s on %s" % (node.kind, board.port))

    def provision_all(self) -> None:
        """`fleet provision` on every board at once, as three technicians would."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            outcomes = list(pool.map(self._provision, self.nodes))
        for node, outcome in zip(self.nodes, outcomes, strict=True):
            self.devices[node.kind] = outcome["device"]
            self.log("provisioned: %s as %s (%s)" % (node.kind, outcome["device"], outcome["result"]))

    def _provision(self, node: Node) -> dict[str, Any]:
        board = self.boards[node.kind]
        done = self.fleet("provision", "--port", board.port, "--kind", node.kind, "--site", node.site,
                          "--baud", str(BAUD), "--json", check=False)
        try:
            outcome = json.loads(done.stdout)
        except ValueError:
            outcome = {}
        if done.returncode != 0 or outcome.get("result") != "PASS":
            failed = [c for c in outcome.get("checks", []) if c.get("status") == "FAIL"]
            why = failed[0]["detail"] if failed else (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise FleetError("demo: provisioning the %s board failed: %s" % (node.kind, why))
        return {"device": outcome["device"], "result": outcome["result"]}

    def start_ingest(self) -> None:
        log = open(self.home / "ingest.log", "ab")  # noqa: SIM115 - the process keeps it open
        command = [sys.executable, "-m", "fleet.cli.main", "ingest"]
        self.ingest = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        log.close()
        self.log("ingest: running (log %s)" % (self.home / "ingest.log"))

    def configure(self) -> None:
        for node in self.nodes:
            if node.settings:
                args = [arg for setting in node.settings for arg in ("--set", setting)]
                self.fleet("config", self.devices[node.kind], *args)
                self.log("config: %s %s" % (self.devices[node.kind], " ".join(node.settings)))

    def play(self) -> None:
        """Start every board's storm (again, once it has ended)."""
        for node in self.nodes:
            self.boards[node.kind].play(node.scenario, speed=node.speed)

    def scenario_seconds(self) -> float:
        """Wall time of the longest storm at its speed."""
        from tools.boardemu.api import scenario_path

        longest = 0.0
        for node in self.nodes:
            duration = json.loads(scenario_path(node.scenario).read_text())["duration_s"]
            longest = max(longest, duration / node.speed)
        return longest

    # --- stop --------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ingest first (it drains what it holds), then boards, then the broker; never raises."""
        if self.ingest is not None and self.ingest.poll() is None:
            self.ingest.send_signal(signal.SIGTERM)
            try:
                self.ingest.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.ingest.kill()
                self.ingest.wait()
        for board in self.boards.values():
            try:
                board.stop()
            except Exception as error:  # a board that is already gone is stopped
                self.log("board %s: %s" % (board.dir.name, error))
        if self.broker is not None and self.broker.poll() is None:
            self.broker.terminate()
            try:
                self.broker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.broker.kill()
                self.broker.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float, poll: float = 0.5) -> Any:
    """The first truthy value of `condition()` within `timeout` seconds, else None."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(poll)
