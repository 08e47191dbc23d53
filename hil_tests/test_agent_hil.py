"""The agent on emulated boards against a real Mosquitto: scenarios, alarms, outages, power cuts.

Each test installs the built agent bundle on a fresh emulated board (hil_tests/agentnode.py), lets
main.py start it and judges only what reaches the broker, decoded with the fleet's protocol code.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hil_tests.agentnode import bundle, install
from protocols.config import Alarm, Config
from tests.observer import Observer

pytestmark = pytest.mark.hil

FLEET = "city"
# Every node runs with the emulator's default heap, 110 KB: the free heap of an ESP32 without PSRAM.
HEAP = None
SCENARIOS = Path(__file__).resolve().parent.parent / "tools" / "boardemu" / "scenarios"
FAST_FLOOD = {"flood": Alarm("level", 270, 240, 3, 2), "flood_warn": Alarm("level", 150, 120, 3, 1)}


def _start_water_node(board_factory, broker, tmp_root):
    board = board_factory("water-level", heap=HEAP)
    board.set({"level_cm": "0", "mount_height_cm": "300"})
    identity = {"fleet": FLEET, "id": "wl-%s" % board.uid[-6:], "kind": "water-level",
                "broker": {"host": "127.0.0.1", "port": broker.port}, "calibration": {"mount_mm": 3000}}
    observer = Observer(broker.port)
    install(board, bundle(tmp_root), identity)
    return board, observer, identity["id"]


@pytest.fixture
def water_node(board_factory, broker, tmp_path_factory):
    """A provisioned water-level node (mounted 3 m above a dry street) and an observer on the broker."""
    node = _start_water_node(board_factory, broker, tmp_path_factory.getbasetemp())
    yield node
    node[1].close()


def _mine(observer, device, kind):
    return [m for d, k, m in observer.seen if d == device and k == kind]


def _fast_alarms(observer, device):
    # A quiet-day period of 2 s and 3 s confirms keep the test short; the defaults are 60 s and 30 s.
    observer.command(FLEET, device, Config(7, 3, alarms=FAST_FLOOD, sample={"level": 2}))
    ack = observer.wait_for("ack", lambda m: m.cid == 7)
    assert ack.status == 0 and ack.config == 3


def test_rainstorm_raises_and_clears_each_alarm_once(water_node):
    board, observer, device = water_node
    birth = observer.wait_for("state", lambda m: m.online, timeout=60)
    assert birth.kind == "water" and birth.reset == 1
    _fast_alarms(observer, device)
    start = len(observer.seen)
    board.play(str(SCENARIOS / "rainstorm.json"), speed=30)  # 30 minutes in 60 s
    observer.wait_for("event", lambda m: m.alarm == "flood" and m.state == 1, timeout=90, after=start)
    observer.wait_for("event", lambda m: m.alarm == "flood_warn" and m.state == 0, timeout=90, after=start)
    events = [(m.alarm, m.state) for m in _mine(observer, device, "event")]
    # Ripples, spurious echoes and corrupted frames on the way: still exactly one raise and one clear each.
    assert sorted(events) == sorted([("flood_warn", 1), ("flood", 1), ("flood", 0), ("flood_warn", 0)])
    levels = [r.value for m in _mine(observer, device, "telemetry") for r in m.records(time.time())
              if r.name == "level"]
    assert max(levels) == pytest.approx(350, abs=30)  # mm: 35 cm at the crest


def test_network_cut_loses_nothing_and_keeps_order(water_node):
    board, observer, device = water_node
    observer.wait_for("state", lambda m: m.online, timeout=60)
    _fast_alarms(observer, device)
    cut_at = time.time()
    board.net(False)
    for level in range(2, 40, 4):  # the water rises past both levels while the node is cut off
        board.set({"level_cm": str(level)})
        time.sleep(1.5)
    time.sleep(12)  # the median filter and the 3 s confirm: the crossing is confirmed while still cut off
    restored_at = time.time()
    board.net(True)
    observer.wait_for("event", lambda m: m.alarm == "flood" and m.state == 1, timeout=150)
    flood = [m for m in _mine(observer, device, "event") if m.alarm == "flood"]
    assert len({(m.boot, m.seq) for m in flood}) == 1
    assert cut_at - 1 <= flood[0].since <= restored_at  # stored at its own time, not the arrival time
    stored = [m for m in observer.seen if m[0] == device and m[1] in ("telemetry", "event")]
    first_seen = []
    for _, _, message in stored:
        if (message.boot, message.seq) not in first_seen:
            first_seen.append((message.boot, message.seq))
    assert first_seen == sorted(first_seen)  # the backlog drained oldest first
    during = [r for m in _mine(observer, device, "telemetry") for r in m.records(time.time())
              if r.name == "level" and cut_at <= r.time <= restored_at]
    assert len(during) >= 3  # readings taken while cut off arrived as history


def test_power_cut_keeps_the_outbox_and_never_repeats_a_sequence(water_node):
    board, observer, device = water_node
    first = observer.wait_for("state", lambda m: m.online, timeout=60)
    _fast_alarms(observer, device)
    board.net(False)  # readings pile up in the flash outbox...
    board.set({"level_cm": "30"})
    time.sleep(12)
    board.power_cut()  # ...and survive a power cut
    board.power_on()
    board.net(True)
    second = observer.wait_for("state", lambda m: m.online and m.boot != first.boot, timeout=120)
    assert second.reset == 1  # power on
    flood = observer.wait_for("event", lambda m: m.alarm == "flood" and m.state == 1, timeout=60)
    assert flood.boot == first.boot  # raised before the cut, delivered after it
    keys = [(m.boot, m.seq) for _, _, m in observer.seen]
    first_max = max(seq for boot, seq in keys if boot == first.boot)
    assert all(seq > first_max for boot, seq in keys if boot == second.boot)
    # The alarm state was persisted: the new boot does not raise the same alarm again.
    time.sleep(8)
    assert [m for m in _mine(observer, device, "event") if m.boot == second.boot and m.state == 1] == []


def test_broker_killed_and_restarted_is_survived(board_factory, broker_factory, tmp_path_factory):
    own = broker_factory()
    board, observer, device = _start_water_node(board_factory, own, tmp_path_factory.getbasetemp())
    try:
        observer.wait_for("state", lambda m: m.online, timeout=60)
        _fast_alarms(observer, device)
        observer.close()
        own.stop()  # the broker dies; the node keeps measuring into its outbox
        board.set({"level_cm": "30"})
        time.sleep(10)
        own.start()
        observer = Observer(own.port)
        flood = observer.wait_for("event", lambda m: m.alarm == "flood" and m.state == 1, timeout=120)
        assert flood.since <= time.time()
        observer.wait_for("state", lambda m: m.online, timeout=60)
    finally:
        observer.close()


KIND_CASES = {
    # kind: (calibration, scenario, speed, alarms set by config (name -> Alarm), alarms that must raise and clear)
    "wind-load": ({"tare": 120000, "scale": 50}, "typhoon.json", 30,
                  # On the instantaneous speed: the gust is a 10-minute maximum and clears too slowly for a test.
                  {"storm": Alarm("wind", 24.5, 20.8, 2, 2)}, {"storm"}),
    "manhole-tilt": ({"base_x": 0.0, "base_y": 0.0, "base_z": 1.0}, "manhole-lift.json", 5,
                     {"tilt": Alarm("tilt", 15, 12, 2, 2)}, {"tilt"}),
}


@pytest.mark.parametrize("kind", sorted(KIND_CASES))
def test_scenario_alarms_raise_and_clear_once(kind, board_factory, broker, tmp_path_factory):
    calibration, scenario, speed, alarms, expected = KIND_CASES[kind]
    board = board_factory(kind, heap=HEAP)
    device = "%s-%s" % (kind.split("-")[0][:5], board.uid[-6:])
    identity = {"fleet": FLEET, "id": device, "kind": kind,
                "broker": {"host": "127.0.0.1", "port": broker.port}, "calibration": calibration}
    observer = Observer(broker.port)
    try:
        install(board, bundle(tmp_path_factory.getbasetemp()), identity)
        observer.wait_for("state", lambda m: m.online, timeout=60)
        observer.command(FLEET, device, Config(9, 2, alarms=alarms))
        assert observer.wait_for("ack", lambda m: m.cid == 9).status == 0
        board.play(str(SCENARIOS / scenario), speed=speed)
        for name in expected:
            observer.wait_for("event", lambda m, name=name: m.alarm == name and m.state == 0, timeout=150)
        events = [(m.alarm, m.state) for m in _mine(observer, device, "event")]
        for name in expected:
            assert events.count((name, 1)) == 1 and events.count((name, 0)) == 1, events
        for name, state in set(events):  # every other alarm (lift, impact, load) also never flaps
            assert events.count((name, state)) == 1, events
    finally:
        observer.close()
