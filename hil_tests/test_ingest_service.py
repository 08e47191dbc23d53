"""`fleet ingest` as the operations centre runs it: a private Mosquitto with the fleet's password file and
ACL (fleet.broker.acl_text), devices publishing real encoded messages under their own credentials (paho),
the ingest in a subprocess writing a SQLite store that the test reads like any other reader.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from fleet.broker import acl_text, ops_secret
from fleet.credentials import OPS_USER
from fleet.home import private_dir
from fleet.store import open_store
from protocols import up, up_status
from tests.brokerproc import Broker, free_port

pytestmark = pytest.mark.hil

FLEET = "city"  # the default fleet name of a fresh FLEET_HOME
DEVICES = ("wl1", "wl2", "wl3", "bad1")
T0 = 1_800_000_000  # device clock (absolute SenML times)


@dataclass
class Fleet:
    home: Path
    broker: Broker
    store_url: str

    @property
    def broker_url(self) -> str:
        return "mqtt://127.0.0.1:%d" % self.broker.port

    def read(self, query: Callable[[Any], Any]) -> Any:
        """`query(store)` on a fresh reader of the ingest's store."""
        with open_store(self.store_url) as store:
            return query(store)


@pytest.fixture
def fleet(tmp_path, broker_factory) -> Fleet:
    home = private_dir(tmp_path / "home")
    users = {OPS_USER: ops_secret(home), **{"u-" + d: "pw-" + d for d in DEVICES}}
    broker = broker_factory(users=users, acl=acl_text(FLEET, [(d, "u-" + d) for d in DEVICES]))
    return Fleet(home, broker, "sqlite:///%s" % (tmp_path / "fleet.db"))


