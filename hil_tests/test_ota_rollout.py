"""OTA campaigns end to end: `fleet ota rollout|status|pause|resume|abort` against a real Mosquitto with the
fleet's passwd/ACL, and simulated devices that speak SPEC.md "OTA" as the agent does: they take the
retained offer, pull the envelope and the files they lack in windows of 8 chunks, check the envelope's
SHA-256 and Ed25519 signature (`cryptography`), inflate each file as it comes and check its SHA-256,
report progress with protocols.up_status, and resume a cut download from their last good offset.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware.build import build_bundle
from fleet.broker import acl_text, ops_secret
from fleet.credentials import OPS_USER
from fleet.ota.keys import keygen, load_public_key
from fleet.ota.release import make_release
from fleet.registry import open_registry
from protocols import manifest as mf
from protocols import up_status
from protocols.messages import decode_down
from protocols.ota import CHUNK, WINDOW

FLEET = "city"
PROBE = "probe"
VERSION = "2.0.0"
WAIT = 20.0  # seconds any one condition may take before the test fails
FLEET_CMD = str(Path(sys.executable).with_name("fleet"))
# reports (protocols.ota)
DOWNLOADING, VERIFYING, STAGED, DONE, FAILED, ROLLED_BACK = 1, 2, 3, 4, 5, 6


class Failed(Exception):
    """The update failed on the device with a reason code."""


def wait_for(condition, what: str, timeout: float = WAIT):
    """Poll `condition()` until it is truthy (returned) or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("not within %g s: %s" % (timeout, what))
        time.sleep(0.02)


