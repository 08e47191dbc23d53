"""Over-the-air updates of the real agent on emulated boards, against a real Mosquitto that runs the fleet's
password file and ACL, served by the fleet's own side (`fleet ota rollout`, fleet/ota/server.py).

Bundles are built once from a snapshot of the sources, with the fleet's release key in their trust.cbor;
each release is that bundle with a few files changed (one module, a module that crashes at start, a
manifest for another `.mpy` version or board, another signing key) and stored by `fleet.ota.release`. The
boards run at the emulator's default heap (110 KB, as an ESP32 without PSRAM): the agent only takes the
offer; the download, the checks and the install run in update mode (agent/ota_mode.py), at the next
boot. What is judged: the messages on the broker (decoded with the fleet's protocol code), what the
server sent, and the board's flash read back after the test (littlefs image).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from littlefs import LittleFS

import firmware.build
from firmware.build import build_bundle, sha256_file
from fleet.board_session import BoardSession
from fleet.broker import acl_text, ops_secret
from fleet.broker_address import BrokerAddress
from fleet.credentials import OPS_USER
from fleet.ota.keys import keygen, load_public_key
from fleet.ota.release import make_release
from fleet.ota.server import OtaServer, Release
from fleet.registry import open_registry
from hil_tests.agentnode import BLOCK, install
from protocols import manifest as mf
from protocols import messages, topics
from protocols.ota import CHUNK, WINDOW

pytestmark = pytest.mark.hil

FLEET = "city"
HEAP = None  # the emulator's default, 110 KB
FLEET_CMD = str(Path(sys.executable).with_name("fleet"))
DOWNLOADING, VERIFYING, STAGED, DONE, FAILED, ROLLED_BACK = 1, 2, 3, 4, 5, 6
CHANGED = "agent/health_report"  # the module a one-module release changes
BLOB = "agent/ota_test.bin"  # an extra file of the big release, never imported: 24 KB that do not compress


# ---- releases ----------------------------------------------------------------------------------------

def _compile(text: str, rel: str, out: Path) -> None:
    source = out.with_suffix(".src.py")
    source.write_text(text)
    try:
        firmware.build._compile(source, rel + ".py", out, firmware.build.BOARDS["emulator"]["arch"])
    finally:
        source.unlink()


def variant(base: Path, out: Path, version: str, sources: dict[str, str] | None = None,
            extra: dict[str, bytes] | None = None, trust: bytes | None = None, **fields: str) -> Path:
    """A copy of bundle `base` as `version`: `sources` {module: source} compiled in, `extra` files added,
    another trust.cbor, other manifest `fields` (mpy, board); its manifest.json rewritten to match."""
    shutil.copytree(base, out)
    for rel, text in (sources or {}).items():
        _compile(text, rel, out / (rel + ".mpy"))
    for rel, data in (extra or {}).items():
        (out / rel).write_bytes(data)
    if trust is not None:
        (out / firmware.build.TRUST).write_bytes(trust)
    doc = json.loads((out / "manifest.json").read_text())
    paths = sorted({entry["path"] for entry in doc["files"]} | set(extra or {}))
    doc["files"] = [{"path": p, "size": (out / p).stat().st_size, "sha256": sha256_file(out / p)} for p in paths]
    doc.update(version=version, **fields)
    (out / "manifest.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return out


class Releases:
    """The bundle the boards start with (1.0.0) and the fleet home holding every release made from it."""

    def __init__(self, root: Path) -> None:
        src = root / "src"
        for package in ("agent", "protocols", "firmware"):
            shutil.copytree(firmware.build.REPO / package, src / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
        self.home = root / "home"
        self.home.mkdir()
        key, pub = keygen(root / "keys", "fleet")
        other_key, other_pub = keygen(root / "keys", "other")
        self.public = load_public_key(pub)
        saved = firmware.build.REPO
        firmware.build.REPO = src  # built from the snapshot: the tree may change under a long run
        try:
            self.base = root / "bundle-1.0.0"
            build_bundle("emulator", "1.0.0", self.base, [self.public])
        finally:
            firmware.build.REPO = saved
        changed = (src / (CHANGED + ".py")).read_text() + "\n_RELEASE = '1.1.0'\n"
        crashing = (src / "agent/app.py").read_text() + (
            "\n\ndef main(board):\n    raise RuntimeError('release 1.2.0 crashes at start')\n")
        blob = os.urandom(24 * 1024)
        self.dirs: dict[str, Path] = {}
        self.bundles: dict[str, Path] = {"1.0.0": self.base}
        made = [
            ("1.1.0", dict(sources={CHANGED: changed}), key),
            ("1.2.0", dict(sources={"agent/app": crashing}), key),
            ("1.3.0", dict(sources={CHANGED: changed}, mpy="6.2"), key),
            ("1.4.0", dict(sources={CHANGED: changed}, board="esp32"), key),
            ("1.5.0", dict(sources={CHANGED: changed}, trust=mf.trust_bytes([load_public_key(other_pub)])), other_key),
            ("1.6.0", dict(sources={CHANGED: changed}), key),  # its file is tampered with when served
            ("1.7.0", dict(sources={CHANGED: changed}, extra={BLOB: blob}), key),
            ("1.8.0", dict(extra={BLOB: bytes(3 << 20)}), key),  # 3 MB (of zeros): more than the flash holds
        ]
        for version, options, signer in made:
            bundle = self.bundles[version] = variant(self.base, root / ("bundle-" + version), version, **options)
            info = make_release(bundle, signer, home=self.home)
            self.dirs[version] = self.home / "releases" / info["dir"]

    def release(self, version: str) -> Release:
        return Release(self.dirs[version])


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> Releases:
    return Releases(tmp_path_factory.mktemp("ota-hil"))


# ---- the site: broker, watcher, boards ---------------------------------------------------------------

class Watcher:
    """fleet-ops on the broker: every up message of the fleet, decoded, in arrival order."""

    def __init__(self, port: int, secret: str) -> None:
        self.inbox: queue.Queue = queue.Queue()
        self.seen: list[tuple[str, str, object]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.username_pw_set(OPS_USER, secret)
        self.client.on_message = lambda c, u, m: self.inbox.put((m.topic, bytes(m.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("dt/%s/+/+" % FLEET, 1)
        self.client.loop_start()

    def wait_for(self, kind: str, predicate=lambda m: True, timeout: float = 60.0, after: int = 0):
        deadline = time.monotonic() + timeout
        index = after
        while True:
            while index < len(self.seen):
                _, seen_kind, message = self.seen[index]
                index += 1
                if seen_kind == kind and predicate(message):
                    return message
            if time.monotonic() > deadline:
                tail = [(k, m.to_obj()) for _, k, m in self.seen[-10:]]  # type: ignore[attr-defined]
                raise AssertionError("no matching %s within %.0f s; last seen: %r" % (kind, timeout, tail))
            try:
                raw, payload = self.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            topic = topics.parse(raw)
            self.seen.append((topic.device, topic.kind, messages.decode(topic, payload)))

    def of(self, kind: str, after: int = 0) -> list:
        return [m for _, k, m in self.seen[after:] if k == kind]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Site:
    """A fleet home (the releases' one) with a registry of the boards, a broker with the fleet's passwd and
    ACL, and a watcher on it."""

    def __init__(self, releases: Releases, broker_factory, board_factory) -> None:
        self.releases = releases
        self.home = releases.home
        self.board_factory = board_factory
        self.names = ["wl-%d" % i for i in range(8)]
        users = {OPS_USER: ops_secret(self.home), **{name: "pw-" + name for name in self.names}}
        self.broker = broker_factory(users=users, acl=acl_text(FLEET, [(n, n) for n in self.names]),
                                     extra="set_tcp_nodelay true\n")
        self.address = BrokerAddress("127.0.0.1", self.broker.port)
        self.watcher = Watcher(self.broker.port, ops_secret(self.home))
        self.env = {**os.environ, "FLEET_HOME": str(self.home), "FLEET_BROKER": str(self.address)}
        self.servers: list[OtaServer] = []
        self.cid = 100

    def board(self, name: str):
        """A water-level board running the 1.0.0 bundle as device `name`, registered; waits for its birth."""
        board = self.board_factory("water-level", name=name, heap=HEAP)
        board.set({"level_cm": "5", "mount_height_cm": "300"})
        open_registry(self.home).add({"id": name, "kind": "water-level", "site": "harbour", "state": "active",
                                      "board": "emulator"})
        identity = {"fleet": FLEET, "id": name, "kind": "water-level", "user": name, "password": "pw-" + name,
                    "broker": self.address.for_device(), "calibration": {"mount_mm": 3000}}
        install(board, self.releases.base, identity)
        self.birth(name, "1.0.0")
        return board

    def safe_board(self, name: str):
        """A water-level board running 1.0.0 whose agent crashed 4 times in a row: /app/crashes, written
        over its serial line, then a reset (not a power-on, which starts the count again): safe mode."""
        board = self.board(name)
        with BoardSession.open(board.port) as session:
            session.write_text("/app/crashes", "4")
            session.hard_reset()
        return board

    def birth(self, name: str, firmware: str, after: int = 0, timeout: float = 60.0):
        return self.watcher.wait_for("state", lambda m: m.online and m.firmware == firmware and self.mine(m, name),
                                     timeout, after)

    def mine(self, message, name: str) -> bool:
        return any(m is message and d == name for d, _, m in self.watcher.seen)

    def progress(self, name: str, cid: int, states: tuple[int, ...], after: int = 0, timeout: float = 60.0):
        return self.watcher.wait_for("ota", lambda m: m.cid == cid and m.state in states and self.mine(m, name),
                                     timeout, after)

    def serve(self, version: str, server_class=OtaServer, tamper=None) -> OtaServer:
        release = self.releases.release(version)
        if tamper is not None:
            tamper(release)
        server = server_class(FLEET, self.address, ops_secret(self.home), release)
        server.start()
        self.servers.append(server)
        return server

    def offer(self, server: OtaServer, name: str) -> int:
        self.cid += 1
        server.apply([("offer", name, self.cid)], server.release.info)
        server.flush()
        return self.cid

    def fleet(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([FLEET_CMD, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.watcher.close()


@pytest.fixture
def site(releases, broker_factory, board_factory):
    made = Site(releases, broker_factory, board_factory)
    yield made
    made.close()


def flash_files(board) -> dict[str, bytes]:
    """Every file on the board's flash (its power is cut to read the littlefs image; left off)."""
    board.power_cut()
    data = bytearray(board.flash_image.read_bytes())
    fs = LittleFS(block_size=BLOCK, block_count=len(data) // BLOCK, mount=False)
    fs.context.buffer = data
    fs.mount()
    files: dict[str, bytes] = {}

    def walk(folder: str) -> None:
        for name in fs.listdir(folder):
            path = folder.rstrip("/") + "/" + name
            if fs.stat(path).type == 2:
                walk(path)
            else:
                with fs.open(path, "rb") as handle:
                    files[path] = handle.read()

    walk("/")
    return files


def slot_of(files: dict[str, bytes]) -> str:
    return files["/app/active"].decode().strip()


def bundle_hashes(bundle: Path) -> dict[str, str]:
    doc = json.loads((bundle / "manifest.json").read_text())
    return {e["path"]: e["sha256"] for e in doc["files"] if e["path"] not in ("boot.py", "main.py", "board.py")}


def slot_hashes(files: dict[str, bytes], slot: str) -> dict[str, str]:
    prefix = "/app/%s/" % slot
    return {p[len(prefix):]: hashlib.sha256(d).hexdigest() for p, d in files.items()
            if p.startswith(prefix) and p[len(prefix):] not in ("manifest.json", "release.cbor")}


# ---- the tests -----------------------------------------------------------------------------------------

def test_a_one_module_release_sends_only_that_file_and_the_board_confirms_it(site, releases):
    name = site.names[0]
    board = site.board(name)
    first = site.birth(name, "1.0.0")
    started = time.monotonic()
    rollout = site.fleet("ota", "rollout", "1.1.0", "--select", "id=" + name, "--waves", "100%", "--timeout", "3m")
    elapsed = time.monotonic() - started
    assert rollout.returncode == 0, rollout.stdout + rollout.stderr
    assert "done: 1 of 1 devices run 1.1.0" in rollout.stdout
    birth = site.birth(name, "1.1.0")
    assert birth.boot > first.boot
    site.watcher.wait_for("ota", lambda m: m.state == DONE and site.mine(m, name))
    reports = [m.state for m in site.watcher.of("ota") if site.mine(m, name)]
    assert reports[0] == DOWNLOADING and VERIFYING in reports and reports[-2:] == [STAGED, DONE]
    status = json.loads(site.fleet("ota", "status", "--json").stdout)
    [row] = status["devices"]
    assert (row["device"], row["state"]) == (name, "done")
    # what travelled: the envelope and the changed module, compressed, and nothing else
    release = releases.release("1.1.0")
    changed = [i for i, e in enumerate(release.manifest.files, 1) if e[0] == CHANGED + ".mpy"]
    assert row["sent"] == len(release.stored[0]) + len(release.stored[changed[0]])
    assert len(release.stored[changed[0]]) < [e[1] for e in release.manifest.files if e[0] == CHANGED + ".mpy"][0]

    # it stays on 1.1.0 (confirmed: boot.py leaves it alone), and its files are the release's
    board.reset()
    site.birth(name, "1.1.0", after=len(site.watcher.seen))
    files = flash_files(board)
    slot = slot_of(files)
    assert slot == "b" and "/app/trial" not in files and "/app/rollback" not in files
    assert slot_hashes(files, slot) == bundle_hashes(releases.bundles["1.1.0"])
    assert json.loads(files["/app/b/manifest.json"])["version"] == "1.1.0"
    assert slot_hashes(files, "a") == bundle_hashes(releases.base)  # the old release, kept for a rollback
    print("\nOTA on the emulator: a one-module update (%d bytes sent) rolled out, installed, restarted and "
          "confirmed in %.1f s" % (row["sent"], elapsed))


def test_bad_releases_are_refused_with_their_reason_and_the_board_keeps_running(site, releases):
    name = site.names[1]
    board = site.board(name)
    first = site.birth(name, "1.0.0")

    def tamper(release: Release) -> None:  # a byte of the changed module's compressed form flipped
        index = [i for i, e in enumerate(release.manifest.files, 1) if e[0] == CHANGED + ".mpy"][0]
        data = bytearray(release.stored[index])
        data[len(data) // 2] ^= 0x40
        release.stored[index] = bytes(data)

    cases = [("1.3.0", None, "ABI_MISMATCH"), ("1.4.0", None, "BOARD_MISMATCH"), ("1.5.0", None, "UNTRUSTED_KEY"),
             ("1.6.0", tamper, "HASH_MISMATCH"), ("1.8.0", None, "NO_SPACE")]
    for version, how, reason in cases:
        server = site.serve(version, tamper=how)
        mark = len(site.watcher.seen)
        cid = site.offer(server, name)
        failed = site.progress(name, cid, (FAILED, STAGED, DONE), mark)
        assert (failed.state, failed.reason) == (FAILED, reason), version
        server.apply([("clear", name, cid)], server.release.info)
        server.stop()
    # the checks ran in update mode, instead of the agent (agent/ota_mode.py): the board restarted, into its
    # release
    mark = len(site.watcher.seen)
    site.watcher.wait_for("telemetry", lambda m: True, 120, mark)
    births = [m for m in site.watcher.of("state") if site.mine(m, name) and m.online]
    assert {m.firmware for m in births} == {"1.0.0"} and births[-1].boot > first.boot
    files = flash_files(board)
    assert slot_of(files) == "a" and slot_hashes(files, "a") == bundle_hashes(releases.base)
    assert "/app/trial" not in files and not [p for p in files if p.startswith("/app/b/")]  # cleaned up


def test_a_release_that_crashes_at_start_rolls_back_by_itself(site, releases):
    name = site.names[2]
    board = site.board(name)
    first = site.birth(name, "1.0.0")
    rollout = site.fleet("ota", "rollout", "1.2.0", "--select", "id=" + name, "--waves", "100%", "--timeout", "3m",
                         timeout=240)
    assert "rolled_back" in rollout.stdout + rollout.stderr or rollout.returncode, rollout.stdout + rollout.stderr
    status = json.loads(site.fleet("ota", "status", "--json").stdout)
    row = [r for r in status["devices"] if r["device"] == name][0]
    assert (row["state"], row["reason"]) == ("rolled_back", "CRASHED")
    report = site.watcher.wait_for("ota", lambda m: m.state == ROLLED_BACK and site.mine(m, name))
    states = [(m.state, m.reason) for m in site.watcher.of("ota") if site.mine(m, name)]
    assert (STAGED, None) in states and states[-1] == (ROLLED_BACK, "CRASHED")
    births = [m for m in site.watcher.of("state") if site.mine(m, name) and m.online]
    assert {m.firmware for m in births} == {"1.0.0"}  # 1.2.0 never came up
    assert births[-1].boot == report.boot > first.boot  # reported by the old release, running again
    # update mode's restarts (2), then three boots on trial that crashed, then the old slot
    assert board.status()["reset_causes"].get("hard", 0) >= 5
    files = flash_files(board)
    assert slot_of(files) == "a" and "/app/trial" not in files and "/app/rollback" not in files


class GatedServer(OtaServer):
    """The fleet's server, answering the third window of one file with 3 chunks only and then nothing
    until `gate` is set, as when the link drops mid-window."""

    index = 0
    gate = threading.Event()
    held = threading.Event()

    def _answer(self, client, device, pull):  # type: ignore[override]
        if pull.index == self.index and pull.offset >= 2 * WINDOW * CHUNK and not self.gate.is_set():
            if self.held.is_set():
                return  # lost
            self.held.set()
            pull.count = 3
        super()._answer(client, device, pull)


def test_a_network_cut_mid_download_resumes_where_it_stopped(site, releases):
    name = site.names[3]
    board = site.board(name)
    release = releases.release("1.7.0")
    index = [i for i, e in enumerate(release.manifest.files, 1) if e[0] == BLOB][0]
    GatedServer.index = index
    server = site.serve("1.7.0", GatedServer)
    pulls: list[tuple[int, int]] = []
    probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    probe.username_pw_set(OPS_USER, ops_secret(site.home))
    probe.on_message = lambda c, u, m: pulls.append(tuple(messages.decode(topics.parse(m.topic), m.payload).to_obj()[k]
                                                          for k in (4, 5)))
    probe.connect("127.0.0.1", site.broker.port)
    probe.subscribe("dt/%s/%s/pull" % (FLEET, name), 1)
    probe.loop_start()
    try:
        cid = site.offer(server, name)
        assert GatedServer.held.wait(60), "the download never reached its third window"
        cut_at = 2 * WINDOW * CHUNK + 3 * CHUNK
        deadline = time.monotonic() + 30
        while (index, cut_at) not in pulls:  # the device asks again from where it stopped...
            assert time.monotonic() < deadline, pulls
            time.sleep(0.05)
        board.net(False)  # ...and its link drops: that session is dead for good
        time.sleep(2)
        board.net(True)
        GatedServer.gate.set()
        site.progress(name, cid, (STAGED,), timeout=180)
        site.birth(name, "1.7.0", timeout=90)
        site.progress(name, cid, (DONE,))
    finally:
        probe.disconnect()
        probe.loop_stop()
    offsets = [offset for i, offset in pulls if i == index]
    assert offsets[:4] == [0, WINDOW * CHUNK, 2 * WINDOW * CHUNK, cut_at], offsets
    assert offsets == sorted(offsets) and offsets.count(0) == 1, offsets  # never started over
    # Nothing sent again but what was in flight: a window whose chunks come later than the device's
    # 5 s wait (a loaded machine) is pulled once more, never the file from the start.
    size, served = release.manifest.files[index - 1][3], server.served[name].by_index[index]
    assert size <= served <= size + WINDOW * CHUNK, (served, size)

    # and an older release is refused now
    older = site.serve("1.1.0")
    mark = len(site.watcher.seen)
    cid = site.offer(older, name)
    refused = site.progress(name, cid, (FAILED, DONE, STAGED), mark)
    assert (refused.state, refused.reason) == (FAILED, "DOWNGRADE")
    assert name not in older.served  # refused from the offer: nothing pulled


def test_a_board_in_safe_mode_reads_no_sensor_but_takes_an_update(site, releases):
    name = site.names[4]
    board = site.safe_board(name)
    mark = len(site.watcher.seen)
    # The boot in safe mode is the one whose health says so: births of the boots before it (the agent
    # interrupted for the serial session) may still be on their way to the watcher.
    health = site.watcher.wait_for("health", lambda m: site.mine(m, name) and m.fault == "safe_mode", timeout=90,
                                   after=mark)
    first = site.watcher.wait_for("state", lambda m: site.mine(m, name) and m.online and m.boot == health.boot,
                                  after=mark)
    assert first.firmware == "1.0.0" and health.errors == {"safe_mode": 1}
    assert not [m for m in site.watcher.of("telemetry") if site.mine(m, name) and m.boot == first.boot]  # no reading
    server = site.serve("1.1.0")
    cid = site.offer(server, name)
    site.progress(name, cid, (DONE,), timeout=90)
    birth = site.birth(name, "1.1.0", after=mark)
    assert birth.boot > first.boot
    site.watcher.wait_for("telemetry", lambda m: site.mine(m, name), timeout=60, after=mark)  # sensors again
    files = flash_files(board)
    assert slot_of(files) == "b" and "/app/crashes" not in files


class HeldServer(OtaServer):
    """The fleet's server, answering nothing of one file past its second window until `gate` is set."""

    index = 0
    gate = threading.Event()
    held = threading.Event()

    def _answer(self, client, device, pull):  # type: ignore[override]
        if pull.index == self.index and pull.offset >= 2 * WINDOW * CHUNK and not self.gate.is_set():
            self.held.set()
            return
        super()._answer(client, device, pull)


def test_a_power_cut_in_update_mode_resumes_from_what_the_flash_kept(site, releases):
    name = site.names[5]
    board = site.board(name)
    release = releases.release("1.7.0")
    index = [i for i, e in enumerate(release.manifest.files, 1) if e[0] == BLOB][0]
    HeldServer.index = index
    server = site.serve("1.7.0", HeldServer)
    cid = site.offer(server, name)
    assert HeldServer.held.wait(90), "the download never reached its third window"
    held_at = server.served[name].by_index[index]
    assert held_at == 2 * WINDOW * CHUNK  # two windows of the file are in, on flash
    board.power_cut()  # in update mode, mid-file
    mark = len(site.watcher.seen)
    board.power_on()
    HeldServer.gate.set()
    site.progress(name, cid, (STAGED,), mark, timeout=180)
    site.birth(name, "1.7.0", timeout=90)
    site.progress(name, cid, (DONE,))
    # after the cut the file went on from its flushed windows (two of them), not from its start: at most a
    # window in flight is pulled again on a loaded machine
    size, served = release.manifest.files[index - 1][3], server.served[name].by_index[index]
    assert size <= served <= size + WINDOW * CHUNK, (served, size)
    assert board.status()["reset_causes"].get("power_on", 0) >= 2
    files = flash_files(board)
    assert slot_of(files) == "b" and slot_hashes(files, "b") == bundle_hashes(releases.bundles["1.7.0"])


def test_a_campaign_over_boards_aborts_when_its_first_wave_rolls_back(site, releases):
    first, second = site.names[6], site.names[7]
    boards = {first: site.board(first), second: site.board(second)}
    mark = len(site.watcher.seen)
    rollout = site.fleet("ota", "rollout", "1.2.0", "--select", "id=%s,id=%s" % (first, second), "--waves", "50%,100%",
                         "--max-failures", "0%", "--timeout", "4m", timeout=300)
    out = rollout.stdout + rollout.stderr
    assert rollout.returncode != 0 and "aborted" in out, out
    status = json.loads(site.fleet("ota", "status", "--json").stdout)
    assert status["campaign"]["state"] == "aborted", status
    rows = {r["device"]: r for r in status["devices"] if r["device"] in boards}
    tried = [d for d, r in rows.items() if r["wave"] == 1]
    assert len(tried) == 1, rows
    [spared] = [d for d in rows if d not in tried]
    assert (rows[tried[0]]["state"], rows[tried[0]]["reason"]) == ("rolled_back", "CRASHED")
    assert rows[spared]["state"] == "pending", rows  # never offered: the wave never started
    assert not [m for m in site.watcher.of("ota", mark) if site.mine(m, spared)]
    assert not [m for m in site.watcher.of("pull", mark) if site.mine(m, spared)]
    # both run 1.0.0: the one that tried it rolled back by itself, the other never left it
    for name in boards:
        births = [m for m in site.watcher.of("state", mark) if site.mine(m, name) and m.online]
        assert {m.firmware for m in births} <= {"1.0.0"}
    files = flash_files(boards[spared])
    assert slot_of(files) == "a" and not [p for p in files if p.startswith("/app/b/")]
