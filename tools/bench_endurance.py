"""Each kind of node through ten minutes of its storm at the emulator's default heap (110 KB).

One board per kind, all at once, each with a real Mosquitto: the water-level node through the rainstorm,
the wind-load node through the typhoon (both 30 minutes played at 3x), the manhole-tilt node through the
cover being lifted, played again every five minutes. Halfway, each gets a new config (the path that
needs the most contiguous heap). At the end a rebirth asks for health. A node that ran out of heap
resets and comes back with a new boot id, so the figure that matters is "boots: 1"; beside it the lowest
free heap the agent saw (after a collection) and how many messages it sent.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from hil_tests.agentnode import install
from protocols.commands import Rebirth
from protocols.config import Alarm, Config
from tests.brokerproc import Broker
from tests.observer import Observer
from tools.boardemu.api import SCENARIO_DIR, EmulatedBoard

HEAP_BYTES = 110 * 1024  # the emulator's default heap (tools/boardemu/boardconf.py)
FLEET = "city"
DURATION_S = float(os.environ.get("BENCH_ENDURANCE_S", "600"))

#: kind -> (device id, calibration, scenario, speed, replay every s, config sent halfway)
NODES = {
    "water-level": ("wl-endure", {"mount_mm": 3000}, "rainstorm.json", 3, None,
                    Config(11, 2, alarms={"flood": Alarm("level", 260, 230, 20, 2)})),
    "wind-load": ("wind-endure", {"tare": 120000, "scale": 50}, "typhoon.json", 3, None,
                  Config(12, 2, alarms={"storm": Alarm("gust", 25, 21, 0, 2)})),
    "manhole-tilt": ("manh-endure", {"base_x": 0.0, "base_y": 0.0, "base_z": 1.0}, "manhole-lift.json", 1, 300,
                     Config(13, 2, alarms={"tilt": Alarm("tilt", 14, 11, 5, 2)})),
}


def _play(board: EmulatedBoard, scenario: str, speed: float) -> None:
    board.play(str(SCENARIO_DIR / scenario), speed=speed)


def _wait(observer: Observer, device: str, kind: str, predicate, timeout: float, after: int = 0):
    """The first `kind` message from `device` (index >= `after`) satisfying `predicate`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for seen_device, seen_kind, message in observer.seen[after:]:
            if seen_device == device and seen_kind == kind and predicate(message):
                return message
        observer.drain(0.5)
    raise AssertionError("%s sent no matching %s within %.0f s" % (device, kind, timeout))


def run() -> dict:
    """Run the three nodes for DURATION_S and report boots, lowest free heap and traffic per kind."""
    from firmware.build import build_bundle

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = Broker(root / "broker").start()
        observer = Observer(broker.port)
        boards: dict[str, EmulatedBoard] = {}
        try:
            build_bundle("emulator", "endurance", root / "bundle")
            for kind, (device, calibration, *_rest) in NODES.items():
                board = EmulatedBoard.start(kind, root / kind, owner_pid=os.getpid())
                boards[kind] = board
                if kind == "water-level":
                    board.set({"level_cm": "0", "mount_height_cm": "300"})
                install(board, root / "bundle", {"fleet": FLEET, "id": device, "kind": kind,
                                                 "broker": {"host": "127.0.0.1", "port": broker.port},
                                                 "calibration": calibration})
            silent = set()  # a node that never came up (out of heap at start) is a result, not a crash
            for kind, (device, *_rest) in NODES.items():
                try:
                    _wait(observer, device, "state", lambda m: m.online, timeout=60)
                except AssertionError:
                    silent.add(kind)
            started = time.monotonic()
            played: dict[str, float | None] = dict.fromkeys(NODES)  # when each scenario last started
            configured = False
            while (elapsed := time.monotonic() - started) < DURATION_S:
                for kind, (_device, _cal, scenario, speed, every, _config) in NODES.items():
                    last = played[kind]
                    if last is None or (every is not None and elapsed - last >= every):
                        _play(boards[kind], scenario, speed)
                        played[kind] = elapsed
                if not configured and elapsed >= DURATION_S / 2:
                    for _kind, (device, *_rest, config) in NODES.items():
                        observer.command(FLEET, device, config)
                    configured = True
                observer.drain(1.0)
            results = {}
            for number, (kind, (device, *_rest, config)) in enumerate(NODES.items()):
                mark = len(observer.seen)
                observer.command(FLEET, device, Rebirth(100 + number))
                try:
                    health = _wait(observer, device, "health", lambda m: True, timeout=60, after=mark)
                except AssertionError:
                    health = None
                mine = [(k, m) for d, k, m in observer.seen if d == device]
                lows = [m.heap_min for k, m in mine if k == "health" and m.heap_min is not None]
                boots = sorted({m.boot for _k, m in mine})
                acks = [m for k, m in mine if k == "ack" and m.cid == config.cid]
                results[kind] = {
                    "came_up": kind not in silent,
                    "boots": len(boots),
                    "messages": len(mine),
                    "events": sum(1 for k, _m in mine if k == "event"),
                    "config_applied": bool(acks) and acks[0].status == 0,
                    "lowest_free_heap": min(lows) if lows else None,
                    "free_heap_end": None if health is None else health.heap_free,
                }
        finally:
            observer.close()
            for board in boards.values():
                board.stop()
            broker.stop()
    lines = ["%d s per node at the default heap (%d bytes), config changed halfway:" % (DURATION_S, HEAP_BYTES)]
    for kind, figures in results.items():
        if figures["lowest_free_heap"] is None or figures["free_heap_end"] is None:
            lines.append("%-13s %s: boots %d, %d messages, config applied: %s (no health to read the heap from)"
                         % (kind, "came up" if figures["came_up"] else "NO BIRTH within 60 s of power-on",
                            figures["boots"], figures["messages"], "yes" if figures["config_applied"] else "NO"))
            continue
        lines.append("%-13s boots %d, %4d messages (%d alarm events), config applied: %s, lowest free heap %d B "
                     "(peak use %d B), free at the end %d B"
                     % (kind, figures["boots"], figures["messages"], figures["events"],
                        "yes" if figures["config_applied"] else "NO", figures["lowest_free_heap"],
                        HEAP_BYTES - figures["lowest_free_heap"], figures["free_heap_end"]))
    return {"nodes": results, "lines": lines}


if __name__ == "__main__":
    for line in run()["lines"]:
        print(line)
