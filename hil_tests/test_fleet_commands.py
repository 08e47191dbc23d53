"""`fleet ping`, `fleet config`, `fleet reboot` and `fleet device show` against an emulated water-level
board that `fleet provision` made a device of, on a Mosquitto running the fleet's generated passwd and
ACL, typed as an operator types them. What the device did is judged on the broker (read as fleet-ops),
not from the command's own words: an alarm at the new threshold, the config version in its birth.
"""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from fleet.broker import ops_secret, run_broker
from fleet.registry import open_registry
from protocols import messages, topics
from tests.brokerproc import free_port

pytestmark = pytest.mark.hil

FAST = 921600
AGENT_HEAP = None  # the emulator's default, 110 KB: the free heap of an ESP32 without PSRAM
DEVICE = "wl-cmd"


class OpsView:
    """fleet-ops on `dt/city/<device>/#`: every message decoded, in arrival order."""

    def __init__(self, port: int, home: Path, device: str) -> None:
        self.inbox: queue.Queue = queue.Queue()
        self.seen: list[tuple[str, object]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.username_pw_set("fleet-ops", ops_secret(home))
        self.client.on_message = lambda c, u, m: self.inbox.put((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("dt/city/%s/#" % device, 1)
        self.client.loop_start()

    def wait_for(self, kind: str, predicate, timeout: float = 60.0, after: int = 0):
        """The first `kind` message from index `after` on that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        index = after
        while True:
            while index < len(self.seen):
                seen_kind, message = self.seen[index]
                index += 1
                if seen_kind == kind and predicate(message):
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no matching %s within %.0f s; last: %r"
                                     % (kind, timeout, [(k, m.to_obj()) for k, m in self.seen[-6:]]))
            try:
                raw_topic, payload = self.inbox.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            topic = topics.parse(raw_topic)
            self.seen.append((topic.kind, messages.decode(topic, payload)))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def site(tmp_path, fleet_cli):
    """A fleet home with its own broker running the generated configuration; `run(...)` types `fleet`."""
    home = tmp_path / "home"
    port = free_port()

    def run(*args, **kw):
        return fleet_cli(*[str(a) for a in args], env={"FLEET_HOME": str(home)}, **kw)

    configured = run("broker", "config", "--port", port)
    assert configured.code == 0, configured.stderr
    proc = run_broker(home / "broker")
    yield home, port, run
    proc.kill()
    proc.wait(timeout=10)


def test_ping_config_and_reboot_reach_a_provisioned_device(site, board_factory):
    home, port, run = site
    board = board_factory("water-level", baud=FAST, heap=AGENT_HEAP)
    board.set({"level_cm": "0"})
    provisioned = run("provision", "--port", board.port, "--baud", FAST, "--kind", "water-level", "--site",
                      "Quay 3", "--id", DEVICE)
    assert provisioned.code == 0, provisioned.stdout + provisioned.stderr
    view = OpsView(port, home, DEVICE)
    try:
        birth = view.wait_for("state", lambda m: m.online)

        # ping: a round trip, from the device's echo of our send time
        pinged = run("ping", DEVICE, "--json")
        assert pinged.code == 0, pinged.stderr
        answer = json.loads(pinged.stdout)
        assert answer["boot"] == birth.boot and 0 < answer["rtt_ms"] < 5000
        print("ping round trip: %.1f ms" % answer["rtt_ms"])
        assert run("ping", DEVICE).stdout.startswith("%s answered in " % DEVICE)

        # config: a lower flood warning with a short confirm and a fast quiet-day sample period
        start = len(view.seen)
        sets = ["alarm.flood_warn.raise=50", "alarm.flood_warn.clear=30", "alarm.flood_warn.confirm=2",
                "sample.level=1"]
        changed = run("config", DEVICE, *[w for s in sets for w in ("--set", s)])
        assert changed.code == 0, changed.stdout + changed.stderr
        version = open_registry(home).get(DEVICE)["config"]["version"]
        assert changed.stdout == "%s applied config version %d\n" % (DEVICE, version)
        ack = view.wait_for("ack", lambda m: m.config == version, after=start)
        assert ack.status == 0
        shown = json.loads(run("device", "show", DEVICE, "--json").stdout)
        assert shown["config_state"]["state"] == "in force" and shown["config_version"] == version

        # a value the protocol rejects never leaves the fleet; one the device refuses is reported, exit 1
        same = run("config", DEVICE, "--set", "alarm.flood.raise=260", "--set", "alarm.flood.clear=260")
        assert (same.code, same.stderr) == (3, "fleet: bad --set alarm.flood.raise alarm.flood.clear: raise and "
                                               "clear thresholds must differ (hysteresis)\n")
        assert open_registry(home).get(DEVICE)["config"]["version"] == version
        refused = run("config", DEVICE, "--set", "alarm.flood.raise=20000", "--set", "heartbeat=600")
        assert refused.code == 1, refused.stdout + refused.stderr
        assert refused.stderr == ("fleet: %s refused config version %d: bad_threshold:flood; the rest is in force "
                                  "as version %d\n" % (DEVICE, version + 1, version + 1))
        state = json.loads(run("device", "show", DEVICE, "--json").stdout)["config_state"]
        assert (state["desired"], state["state"], state["reasons"]) == (version + 1, "refused", ["bad_threshold:flood"])
        assert "refused (bad_threshold:flood)" in run("device", "show", DEVICE).stdout

        # reboot: acknowledged, then a birth with a new boot id that runs the last version
        rebooted = run("reboot", DEVICE, "--json")
        assert rebooted.code == 0, rebooted.stderr
        result = json.loads(rebooted.stdout)
        assert result["old_boot"] == birth.boot and result["new_boot"] not in (None, birth.boot)
        print("reboot to new birth: %.1f s" % result["seconds"])
        reborn = view.wait_for("state", lambda m: m.online and m.boot == result["new_boot"])
        assert reborn.config == version + 1
        # The new threshold is the one in force. (Judged after the reboot: a running agent takes a new
        # sample period only after the sleep of the old one, up to the default 60 s.)
        start = len(view.seen)
        board.set({"level_cm": "8"})  # 80 mm: above the new 50 mm warning, far below the default 150 mm
        raised = view.wait_for("event", lambda m: m.alarm == "flood_warn" and m.state == 1, timeout=30, after=start)
        assert raised.threshold == 50

        # offline: a ping times out in one line; a config sent meanwhile waits retained on the broker
        board.power_cut()
        lost = run("ping", DEVICE, "--timeout", 3)
        assert lost.code == 3 and lost.stdout == ""
        assert lost.stderr.startswith("fleet: no answer from %s within 3 s: it may be offline or asleep" % DEVICE)
        assert len(lost.stderr.splitlines()) == 1
        queued = run("config", DEVICE, "--set", "alarm.flood.raise=300", "--set", "alarm.flood.clear=260",
                     "--no-wait")
        assert queued.code == 0, queued.stderr
        assert json.loads(run("device", "show", DEVICE, "--json").stdout)["config_state"]["state"] == "pending"
        board.power_on()
        view.wait_for("state", lambda m: m.online and m.boot not in (birth.boot, result["new_boot"]), timeout=60)
        later = run("ping", DEVICE, "--json", "--timeout", 30)
        assert later.code == 0, later.stderr
        assert json.loads(later.stdout)["config"] == version + 2  # taken from the retained copy on connect
    finally:
        view.close()


def test_a_device_that_is_not_connected_gives_a_one_line_timeout(site):
    home, _port, run = site
    open_registry(home).add({"id": "mh-away", "kind": "manhole-tilt", "site": "Mill St", "state": "active"})
    for args in (("ping", "mh-away", "--timeout", 1), ("reboot", "mh-away", "--timeout", 1),
                 ("config", "mh-away", "--set", "heartbeat=600", "--timeout", 1)):
        result = run(*args)
        assert (result.code, result.stdout) == (3, ""), result
        assert result.stderr.startswith("fleet: no answer from mh-away within 1 s: it may be offline or asleep; ")
        assert len(result.stderr.splitlines()) == 1
    assert "applies when it next connects" in result.stderr  # the config stays retained for it
    record = open_registry(home).get("mh-away")
    assert record["config"]["version"] == 1 and [h["action"] for h in record["history"]][-1] == "config sent"
    unreachable = run("ping", "mh-away", "--broker", "mqtt://127.0.0.1:%d" % free_port())
    assert unreachable.code == 3 and unreachable.stderr.startswith("fleet: cannot reach the broker at mqtt://127.0.0.1:")
