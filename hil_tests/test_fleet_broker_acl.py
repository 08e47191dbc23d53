"""A real Mosquitto on the fleet's generated mosquitto.conf, passwd and acl enforces per-device access:
a device publishes only as itself and reads only its own commands, a wrong secret is refused, and
`fleet device retire` + SIGHUP shuts the retired device out while the others stay connected."""

from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import NamedTuple

import paho.mqtt.client as mqtt
import pytest

from fleet.broker import BrokerFiles, ops_secret, run_broker, write_broker_files
from fleet.credentials import device_credential
from fleet.registry import open_registry
from tests.brokerproc import free_port

pytestmark = pytest.mark.hil

DEVICES = {"wl-1": "water-level", "wl-2": "water-level", "mh-3": "manhole-tilt"}


class Fleet(NamedTuple):
    home: Path
    files: BrokerFiles
    secrets: dict[str, str]


@pytest.fixture
def fleet(tmp_path):
    """Registered devices (through the registry API), the generated files, mosquitto running them."""
    home = tmp_path / "home"
    registry = open_registry(home)
    secrets = {}
    for device_id, kind in DEVICES.items():
        secrets[device_id], credential = device_credential(device_id)
        registry.add({"id": device_id, "kind": kind, "site": "Test St", "credential": credential,
                      "state": "active"})
    files = write_broker_files(registry, home=home, port=free_port())
    proc = run_broker(files.folder)
    yield Fleet(home, files, secrets)
    proc.kill()
    proc.wait(timeout=10)


