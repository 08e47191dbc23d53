"""`fleet provision` and `fleet sync` on emulated boards against a real Mosquitto that runs the fleet's
generated configuration (`fleet broker config`, `fleet.broker.run_broker`), typed as a technician types
them: a blank board of each kind to PASS, the broker down (pending, then `fleet sync`), and the refusals
that must leave board and registry as they were.

Boards run at 921600 baud to keep the suite quick, except the water-level one, provisioned as typed in
the field (115200, no --baud). The agent runs in the emulator's default heap, 110 KB, the free heap of
an ESP32 without PSRAM.
"""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from fleet.board_session import BoardSession
from fleet.broker import ops_secret, run_broker
from fleet.credentials import device_credential, verify_secret
from fleet.registry import open_registry
from protocols import messages, topics
from tests.brokerproc import free_port

pytestmark = pytest.mark.hil

FAST = 921600
AGENT_HEAP = None  # the emulator's default, 110 KB
SITE = "Harbour Rd 12"
#: kind -> (baud, the calibration keys the agent's make_sensor() takes back)
KINDS = {
    "manhole-tilt": (FAST, {"base_x", "base_y", "base_z"}),
    "water-level": (None, {"mount_mm"}),  # None: the CLI's default, 115200, as typed in the field
    "wind-load": (FAST, {"tare", "scale", "wind_factor"}),
}


class FleetSite:
    """A fleet home with its broker configured on a free port; `start()` runs Mosquitto on it."""

    def __init__(self, home: Path, fleet_cli) -> None:
        self.home = home
        self.cli = fleet_cli
        self.port = free_port()
        self.proc = None
        configured = self.run("broker", "config", "--port", self.port)
        assert configured.code == 0, configured.stderr

    def run(self, *args, **kw):
        return self.cli(*[str(a) for a in args], env={"FLEET_HOME": str(self.home)}, **kw)

    def start(self) -> None:
        self.proc = run_broker(self.home / "broker")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self) -> str:
        """The end of the broker's log, for failure messages."""
        path = self.home / "broker" / "mosquitto.log"
        return "\n--- mosquitto.log ---\n" + "\n".join(path.read_text().splitlines()[-30:]) if path.exists() else ""

    def record(self, device_id: str) -> dict:
        return open_registry(self.home).get(device_id)

    def retained_state(self, device_id: str, timeout: float = 10.0):
        """The device's retained state on the broker, read as fleet-ops (decoded), or None."""
        inbox: queue.Queue = queue.Queue()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.username_pw_set("fleet-ops", ops_secret(self.home))
        client.on_message = lambda c, u, m: inbox.put(m)
        client.connect("127.0.0.1", self.port)
        client.subscribe("dt/city/%s/state" % device_id, 1)
        client.loop_start()
        try:
            message = inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        finally:
            client.disconnect()
            client.loop_stop()
        assert message.retain
        return messages.decode(topics.parse(message.topic), message.payload)


@pytest.fixture
def site(tmp_path, fleet_cli):
    made = FleetSite(tmp_path / "home", fleet_cli)
    yield made
    made.stop()


def board_identity(board) -> tuple[dict, dict[str, str]]:
    """The board's /device.json and the hashes of all its files (the agent is stopped, then restarted)."""
    with BoardSession.open(board.port, board.config.baud) as session:
        identity = json.loads(session.read_file("/device.json"))
        files = session.file_hashes("/")
        session.soft_reset()
    return identity, files