class Ingest:
    """`fleet ingest` in a subprocess; its stderr lines collected by a thread."""

    def __init__(self, fleet: Fleet) -> None:
        command = [str(Path(sys.executable).with_name("fleet")), "ingest", "--broker", fleet.broker_url,
                   "--store", fleet.store_url]
        self.proc = subprocess.Popen(command, env=dict(os.environ, FLEET_HOME=str(fleet.home)),
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            self._new.put(line)

    def expect(self, text: str, timeout: float = 15.0) -> str:
        """The next stderr line containing `text`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                break
            if text in line:
                return line
        raise AssertionError("no line with %r from fleet ingest within %.0f s; it said:\n%s"
                             % (text, timeout, "\n".join(self.lines[-30:])))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)


@pytest.fixture
def ingests():
    started: list[Ingest] = []
    yield started
    for ingest in started:
        ingest.stop(signal.SIGKILL)


def start_ingest(fleet: Fleet, started: list[Ingest], ready: str = "subscribed to") -> Ingest:
    ingest = Ingest(fleet)
    started.append(ingest)
    ingest.expect(ready)
    return ingest


class Device:
    """A device's MQTT session under its own credential, publishing QoS 1 like the agent."""

    def __init__(self, fleet: Fleet, device: str) -> None:
        self.device = device
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="node-" + device)
        self.client.username_pw_set("u-" + device, "pw-" + device)
        self.client.max_inflight_messages_set(50)
        self.client.max_queued_messages_set(0)
        self.acked = 0
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", fleet.broker.port)
        self.client.loop_start()

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        self.acked += 1

    def send(self, kind: str, payload: bytes, retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self.client.publish("dt/%s/%s/%s" % (FLEET, self.device, kind), payload, qos=1, retain=retain)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def level(seq: int, value: int, at: int, boot: int = 1) -> bytes:
    return up.telemetry(boot, seq, [{0: "level", 2: value, 6: at}])


def wait_until(check: Callable[[], Any], what: str, ingest: Ingest, timeout: float = 20.0) -> Any:
    """Poll `check` until it returns something true; AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("%s: not within %.0f s (last: %r); ingest said:\n%s"
                                 % (what, timeout, result, "\n".join(ingest.lines[-30:])))
        time.sleep(0.05)


def test_every_message_stored_once_duplicates_dropped_fleet_alarms_raised(fleet, ingests):
    ingest = start_ingest(fleet, ingests)
    wl1 = Device(fleet, "wl1")
    try:
        wl1.send("state", up_status.state(1, 0, True, "1.4.2", 0, 1, "water"), retain=True).wait_for_publish(5)
        packs = [level(seq, 100 if seq < 5 else 300, T0 + 10 * seq) for seq in range(1, 21)]
        for payload in packs:
            wl1.send("telemetry", payload)
        event = up.event(1, 21, "flood", 1, 2, 300, 270, T0 + 50)
        wl1.send("event", event)
        wl1.send("health", up_status.health(1, 22, 600, battery=3700))
        for payload in packs[:5] + [event]:  # QoS 1 resends: same boot and seq
            wl1.send("telemetry" if payload in packs else "event", payload)
        wl1.send("health", up_status.health(1, 23, 660, battery=3690)).wait_for_publish(5)
        # one device's messages are stored in order: the last health stored means all before it were handled
        wait_until(lambda: fleet.read(lambda s: (s.status("wl1") or [None])[0] and s.status("wl1")[0].health
                                      and s.status("wl1")[0].health.get("uptime") == 660),
                   "the last health of wl1 stored", ingest)
    finally:
        wl1.close()
    readings = fleet.read(lambda s: s.readings("wl1"))
    assert [(r.seq, r.time, r.value, r.unit) for r in readings] == \
        [(seq, T0 + 10.0 * seq, 100 if seq < 5 else 300, "mm") for seq in range(1, 21)]
    status = fleet.read(lambda s: s.status("wl1"))[0]
    assert (status.online, status.boot, status.firmware, status.sensor) == (True, 1, "1.4.2", "water")
    assert fleet.read(lambda s: s.gaps("wl1")) == []
    alarms = fleet.read(lambda s: s.alarms(device="wl1"))
    assert sorted((a.alarm, a.source, a.level) for a in alarms) == \
        [("flood", "device", 2), ("flood", "fleet", 2), ("flood_warn", "fleet", 1)]
    fleet_flood = next(a for a in alarms if a.source == "fleet" and a.alarm == "flood")
    assert (fleet_flood.raised_at, fleet_flood.threshold) == (T0 + 50, 270)  # the run began at seq 5
    assert ingest.stop() == 0
    assert "duplicates 6" in ingest.expect("totals:", timeout=1)


def test_garbage_is_quarantined_while_other_devices_flow(fleet, ingests):
    ingest = start_ingest(fleet, ingests)
    bad, good = Device(fleet, "bad1"), Device(fleet, "wl2")
    garbage = [("telemetry", b"\xff\x00not cbor"), ("telemetry", b"\x00" * 2000), ("bogus", up_status.health(1, 1, 5)),
               ("event", level(2, 5, T0)), ("health", bytes.fromhex("a3000101010202"))]
    try:
        for seq in range(1, 51):
            good.send("telemetry", level(seq, seq, T0 + seq))
            if seq % 10 == 0:
                bad.send(*garbage[seq // 10 - 1])
        wait_until(lambda: fleet.read(lambda s: len(s.readings("wl2")) == 50 and s.quarantine_count() == 5),
                   "50 readings of wl2 and 5 quarantined", ingest)
    finally:
        bad.close()
        good.close()
    entries = fleet.read(lambda s: s.quarantine())
    assert sorted((topic, reason) for _id, _at, topic, reason, _detail, _size in entries) == [
        ("dt/city/bad1/bogus", "bad_type"), ("dt/city/bad1/event", "bad_message"),
        ("dt/city/bad1/health", "missing_field"), ("dt/city/bad1/telemetry", "bad_cbor"),
        ("dt/city/bad1/telemetry", "too_large")]
    assert max(size for *_rest, size in entries) == 2000
    assert fleet.read(lambda s: [st.device for st in s.status()]) == ["wl2"]
    assert ingest.proc.poll() is None
    ingest.expect("quarantined dt/city/bad1/bogus")


def test_sigkill_mid_stream_loses_nothing_sent_with_qos1(fleet, ingests):
    total = 3000
    ingest = start_ingest(fleet, ingests)
    wl3 = Device(fleet, "wl3")
    sent = threading.Event()

    def publish() -> None:  # about 3000 messages/s: the kill lands in the middle of the stream
        for seq in range(1, total + 1):
            wl3.send("telemetry", level(seq, seq % 97, T0 + seq))
            if seq % 100 == 0:
                time.sleep(0.03)
        sent.set()

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        wait_until(lambda: fleet.read(lambda s: len(s.readings("wl3"))) >= 300, "first readings", ingest)
        ingest.stop(signal.SIGKILL)
        assert not sent.is_set(), "the stream ended before the kill: nothing tested"
        stored_at_kill = fleet.read(lambda s: len(s.readings("wl3")))
        ingest = start_ingest(fleet, ingests, ready="session resumed")
        publisher.join(timeout=30)
        wait_until(lambda: wl3.acked == total, "the broker acknowledged every publish", ingest)
        wait_until(lambda: fleet.read(lambda s: len(s.readings("wl3"))) >= total, "every reading stored", ingest,
                   timeout=30)
    finally:
        wl3.close()
    readings = fleet.read(lambda s: s.readings("wl3"))
    assert stored_at_kill < total
    assert [r.seq for r in readings] == list(range(1, total + 1))
    assert fleet.read(lambda s: s.gaps("wl3")) == []
    assert ingest.stop() == 0


def test_sigterm_mid_stream_acknowledges_what_it_stored_and_loses_nothing(fleet, ingests):
    total = 3000
    ingest = start_ingest(fleet, ingests)
    wl3 = Device(fleet, "wl3")
    sent = threading.Event()

    def publish() -> None:
        for seq in range(1, total + 1):
            wl3.send("telemetry", level(seq, seq % 97, T0 + seq))
            if seq % 100 == 0:
                time.sleep(0.03)
        sent.set()

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        wait_until(lambda: fleet.read(lambda s: len(s.readings("wl3"))) >= 300, "first readings", ingest)
        assert ingest.stop(signal.SIGTERM) == 0
        assert not sent.is_set(), "the stream ended before the stop: nothing tested"
        stored = int(ingest.expect("totals:", timeout=1).split("stored ")[1].split(",")[0])
        assert fleet.read(lambda s: len(s.readings("wl3"))) == stored
        ingest = start_ingest(fleet, ingests, ready="session resumed")
        publisher.join(timeout=30)
        wait_until(lambda: fleet.read(lambda s: len(s.readings("wl3"))) >= total, "every reading stored", ingest,
                   timeout=30)
    finally:
        wl3.close()
    assert [r.seq for r in fleet.read(lambda s: s.readings("wl3"))] == list(range(1, total + 1))
    assert ingest.stop() == 0
    # what was stored before the stop was acknowledged before it (the stop waits for the PUBACKs to go out,
    # up to a few seconds): at most a handful come back as duplicates on a loaded machine, not a batch
    duplicates = int(ingest.expect("totals:", timeout=1).split("duplicates ")[1].split(",")[0])
    assert duplicates < 100


def test_reconnects_and_subscribes_again_after_a_broker_restart(fleet, ingests):
    ingest = start_ingest(fleet, ingests)
    fleet.broker.stop()  # SIGKILL, persistence off: the broker forgets our session
    ingest.expect("lost the broker")
    fleet.broker.start()
    ingest.expect("new session")
    ingest.expect("subscribed to")
    wl1 = Device(fleet, "wl1")
    try:
        wl1.send("telemetry", level(1, 42, T0)).wait_for_publish(5)
        wait_until(lambda: fleet.read(lambda s: [r.value for r in s.readings("wl1")]) == [42], "reading stored",
                   ingest)
    finally:
        wl1.close()
    assert ingest.stop(signal.SIGINT) == 0


def test_user_errors_are_one_line(fleet, fleet_cli, tmp_path):
    env = {"FLEET_HOME": str(fleet.home)}
    store = "--store", fleet.store_url
    cases = [
        (("--broker", "http://127.0.0.1:1"), "bad broker URL"),
        (("--broker", "mqtt://127.0.0.1:%d" % free_port()), "cannot reach the broker"),
        (("--broker", fleet.broker_url, "--store", "mysql://x"), "bad store URL"),
    ]
    for args, text in cases:
        code, _out, err = fleet_cli("ingest", *store[:0 if "--store" in args else 2], *args, env=env, timeout=30)
        assert (code, err.count("\n"), err.startswith("fleet: ")) == (3, 1, True), err
        assert text in err
    other = private_dir(tmp_path / "other-home")  # another fleet's secret: this broker refuses it
    ops_secret(other)
    code, _out, err = fleet_cli("ingest", "--broker", fleet.broker_url, *store, env={"FLEET_HOME": str(other)},
                                timeout=30)
    assert (code, err.count("\n")) == (3, 1), err
    assert err.startswith("fleet: the broker at %s refused the account fleet-ops" % fleet.broker_url)
