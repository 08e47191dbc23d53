"""Agent on an emulated water-level board (the default 110 KB heap) with a real Mosquitto.

Alarm latency: from the moment the emulated water crosses the alarm level (`boardemu set`) to the alarm
event at the broker, with the confirm time set to 0 s by config, so what is measured is the agent's own
path (sampling period, median filter, outbox, uplink, MQTT). Peak heap: the agent's lowest free heap
since boot (after a collection), from the health it sends on a rebirth command, against the board's heap.
Reconnects: the broker drops the agent's session RECONNECTS times (a client connecting with the agent's
client id takes it over, as after a network flap); free heap after a collection must not shrink. The
agent's backoff doubles after every session shorter than 30 s (agent/link.py), which would make 100
take-overs take about an hour, so this board's identity sets the link's `stable_s` to 0 (every session
starts the backoff over: a pause under a second). tests/test_agent_mqtt_vm.py checks 80 sessions of the
MQTT layer alone.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from hil_tests.agentnode import install
from protocols.commands import Rebirth
from protocols.config import Alarm, Config
from tests.brokerproc import Broker
from tests.observer import Observer
from tools.boardemu.api import EmulatedBoard

HEAP_BYTES = 110 * 1024  # the emulator's default heap (tools/boardemu/boardconf.py)
FLEET = "city"
ROUNDS = 5
RECONNECTS = 100


def _health_now(observer, device, cid):
    mark = len(observer.seen)
    observer.command(FLEET, device, Rebirth(cid))
    return observer.wait_for("health", timeout=30, after=mark)


def _take_over(port: int, client_id: str) -> None:
    """Connect with the agent's client id and leave: the broker drops the agent's session (MQTT 3.1.1 3.1.4)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()


def run() -> dict:
    """Median alarm latency over a few crossings, and the peak heap of the agent."""
    from firmware.build import build_bundle

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = Broker(root / "broker").start()
        board = EmulatedBoard.start("water-level", root / "board", owner_pid=os.getpid())
        observer = Observer(broker.port)
        try:
            board.set({"level_cm": "0", "mount_height_cm": "300"})
            build_bundle("emulator", "bench", root / "bundle")
            device = "wl-bench"
            install(board, root / "bundle", {"fleet": FLEET, "id": device, "kind": "water-level",
                                             "broker": {"host": "127.0.0.1", "port": broker.port, "stable_s": 0},
                                             "calibration": {"mount_mm": 3000}})
            observer.wait_for("state", lambda m: m.online, timeout=60)
            alarms = {"flood": Alarm("level", 270, 240, 0, 2), "flood_warn": Alarm("level", 150, 120, 0, 1)}
            observer.command(FLEET, device, Config(1, 5, alarms=alarms, sample={"level": 2}))
            observer.wait_for("ack", lambda m: m.cid == 1)
            latencies = []
            for _ in range(ROUNDS):
                mark = len(observer.seen)
                crossed = time.monotonic()
                board.set({"level_cm": "40"})
                observer.wait_for("event", lambda m: m.alarm == "flood" and m.state == 1, timeout=60, after=mark)
                latencies.append(time.monotonic() - crossed)
                mark = len(observer.seen)
                board.set({"level_cm": "0"})
                observer.wait_for("event", lambda m: m.alarm == "flood" and m.state == 0, timeout=60, after=mark)
            health = _health_now(observer, device, 2)
            for number in range(RECONNECTS):
                mark = len(observer.seen)
                _take_over(broker.port, FLEET + "-" + device)
                # subscribed again once it acks the retained config the broker sends on subscribing
                observer.wait_for("ack", lambda m: m.cid == 1, timeout=120, after=mark)
                if number == 0:
                    first = _health_now(observer, device, 3)
            last = _health_now(observer, device, 4)
        finally:
            observer.close()
            board.stop()
            broker.stop()
    peak = HEAP_BYTES - health.heap_min
    return {
        "alarm_latency_s": latencies,
        "peak_heap_bytes": peak,
        "free_heap_after_reconnects": {"1": first.heap_free, str(RECONNECTS): last.heap_free},
        "lines": [
            "alarm latency (water past 27 cm -> event at the broker, confirm 0 s, quiet-day period 2 s): "
            "median %.2f s, max %.2f s over %d crossings" % (statistics.median(latencies), max(latencies), ROUNDS),
            "agent peak heap in the VM: %d bytes used at the low-water mark of a 110 KB heap (aim 64 KB)" % peak,
            "free heap after a collection: %d bytes after 1 reconnect, %d after %d (%+d)"
            % (first.heap_free, last.heap_free, RECONNECTS, last.heap_free - first.heap_free),
        ],
    }


if __name__ == "__main__":
    for line in run()["lines"]:
        print(line)
