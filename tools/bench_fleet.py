"""The technician's commands on emulated boards at 115200 baud, as typed: `fleet flash` and `fleet provision`.

Flash throughput: the bytes `fleet flash` sends per second while sending, as a share of the line rate
(115200 baud is 11,520 bytes/s with start and stop bits), on a blank board (the whole bundle). Provision
time: wall time of `fleet provision` from a blank board to PASS, with the fleet's own Mosquitto
(generated config, per-device credential) and the end-to-end self-test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fleet.broker import run_broker
from tests.brokerproc import free_port
from tools.boardemu.api import EmulatedBoard

BAUD = 115200


def _fleet(home: Path, *args: str) -> subprocess.CompletedProcess:
    fleet = str(Path(sys.executable).with_name("fleet"))
    return subprocess.run([fleet, *args], env=dict(os.environ, FLEET_HOME=str(home)), capture_output=True,
                          text=True, timeout=300)


def run() -> dict:
    """Flash line share and provision wall time, each on a fresh blank board."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        home = root / "home"
        port = free_port()
        configured = _fleet(home, "broker", "config", "--port", str(port))
        if configured.returncode:
            raise RuntimeError(configured.stderr)
        broker = run_broker(home / "broker")
        boards = []
        try:
            boards.append(EmulatedBoard.start("water-level", root / "flashed", baud=BAUD, owner_pid=os.getpid()))
            flashed = _fleet(home, "flash", "--port", boards[0].port, "--json")
            if flashed.returncode:
                raise RuntimeError(flashed.stderr)
            summary = json.loads(flashed.stdout)
            boards.append(EmulatedBoard.start("water-level", root / "provisioned", baud=BAUD, owner_pid=os.getpid()))
            started = time.monotonic()
            provisioned = _fleet(home, "provision", "--port", boards[1].port, "--kind", "water-level",
                                 "--site", "bench street", "--broker", "mqtt://127.0.0.1:%d" % port)
            provision_s = time.monotonic() - started
            if provisioned.returncode:
                raise RuntimeError(provisioned.stdout + provisioned.stderr)
        finally:
            for board in boards:
                board.stop()
            broker.kill()
            broker.wait()
    return {
        "flash": summary,
        "provision_s": provision_s,
        "lines": [
            "fleet flash, blank board at %d baud: %d bytes in %.1f s of sending, %.0f %% of the line rate"
            % (BAUD, summary.get("bytes_sent", 0), summary.get("send_seconds", 0), 100 * (summary["line_share"] or 0)),
            "fleet provision, blank water-level board to PASS at %d baud: %.1f s" % (BAUD, provision_s),
        ],
    }


if __name__ == "__main__":
    for line in run()["lines"]:
        print(line)