def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    """Poll `condition()` until true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("%s: not within %.0f s" % (what, timeout))
        time.sleep(0.05)


def agent_up(board, hard_resets: int) -> None:
    """Wait until the board has had `hard_resets` hard resets and its agent, started after the last
    restart, has tried the (stopped) broker: only then is it a board in the field, running its agent."""
    refused = board.status()["hardware"]["net"]["refused"]
    wait_until(lambda: board.status()["reset_causes"].get("hard", 0) == hard_resets, "hard reset %d" % hard_resets)
    wait_until(lambda: board.status()["hardware"]["net"]["refused"] > refused, "the agent trying the broker")


def board_files(board) -> dict[str, str]:
    with BoardSession.open(board.port, board.config.baud) as session:
        files = session.file_hashes("/")
        session.soft_reset()
    return files


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_blank_board_of_each_kind_provisions_to_pass(kind, site, board_factory):
    baud, cal_keys = KINDS[kind]
    site.start()
    board = board_factory(kind, baud=baud, heap=AGENT_HEAP)
    typed = ["provision", "--port", board.port, "--kind", kind, "--site", SITE, "--lat", "53.54", "--lon", "9.98"]
    started = time.monotonic()
    result = site.run(*typed, *(["--baud", baud] if baud else []))
    seconds = time.monotonic() - started
    assert result.code == 0, result.stdout + result.stderr + site.log()
    print("provision %s at %d baud, blank board to PASS: %.1f s" % (kind, baud or 115200, seconds))
    device_id = {"manhole-tilt": "mh-", "water-level": "wl-", "wind-load": "wd-"}[kind] + board.uid[-6:]
    lines = result.stdout.splitlines()
    for name in ("board", "agent", "calibration", "sensor", "registry", "identity", "broker", "restart", "birth",
                 "telemetry"):
        assert any(line.split()[:2] == ["PASS", name] for line in lines), result.stdout
    assert "FAIL" not in result.stdout and lines[-1].startswith("PASS: %s is active" % device_id)

    record = site.record(device_id)
    assert (record["state"], record["kind"], record["site"], record["uid"]) == ("active", kind, SITE, board.uid)
    assert (record["lat"], record["lon"], record["board"]) == (53.54, 9.98, "emulator")
    assert set(record["calibration"]) == cal_keys
    assert [e["action"] for e in record["history"]] == ["registered", "provisioning", "identity written",
                                                        "selftest passed"]
    identity, _ = board_identity(board)
    assert identity["calibration"] == record["calibration"]
    assert {k: identity[k] for k in ("fleet", "id", "kind", "user", "broker")} == {
        "fleet": "city", "id": device_id, "kind": kind, "user": device_id,
        "broker": {"host": "127.0.0.1", "port": site.port, "tls": False}}
    # The secret is on the board only: the broker's passwd holds its hash, nothing the fleet prints holds it.
    secret = identity["password"]
    passwd = dict(line.split(":", 1) for line in (site.home / "broker" / "passwd").read_text().splitlines())
    assert verify_secret(secret, passwd[device_id])
    assert secret not in result.stdout + result.stderr
    assert secret not in (site.home / "registry.json").read_text()
    shown = site.run("device", "show", device_id, "--json")
    assert shown.code == 0 and secret not in shown.stdout
    if kind == "water-level":  # the emulator's pole: 250 cm over a dry street
        assert record["calibration"]["mount_mm"] == pytest.approx(2500, abs=20)
    # What the self-test saw is on the broker for anyone of the fleet: the device's retained birth.
    birth = site.retained_state(device_id)
    assert birth is not None and birth.online and birth.firmware == record["firmware"]


def test_broker_down_ends_pending_a_rerun_takes_over_and_fleet_sync_completes_it(site, board_factory):
    board = board_factory("manhole-tilt", baud=FAST, heap=AGENT_HEAP)
    typed = ["provision", "--port", board.port, "--baud", FAST, "--kind", "manhole-tilt", "--site", SITE,
             "--id", "mh-pending"]
    result = site.run(*typed)
    assert result.code == 0, result.stdout + result.stderr
    assert "end-to-end check pending: run `fleet sync` when the broker is reachable" in " ".join(result.stdout.split())
    record = site.record("mh-pending")
    assert record["state"] == "pending-selftest" and record["history"][-1]["action"] == "selftest pending"
    agent_up(board, hard_resets=1)  # provisioning restarted the board into its agent
    first_secret = board_identity(board)[0]["password"]
    agent_up(board, hard_resets=1)
    # The same command again on the same board (the technician was unsure): it takes the record over.
    rerun = site.run(*typed)
    assert rerun.code == 0 and "PASS  registry    mh-pending taken over" in rerun.stdout, rerun.stdout + rerun.stderr
    assert "reprovisioning" in [e["action"] for e in site.record("mh-pending")["history"]]
    agent_up(board, hard_resets=2)
    secret = board_identity(board)[0]["password"]
    assert secret != first_secret  # a new credential: the old one is in no passwd any more
    passwd = (site.home / "broker" / "passwd").read_text()
    entry = dict(line.split(":", 1) for line in passwd.splitlines())["mh-pending"]
    assert verify_secret(secret, entry) and not verify_secret(first_secret, entry)
    # Nothing to sync against while the broker is still down: one line, and the device stays pending.
    down = site.run("sync", "--timeout", 5)
    assert down.code == 3 and down.stderr.startswith("fleet: cannot reach the broker at mqtt://127.0.0.1:%d"
                                                     % site.port)
    assert site.record("mh-pending")["state"] == "pending-selftest"
    site.start()
    synced = site.run("sync", "--timeout", 60)
    assert synced.code == 0, synced.stdout + synced.stderr + site.log()
    assert "PASS  mh-pending: active" in synced.stdout
    assert site.record("mh-pending")["state"] == "active"
    again = site.run("sync")
    assert again.code == 0 and "no device is waiting for its end-to-end check" in again.stdout


def test_a_sensor_that_cannot_calibrate_is_a_fail_and_nothing_is_registered(site, board_factory):
    site.start()
    board = board_factory("manhole-tilt", baud=FAST, heap=AGENT_HEAP)
    board.set(lis3dh="missing")
    result = site.run("provision", "--port", board.port, "--baud", FAST, "--kind", "manhole-tilt", "--site", SITE)
    assert result.code == 1, result.stdout + result.stderr
    assert [line.split()[:2] for line in result.stdout.splitlines()[1:]][:4] == [
        ["PASS", "board"], ["PASS", "agent"], ["FAIL", "calibration"], ["→", "check"]]
    assert "lis3dh" in result.stdout and "nothing was registered" in result.stdout
    assert result.stderr.splitlines()[-1].startswith("fleet: FAIL: calibration: ")
    assert [line for line in result.stderr.splitlines() if line.startswith("fleet:")] == result.stderr.splitlines()[-1:]
    assert open_registry(site.home).all() == []


def test_a_duplicate_id_is_refused_before_the_board_is_touched(site, board_factory):
    other_board = "240ac4000001"
    _, credential = device_credential("wl-taken")
    open_registry(site.home).add({"id": "wl-taken", "kind": "water-level", "site": "Quay 3", "uid": other_board,
                                  "credential": credential, "state": "active"})
    registry_before = (site.home / "registry.json").read_bytes()
    board = board_factory("water-level", baud=FAST, heap=AGENT_HEAP)
    before = board_files(board)
    result = site.run("provision", "--port", board.port, "--baud", FAST, "--kind", "water-level", "--site", SITE,
                      "--id", "wl-taken")
    assert result.code == 3 and len(result.stderr.splitlines()) == 1
    assert result.stderr == ("fleet: device id 'wl-taken' is already in the registry (water-level at Quay 3, "
                             "active); choose another --id; the board and the registry are unchanged\n")
    assert board_files(board) == before
    assert (site.home / "registry.json").read_bytes() == registry_before


def test_an_unknown_kind_or_a_wrong_port_changes_nothing(site, tmp_path):
    unknown = site.run("provision", "--port", tmp_path / "ttyUSB7", "--kind", "rain-gauge", "--site", SITE)
    assert unknown.code == 2 and "'rain-gauge' is not one of" in unknown.stderr
    missing = site.run("provision", "--port", tmp_path / "ttyUSB7", "--kind", "water-level", "--site", SITE)
    assert (missing.code, missing.stderr) == (3, "fleet: cannot open %s: no such port; check the port name and "
                                                 "the cable\n" % (tmp_path / "ttyUSB7"))
    assert not (site.home / "registry.json").exists()

