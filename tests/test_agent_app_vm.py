"""The whole agent in the real MicroPython VM: emulated water-level chips, a real Mosquitto, the real wire.

The agent runs from its built bundle (`.mpy`, as on a board) with the emulator's `machine` on the path
and a Hardware model in this process (no serial emulator needed). What reaches the broker is decoded
with the fleet's side of the protocol (tests/observer.py). The heap is a board's 110 KB plus what the
board emulator adds for the modules that are firmware on a board (tools/boardemu/vmproc.py
FIRMWARE_RESERVE): the emulator's `machine` and `network` are Python here, in the same heap.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from firmware.build import build_bundle
from protocols.commands import Ping
from protocols.config import Alarm, Config
from tests.brokerproc import Broker
from tests.mpvm import REPO, micropython_binary
from tests.observer import Observer
from tools.boardemu.hardware import Hardware
from tools.boardemu.vmproc import FIRMWARE_RESERVE

pytestmark = pytest.mark.micropython
HEAP = str(110 * 1024 + FIRMWARE_RESERVE)

RUN = """
import asyncio, board
from agent import app, identity
ident = identity.load({root!r} + '/device.json')
asyncio.run(app.Agent(board.Board(), ident, data={root!r} + '/data').run())
"""


@pytest.fixture
def node(tmp_path):
    broker = Broker(tmp_path / "broker").start()
    hw = Hardware("water-level", tmp_path / "hw", seed=3)
    env = hw.start()
    env.update(BOARDEMU_RESET_CAUSE="power_on", BOARDEMU_UID="24dcc3a01122")
    hw.vm_starting("power_on")
    hw.set({"level_cm": "5", "mount_height_cm": "300"})
    root = tmp_path / "flash"
    (root / "data").mkdir(parents=True)
    identity = {"fleet": "city", "id": "wl-1", "kind": "water-level",
                "broker": {"host": "127.0.0.1", "port": broker.port}, "calibration": {"mount_mm": 3000}}
    (root / "device.json").write_text(json.dumps(identity))
    bundle = tmp_path / "bundle"
    build_bundle("emulator", "0.1.0-test", bundle)
    observer = Observer(broker.port)
    vm_env = dict(os.environ, MICROPYPATH="%s:%s:.frozen" % (REPO / "tools/boardemu/vm", bundle), **env)
    log = (tmp_path / "vm.log").open("w")
    proc = subprocess.Popen([micropython_binary(), "-X", "heapsize=" + HEAP, "-c", RUN.format(root=str(root))],
                            env=vm_env, stdout=log, stderr=subprocess.STDOUT)
    yield hw, observer
    proc.kill()
    proc.wait()
    observer.close()
    hw.close()
    broker.stop()
    print((tmp_path / "vm.log").read_text()[-3000:])


def _both_alarms(observer, state):
    """Names of the alarms that reached `state`, once both water alarms have."""
    for name in ("flood", "flood_warn"):
        observer.wait_for("event", lambda m, name=name: m.alarm == name and m.state == state)
    return {m.alarm for m in observer.of("event") if m.state == state}


def test_birth_telemetry_config_alarms_and_ping(node):
    hw, observer = node
    birth = observer.wait_for("state", lambda m: m.online)
    assert birth.kind == "water" and birth.reset == 1 and birth.config == 0
    first = observer.wait_for("telemetry", lambda m: any(r.name == "level" for r in m.records(time.time())))
    assert [r.value for r in first.records(time.time()) if r.name == "level"][0] == pytest.approx(50, abs=10)  # mm

    # A faster confirm and a 5 s quiet-day period (instead of a minute) through the fleet's config
    # command, acked with the version in force.
    alarms = {"flood": Alarm("level", 270, 240, 2, 2), "flood_warn": Alarm("level", 150, 120, 2, 1)}
    observer.command("city", "wl-1", Config(41, 7, alarms=alarms, sample={"level": 5}))
    ack = observer.wait_for("ack", lambda m: m.cid == 41)
    assert ack.status == 0 and ack.config == 7

    hw.set({"level_cm": "30"})  # a real crossing of both thresholds
    raised = _both_alarms(observer, 1)
    assert raised == {"flood", "flood_warn"}
    hw.set({"level_cm": "5"})
    cleared = _both_alarms(observer, 0)
    assert cleared == {"flood", "flood_warn"}

    observer.command("city", "wl-1", Ping(42, echo=123456))
    pong = observer.wait_for("ack", lambda m: m.cid == 42)
    assert pong.result == 123456