class SimDevice:
    """One device on the broker, as its own MQTT user, with the agent's side of the OTA protocol.

    `files`: path -> sha256 of what its running slot holds (only differing files are pulled);
    `behaviour`: "ok", "rollback" (installs, then the trial crashes: rolled back, CRASHED);
    `trusted`: the release key it trusts (another key: UNTRUSTED_KEY); `cut_file`: a file index whose
    download loses the connection once after 3 chunks; `hold`: an Event awaited before confirming;
    `gate`: an Event awaited after the offer, before the first pull (a slow device)."""

    def __init__(self, port: int, name: str, trusted: bytes, files: dict[str, bytes], behaviour: str = "ok",
                 firmware: str = "1.0.0", seq: int = 0, cut_file: int | None = None,
                 hold: threading.Event | None = None, gate: threading.Event | None = None) -> None:
        self.port, self.name, self.trusted, self.files = port, name, trusted, dict(files)
        self.behaviour, self.firmware, self.running_seq = behaviour, firmware, seq
        self.cut_file, self.hold, self.gate = cut_file, hold, gate
        self.boot, self.seq = 1, 0
        self.offers: list = []  # every offer (and cancel) it received
        self.pulls: list[tuple[int, int, int, int]] = []  # (cid, index, offset, count)
        self.reports: list[tuple[int, str | None]] = []
        self.received = 0  # chunk data bytes taken
        self.cut_at: int | None = None  # offset where the connection was cut
        self.started = self.finished = 0.0
        self.outcome = threading.Event()
        self.inbox: queue.Queue = queue.Queue()
        self.client: mqtt.Client | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-" + name, daemon=True)

    # ---- the link ----
    def start(self) -> SimDevice:
        self._connect()
        self._thread.start()
        return self

    def _connect(self) -> None:
        ready = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.name)
        client.username_pw_set(self.name, "pw-" + self.name)

        def on_connect(c, u, flags, reason, props):
            assert not reason.is_failure, reason
            # as the agent does: a pull goes out at once, not after the broker's delayed ACK (Nagle)
            c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.subscribe("cmd/%s/%s/+" % (FLEET, self.name), 1)

        client.on_connect = on_connect
        client.on_subscribe = lambda c, u, mid, reasons, props: ready.set()
        client.on_message = lambda c, u, m: self.inbox.put((m.topic.rsplit("/", 1)[1], bytes(m.payload)))
        client.connect("127.0.0.1", self.port, keepalive=30)
        client.loop_start()
        assert ready.wait(WAIT), "%s could not subscribe" % self.name
        self.client = client
        self._publish("state", up_status.state(self.boot, self._next(), True, self.firmware, 1, 1, "water"),
                      retain=True)

    def _cut(self) -> None:
        """The cellular link drops: the session and whatever was in flight to the device are gone."""
        self.client.disconnect()
        self.client.loop_stop()
        while not self.inbox.empty():
            self.inbox.get_nowait()
        self._connect()

    def stop(self) -> None:
        self._stop.set()
        for event in (self.hold, self.gate):
            if event is not None:
                event.set()
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _publish(self, kind: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish("dt/%s/%s/%s" % (FLEET, self.name, kind), payload, qos=1, retain=retain)

    def _report(self, cid: int, state: int, percent: int | None = None, reason: str | None = None) -> None:
        self.reports.append((state, reason))
        self._publish("ota", up_status.ota_progress(self.boot, self._next(), cid, state, percent, reason, VERSION))

    # ---- the update ----
    def _run(self) -> None:
        done: set[int] = set()
        while not self._stop.is_set():
            try:
                kind, payload = self.inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if kind != "ota" or not payload:
                continue  # a stale chunk, or a cleared offer
            offer = decode_down("ota", payload)
            self.offers.append(offer)
            if offer.cancel or offer.cid in done:
                continue
            done.add(offer.cid)
            self._update(offer)
            self.outcome.set()

    def _update(self, offer) -> None:
        cid = offer.cid
        self.started = time.monotonic()
        try:
            if offer.release <= self.running_seq:
                raise Failed("DOWNGRADE")
            self._report(cid, DOWNLOADING, 0)
            if self.gate is not None:
                assert self.gate.wait(WAIT), "%s was never let go" % self.name
            envelope = self._fetch(cid, 0, offer.size)
            if hashlib.sha256(envelope).digest() != offer.sha256:
                raise Failed("TRANSFER_FAILED")
            self._report(cid, VERIFYING)
            manifest_bytes, kid, signature = mf.read_signed(envelope)
            if mf.key_id(self.trusted) != kid:
                raise Failed("UNTRUSTED_KEY")
            try:
                Ed25519PublicKey.from_public_bytes(self.trusted).verify(signature, manifest_bytes)
            except InvalidSignature:
                raise Failed("BAD_SIGNATURE") from None
            manifest = mf.Manifest.from_bytes(manifest_bytes)
            if manifest.seq <= self.running_seq:
                raise Failed("DOWNGRADE")
            need = [(i, entry) for i, entry in enumerate(manifest.files, 1) if self.files.get(entry[0]) != entry[2]]
            total, got = sum(entry[3] for _, entry in need) or 1, 0
            for index, (_path, size, sha256, zsize) in need:
                if self._fetch(cid, index, zsize, inflate=True) != (size, sha256):
                    raise Failed("HASH_MISMATCH")
                got += zsize
                self._report(cid, DOWNLOADING, got * 100 // total)
            self.finished = time.monotonic()
            self._report(cid, STAGED)
            self.boot += 1  # reboots into the new slot, on trial
            if self.behaviour == "rollback":
                self.boot += 1  # the agent crashes, boot.py goes back to the old slot
                self._report(cid, ROLLED_BACK, reason="CRASHED")
                return
            self.files.update({entry[0]: entry[2] for _, entry in need})
            self.firmware, self.running_seq = manifest.version, manifest.seq
            self._publish("state", up_status.state(self.boot, self._next(), True, self.firmware, 1, 1, "water"),
                          retain=True)
            if self.hold is not None:
                assert self.hold.wait(WAIT), "%s was never let go" % self.name
            self._report(cid, DONE)
        except Failed as failure:
            self._report(cid, FAILED, reason=str(failure))

    def _fetch(self, cid: int, index: int, total: int, inflate: bool = False):
        """File `index` of `cid` (`total` bytes stored), pulled window by window; the envelope's bytes, or
        (size, sha256) of a file inflated on the fly."""
        offset, tries = 0, 0
        raw, digest, size = bytearray(), hashlib.sha256(), 0
        inflater = zlib.decompressobj(10)
        while offset < total:
            self.pulls.append((cid, index, offset, WINDOW))
            self._publish("pull", up_status.pull(self.boot, self._next(), cid, index, offset, WINDOW))
            end, before = min(total, offset + WINDOW * CHUNK), offset
            deadline = time.monotonic() + 2.0
            while offset < end:
                try:
                    kind, payload = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break  # chunks lost: pull again from the last good offset
                if kind == "ota" and payload:
                    offer = decode_down("ota", payload)
                    self.offers.append(offer)
                    if offer.cancel and offer.cid == cid:
                        raise Failed("CANCELLED")
                    continue
                if kind != "chunk":
                    continue
                chunk = decode_down("chunk", payload)
                if (chunk.cid, chunk.index, chunk.offset, chunk.total) != (cid, index, offset, total):
                    continue  # a duplicate or a chunk of an earlier window
                if inflate:
                    data = inflater.decompress(chunk.data)
                    digest.update(data)
                    size += len(data)
                else:
                    raw += chunk.data
                offset += len(chunk.data)
                self.received += len(chunk.data)
                if index == self.cut_file and self.cut_at is None and offset >= 3 * CHUNK:
                    self.cut_at = offset
                    self._cut()
                    break
            tries = 0 if offset > before else tries + 1
            if tries > 5:
                raise Failed("TRANSFER_FAILED")
        return (size, digest.digest()) if inflate else bytes(raw)


# ---- fixtures --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signed_bundle(tmp_path_factory):
    """An emulator bundle of VERSION that trusts the fleet's release key: (bundle, key file, public key)."""
    folder = tmp_path_factory.mktemp("ota")
    key, pub = keygen(folder / "keys", "fleet")
    build_bundle("emulator", VERSION, folder / "bundle", [load_public_key(pub)])
    return folder / "bundle", key, load_public_key(pub)


class Fleet:
    """A fleet home with a release, its registry, a broker with the fleet's passwd/ACL, simulated devices."""

    def __init__(self, home: Path, broker, release: Path, public: bytes, names: list[str]) -> None:
        self.home, self.broker, self.release, self.public, self.names = home, broker, release, public, names
        self.env = {**os.environ, "FLEET_HOME": str(home), "FLEET_BROKER": "mqtt://127.0.0.1:%d" % broker.port}
        manifest = mf.Manifest.from_bytes(mf.read_signed((release / "release.cbor").read_bytes())[0])
        self.manifest = manifest
        self.devices: dict[str, SimDevice] = {}

    def device(self, name: str, start: bool = True, old: list[str] | None = None, **options) -> SimDevice:
        """A device running the release's files but those listed in `old` (all of them when None)."""
        files = {e[0]: e[2] for e in self.manifest.files if old is not None and e[0] not in old}
        options.setdefault("trusted", self.public)
        device = SimDevice(self.broker.port, name, files=files, **options)
        self.devices[name] = device
        return device.start() if start else device

    def fleet(self, *args, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([FLEET_CMD, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def rollout(self, *args) -> subprocess.Popen:
        return subprocess.Popen([FLEET_CMD, "ota", "rollout", "2.0.0", *args], env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def status(self, campaign: str = "c1") -> dict:
        result = self.fleet("ota", "status", campaign, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def doc(self, campaign: str = "c1") -> dict:
        try:
            return json.loads((self.home / "campaigns" / (campaign + ".json")).read_text())
        except FileNotFoundError:
            return {}

    def retained_offers(self) -> dict[str, bytes]:
        """The offers the broker holds retained (a second SUBACK marks the end of them)."""
        got: dict[str, bytes] = {}
        subacks: queue.Queue = queue.Queue()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="probe")
        client.username_pw_set(PROBE, "pw-" + PROBE)
        client.on_connect = lambda c, u, f, r, p: c.subscribe("cmd/%s/+/ota" % FLEET, 1)
        client.on_subscribe = lambda c, u, mid, reasons, props: subacks.put(mid)
        client.on_message = lambda c, u, m: got.__setitem__(m.topic.split("/")[2], bytes(m.payload)) \
            if m.retain else None
        client.connect("127.0.0.1", self.broker.port)
        client.loop_start()
        try:
            subacks.get(timeout=WAIT)
            client.subscribe("cmd/%s/nobody/ping" % FLEET, 1)
            subacks.get(timeout=WAIT)
        finally:
            client.disconnect()
            client.loop_stop()
        return got

    def stop(self) -> None:
        for device in self.devices.values():
            device.stop()


@pytest.fixture
def make_fleet(tmp_path, broker_factory, signed_bundle):
    made: list[Fleet] = []

    def make(count: int) -> Fleet:
        bundle, key, public = signed_bundle
        home = tmp_path / "home"
        home.mkdir()
        info = make_release(bundle, key, home=home)
        names = ["wl-%02d" % i for i in range(count)]
        registry = open_registry(home)
        for name in names:
            registry.add({"id": name, "kind": "water-level", "site": "harbour", "state": "active",
                          "board": "emulator"})
        users = {OPS_USER: ops_secret(home), PROBE: "pw-" + PROBE, **{name: "pw-" + name for name in names}}
        # the fleet's own ACL, and a test user that may read every offer (fleet-ops only writes them)
        acl = acl_text(FLEET, [(name, name) for name in names]) + "\nuser %s\ntopic read cmd/%s/#\n" % (PROBE, FLEET)
        # as a fleet's broker should run (coordinator: fleet/broker.py conf_text lacks it): without it each
        # pull waits for Mosquitto's Nagle/delayed-ACK round, ~44 ms per window on loopback
        broker = broker_factory(users=users, acl=acl, extra="set_tcp_nodelay true\n")
        fleet = Fleet(home, broker, home / "releases" / info["dir"], public, names)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.stop()


def finish(proc: subprocess.Popen, timeout: float = WAIT) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError("the rollout did not end within %g s:\n%s\n%s" % (timeout, out, err)) from None
    return proc.returncode, out, err


def by_device(status: dict) -> dict[str, dict]:
    return {row["device"]: row for row in status["devices"]}


# ---- the tests ---------------------------------------------------------------------------------------

def test_a_campaign_of_20_devices_in_waves_completes_and_status_is_exact(make_fleet):
    fleet = make_fleet(20)
    files = sorted(fleet.manifest.files, key=lambda e: -e[3])
    biggest, small = files[0], files[-1]
    cut_index = fleet.manifest.files.index(biggest) + 1
    foreign = load_public_key(keygen(fleet.home / "other-keys", "other")[1])
    fresh, cut, untrusting, current, sleeper = fleet.names[:5]
    fleet.device(fresh)  # runs nothing of this release: pulls every file
    fleet.device(cut, old=[biggest[0]], cut_file=cut_index)
    fleet.device(untrusting, old=[small[0]], trusted=foreign)
    fleet.device(current, old=[], firmware=VERSION, seq=fleet.manifest.seq)
    for name in fleet.names[5:]:
        fleet.device(name, old=[small[0]])
    fleet.device(sleeper, start=False, old=[small[0]])

    started = time.monotonic()
    proc = fleet.rollout("--waves", "1%,10%,50%,100%", "--max-failures", "25%", "--min-devices", "5",
                         "--timeout", "5m")
    # the sleeping device connects only after its offer went out: it finds it retained
    wait_for(lambda: fleet.doc().get("devices", {}).get(sleeper, {}).get("state") == "offered", "the sleeper's offer")
    fleet.devices[sleeper].start()
    code, out, err = finish(proc)
    elapsed = time.monotonic() - started
    assert code == 0, out + err
    assert "wave 4/4 started" in out and "campaign c1 done: 19 of 20 devices run 2.0.0" in out

    status = fleet.status()
    rows = by_device(status)
    assert status["campaign"]["state"] == "done" and status["campaign"]["sizes"] == [1, 2, 10, 20]
    assert status["campaign"]["counts"] == {"pending": 0, "offered": 0, "downloading": 0, "verifying": 0,
                                            "staged": 0, "done": 19, "failed": 1, "rolled_back": 0, "timed_out": 0}
    assert (rows[untrusting]["state"], rows[untrusting]["reason"]) == ("failed", "UNTRUSTED_KEY")
    assert (rows[current]["state"], rows[current]["note"]) == ("done", "already running 2.0.0")
    assert fleet.devices[current].offers == []  # already running it: never offered
    assert all(rows[n]["state"] == "done" for n in fleet.names if n != untrusting)
    assert sorted(row["wave"] for row in rows.values()) == [1, 2] + [3] * 8 + [4] * 10
    # every device reached its outcome once, and the broker holds no offer any more
    assert all(fleet.devices[n].outcome.is_set() for n in fleet.names if n != current)
    assert fleet.retained_offers() == {}

    # only what differs travels: the envelope and one small file, compressed
    envelope = (fleet.release / "release.cbor").stat().st_size
    # (what the fleet sent is more only if a window was pulled again after a time-out: a loaded machine)
    assert fleet.devices[fleet.names[7]].received == envelope + small[3]
    assert envelope + small[3] <= rows[fleet.names[7]]["sent"] <= envelope + small[3] + WINDOW * CHUNK
    everything = envelope + sum(e[3] for e in fleet.manifest.files)
    assert fleet.devices[fresh].received == everything <= rows[fresh]["sent"]

    # the cut download resumed from its last good offset, not from the start of the file
    device = fleet.devices[cut]
    after = [p for p in device.pulls if p[1] == cut_index]
    resumed = [p[2] for p in after if p[2] >= device.cut_at]
    assert device.cut_at is not None and device.cut_at % (WINDOW * CHUNK) != 0  # cut mid-window
    assert resumed[0] == device.cut_at and [p[2] for p in after].count(0) == 1
    assert device.received == envelope + biggest[3]  # every byte taken once
    assert envelope + biggest[3] <= rows[cut]["sent"] <= envelope + biggest[3] + WINDOW * CHUNK  # + what was lost
    assert rows[cut]["state"] == "done"

    full = fleet.devices[fresh]
    print("\nOTA figures: one device pulled the full release, %d bytes in %.2f s = %.0f KB/s; a one-file update "
          "sent %d bytes (%.1f%% of it); campaign of %d devices in 4 waves: %.1f s"
          % (everything, full.finished - full.started, everything / (full.finished - full.started) / 1024,
             envelope + small[3], 100.0 * (envelope + small[3]) / everything, len(fleet.names), elapsed))


def test_rollbacks_abort_the_campaign_before_the_next_wave(make_fleet):
    fleet = make_fleet(10)
    small = min(fleet.manifest.files, key=lambda e: e[3])
    for name in fleet.names:
        fleet.device(name, old=[small[0]], behaviour="rollback")  # the release's agent crashes everywhere
    proc = fleet.rollout("--waves", "10%,50%,100%", "--max-failures", "5%")
    code, out, err = finish(proc)
    assert code == 1, out + err
    assert "fleet: campaign c1 aborted: 1 of 1 devices failed (more than 5%)" in err
    assert "9 device(s) never got one" in err and "wave 2/3 started" not in out

    status = fleet.status()
    rows = by_device(status)
    [first] = [n for n, row in rows.items() if row["wave"] == 1]
    assert (rows[first]["state"], rows[first]["reason"]) == ("rolled_back", "CRASHED")
    assert [state for state, _ in fleet.devices[first].reports][-2:] == [STAGED, ROLLED_BACK]
    assert status["campaign"]["state"] == "aborted" and status["campaign"]["counts"]["done"] == 0
    for name in fleet.names:
        if name != first:
            assert rows[name]["state"] == "pending" and fleet.devices[name].offers == []
    assert fleet.retained_offers() == {}


def test_pause_holds_the_next_wave_and_resume_lets_it_go(make_fleet):
    fleet = make_fleet(4)
    small = min(fleet.manifest.files, key=lambda e: e[3])
    holds = {name: threading.Event() for name in fleet.names}
    for name in fleet.names:
        fleet.device(name, old=[small[0]], hold=holds[name])
    proc = fleet.rollout("--waves", "50%,100%")
    try:
        first = wait_for(lambda: (lambda got: got if len(got) == 2 else None)(
            [n for n in fleet.names if fleet.devices[n].offers]), "the first wave's offers")
        paused = fleet.fleet("ota", "pause", "c1")
        assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
        for name in first:
            holds[name].set()
        # the rollout saves after each step: wave 1 done and still no wave 2 means the pause held it
        doc = wait_for(lambda: (lambda d: d if d and all(d["devices"][n]["state"] == "done" for n in first)
                                else None)(fleet.doc()), "wave 1 done")
        assert doc["state"] == "paused" and doc["wave"] == 0
        assert [n for n in fleet.names if fleet.devices[n].offers] == first
        resumed = fleet.fleet("ota", "resume", "c1")
        assert resumed.returncode == 0 and "running" in resumed.stdout, resumed.stderr
        for hold in holds.values():
            hold.set()
        code, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, out + err
    assert "[paused]" in out and "wave 2/2 started" in out
    assert {row["state"] for row in fleet.status()["devices"]} == {"done"}


def test_abort_without_a_running_rollout_cancels_downloads_and_clears_offers(make_fleet):
    fleet = make_fleet(3)
    small = min(fleet.manifest.files, key=lambda e: e[3])
    slow, staged, offline = fleet.names
    fleet.device(slow, old=[small[0]], gate=threading.Event())  # took its offer, has not pulled yet
    fleet.device(staged, old=[small[0]], hold=threading.Event())  # installed, waits to confirm
    fleet.device(offline, start=False)  # never connects
    proc = fleet.rollout("--waves", "100%")
    try:
        wait_for(lambda: (DOWNLOADING, None) in fleet.devices[slow].reports, "the slow device downloading")
        wait_for(lambda: (STAGED, None) in fleet.devices[staged].reports, "the other device staged")
        wait_for(lambda: fleet.doc()["devices"][staged]["state"] == "staged", "the rollout seeing it staged")
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the rollout dies (a crash, a lost ssh session)
        proc.communicate()
    status = fleet.status()
    assert status["campaign"]["state"] == "running" and not status["rollout_running"]
    assert "no rollout runs it" in fleet.fleet("ota", "status").stdout
    refused = fleet.fleet("ota", "pause", "c1")
    assert refused.returncode == 3 and "no running rollout" in refused.stderr
    assert sorted(fleet.retained_offers()) == fleet.names

    result = fleet.fleet("ota", "abort", "c1")
    assert result.returncode == 0 and "aborted" in result.stdout, result.stderr
    assert fleet.retained_offers() == {}
    fleet.devices[slow].gate.set()  # the cancel came while it was busy: it stops at its next read
    wait_for(lambda: fleet.devices[slow].outcome.is_set(), "the slow device's outcome")
    assert fleet.devices[slow].reports[-1] == (FAILED, "CANCELLED")
    assert [p[0] for p in fleet.devices[slow].pulls] == [fleet.devices[slow].offers[0].cid]  # one pull, unanswered
    rows = by_device(fleet.status())
    assert [(rows[n]["state"], rows[n]["reason"]) for n in fleet.names] == [
        ("failed", "CANCELLED"), ("staged", None), ("failed", "CANCELLED")]
    again = fleet.fleet("ota", "abort", "c1")
    assert again.returncode == 3 and "already ended" in again.stderr


@pytest.mark.parametrize("how", ["fleet ota abort", "SIGTERM"])
def test_aborting_a_running_rollout_cancels_downloads_and_no_later_device_starts(make_fleet, how):
    fleet = make_fleet(4)
    small = min(fleet.manifest.files, key=lambda e: e[3])
    for name in fleet.names:
        fleet.device(name, old=[small[0]], gate=threading.Event())
    proc = fleet.rollout("--waves", "50%,100%")
    try:
        first = wait_for(lambda: (lambda got: got if len(got) == 2 else None)(
            [n for n in fleet.names if (DOWNLOADING, None) in fleet.devices[n].reports]), "wave 1 downloading")
        if how == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:
            result = fleet.fleet("ota", "abort", "c1")
            assert result.returncode == 0 and "campaign c1 aborted" in result.stdout, result.stderr
        code, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == (130 if how == "SIGTERM" else 1), out + err
    assert ("interrupted" if how == "SIGTERM" else "aborted by the operator") in err + out
    assert fleet.retained_offers() == {}
    for name in first:
        fleet.devices[name].gate.set()
        wait_for(lambda name=name: fleet.devices[name].outcome.is_set(), "%s's outcome" % name)
        assert fleet.devices[name].reports[-1] == (FAILED, "CANCELLED")
    rows = by_device(fleet.status())
    assert sorted(n for n, row in rows.items() if row["state"] == "pending") == sorted(set(fleet.names) - set(first))
    assert all(not fleet.devices[n].offers for n in fleet.names if n not in first)