class Peer:
    """One MQTT client with paho's loop thread; what happens to it arrives in `events`, awaited with
    deadlines: ("connect", reason), ("disconnect", reason), ("suback", [reasons]), ("message", topic, payload)."""

    def __init__(self, port: int, user: str, password: str, name: str) -> None:
        self.name = name
        self.events: queue.Queue = queue.Queue()
        self.seen: list[tuple] = []
        # No automatic reconnect: a dropped or refused client stays down; the tests probe explicitly.
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, reconnect_on_failure=False)
        self.client.username_pw_set(user, password)
        self.client.on_connect = lambda c, u, flags, reason, props: self.events.put(("connect", reason))
        self.client.on_disconnect = lambda c, u, flags, reason, props: self.events.put(("disconnect", reason))
        self.client.on_subscribe = lambda c, u, mid, reasons, props: self.events.put(("suback", reasons))
        self.client.on_message = lambda c, u, m: self.events.put(("message", m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def expect(self, kind: str, predicate=lambda event: True, timeout: float = 10.0) -> tuple:
        """The next event of `kind` matching `predicate`; every event passes through `seen`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%s: no %s within %.0f s; seen %r" % (self.name, kind, timeout, self.seen))
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(event)
            if event[0] == kind and predicate(event):
                return event

    def connected(self) -> Peer:
        """Wait for a successful CONNACK."""
        reason = self.expect("connect")[1]
        assert not reason.is_failure, "%s refused: %s" % (self.name, reason)
        return self

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, 1)
        self.expect("suback")

    def messages(self, topic_prefix: str) -> list[tuple]:
        return [e for e in self.seen if e[0] == "message" and e[1].startswith(topic_prefix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peers():
    made: list[Peer] = []

    def make(fleet: Fleet, user: str, password: str | None = None, name: str | None = None) -> Peer:
        secret = password if password is not None else (ops_secret(fleet.home) if user == "fleet-ops"
                                                        else fleet.secrets[user])
        peer = Peer(fleet.files.port, user, secret, name or user)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.close()


def test_a_device_publishes_only_as_itself(fleet, peers):
    ops = peers(fleet, "fleet-ops").connected()
    ops.subscribe("dt/city/#")
    wl1 = peers(fleet, "wl-1").connected()
    wl2 = peers(fleet, "wl-2").connected()
    wl2.subscribe("cmd/city/wl-2/#")
    # Forged first, genuine second on the same connection: the broker keeps their order, so once the
    # genuine one arrived the forged ones would have too.
    wl1.client.publish("dt/city/wl-2/telemetry", b"forged", 1)
    wl1.client.publish("cmd/city/wl-2/reboot", b"forged", 1)
    wl1.client.publish("dt/city/wl-1/telemetry", b"genuine", 1)
    ops.expect("message", lambda e: e[1] == "dt/city/wl-1/telemetry" and e[2] == b"genuine")
    assert ops.messages("dt/city/wl-2/") == []
    wl2.client.publish("dt/city/wl-2/telemetry", b"own", 1)  # wl-2 is live: its own message arrives
    ops.expect("message", lambda e: e[1] == "dt/city/wl-2/telemetry" and e[2] == b"own")
    assert [e[2] for e in ops.messages("dt/city/wl-2/")] == [b"own"]
    assert wl2.messages("cmd/") == []


def test_a_device_reads_only_its_own_commands(fleet, peers):
    ops = peers(fleet, "fleet-ops").connected()
    wl1 = peers(fleet, "wl-1").connected()
    for topic in ("cmd/city/wl-1/#", "cmd/city/wl-2/#", "cmd/city/#", "#"):
        wl1.subscribe(topic)  # Mosquitto 2.0 grants these; it checks read access per delivered message
    ops.client.publish("cmd/city/wl-2/config", b"for wl-2", 1)
    ops.client.publish("dt/city/wl-2/state", b"ops may not write dt", 1)
    ops.client.publish("cmd/city/wl-1/ping", b"for wl-1", 1)
    wl1.expect("message", lambda e: e[1] == "cmd/city/wl-1/ping")
    assert [(e[1], e[2]) for e in wl1.seen if e[0] == "message"] == [("cmd/city/wl-1/ping", b"for wl-1")]


def test_a_wrong_secret_or_another_devices_secret_is_refused(fleet, peers):
    for user, password in (("wl-1", "not-the-secret"), ("wl-1", fleet.secrets["wl-2"]),
                           ("fleet-ops", fleet.secrets["wl-1"]), ("ghost", "x")):
        peer = peers(fleet, user, password, name="try-" + user)
        reason = peer.expect("connect")[1]
        assert reason.is_failure and "authorized" in str(reason), reason


def test_a_retired_device_is_shut_out_and_the_others_stay_connected(fleet, peers, fleet_cli):
    ops = peers(fleet, "fleet-ops").connected()
    ops.subscribe("dt/city/#")
    wl1 = peers(fleet, "wl-1").connected()
    mh3 = peers(fleet, "mh-3").connected()
    mh3.subscribe("cmd/city/mh-3/#")

    result = fleet_cli("device", "retire", "wl-1", "--yes", env={"FLEET_HOME": str(fleet.home)})
    assert result.code == 0, result.stderr
    assert "broker reloaded" in result.stdout

    # Mosquitto 2 re-checks connected clients on reload: the retired one is dropped...
    wl1.expect("disconnect")
    # ...and can no longer come back; poll with a deadline since SIGHUP is handled asynchronously.
    deadline = time.monotonic() + 10
    while True:
        probe = peers(fleet, "wl-1", name="wl-1-again-%d" % len(ops.seen))
        reason = probe.expect("connect")[1]
        probe.close()
        if reason.is_failure:
            break
        assert time.monotonic() < deadline, "wl-1 still connects after retire + reload"

    # The other device kept its connection through the SIGHUP: no disconnect, and it still works both ways.
    mh3.client.publish("dt/city/mh-3/telemetry", b"still here", 1)
    ops.expect("message", lambda e: e[1] == "dt/city/mh-3/telemetry" and e[2] == b"still here")
    ops.client.publish("cmd/city/mh-3/ping", b"ping", 1)
    mh3.expect("message", lambda e: e[1] == "cmd/city/mh-3/ping")
    assert [e for e in mh3.seen + ops.seen if e[0] == "disconnect"] == []
    assert [e[0] for e in mh3.seen].count("connect") == 1
