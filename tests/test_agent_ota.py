"""The node's side of OTA (agent/ota*.py, firmware/boot.py, firmware/main.py), under CPython and in the VM.

Releases are made here as the fleet makes them (protocols.manifest, Ed25519 with `cryptography`, zlib
with a 1 KB window) and served by an in-memory fleet that answers pulls with chunks, straight into the
device's chunk callback. The same harness (HARNESS, plain MicroPython-compatible code) runs the node's
code under CPython and in the MicroPython VM: the offer as the running agent takes it, update mode
(pull, check, install, switch), the confirmation and the rollback report, and every refusal with its
reason code. boot.py and main.py run in the VM with a stand-in `machine`, `board` and agent.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocols import manifest as mf
from protocols.cbor import dumps
from tests.mpvm import REPO, check_micropython

VERSION1, VERSION2 = "1.0.0", "2.0.0"
CID = 77


def _key() -> tuple[Ed25519PrivateKey, bytes]:
    key = Ed25519PrivateKey.generate()
    return key, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


FLEET_KEY, FLEET_PUB = _key()
OTHER_KEY, OTHER_PUB = _key()


def _compress(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 10)  # fleet/ota/store.py compress: a 1 KB window
    return packer.compress(data) + packer.flush()


def slot_files() -> dict[str, bytes]:
    """The files of release 1.0.0 (the running slot): a few modules and the trust list."""
    return {"agent/a.mpy": bytes(range(256)) * 12, "agent/b.mpy": b"module b " * 300,
            "protocols/c.mpy": hashlib.sha256(b"c").digest() * 22, "trust.cbor": mf.trust_bytes([FLEET_PUB])}


class Release:
    """A release as the fleet stores it: `stored` (0: the envelope, i: files[i-1] compressed), its offer."""

    def __init__(self, files: dict[str, bytes], seq: int = 3, version: str = VERSION2, board: str = "emulator",
                 mpy: str = "6.3", key: Ed25519PrivateKey = FLEET_KEY, sizes: dict[str, int] | None = None,
                 manifest_bytes: bytes | None = None, signature: bytes | None = None) -> None:
        packed = {path: _compress(data) for path, data in files.items()}
        entries = [[path, (sizes or {}).get(path, len(data)), hashlib.sha256(data).digest(), len(packed[path])]
                   for path, data in files.items()]
        self.manifest = mf.Manifest(seq, version, board, mpy, entries)
        body = manifest_bytes or self.manifest.to_bytes()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.envelope = dumps([body, mf.key_id(public), signature or key.sign(body)])
        self.stored = [self.envelope] + [packed[entry[0]] for entry in self.manifest.files]
        self.seq, self.version = seq, version

    def offer(self, cid: int = CID, cancel: bool = False, release: int | None = None, sha: bytes | None = None) -> bytes:
        obj = {0: 1, 1: cid, 2: self.version, 3: self.seq if release is None else release, 4: len(self.envelope),
               5: sha or hashlib.sha256(self.envelope).digest()}
        if cancel:
            obj[6] = True
        return dumps(obj)

    def index(self, path: str) -> int:
        return [e[0] for e in self.manifest.files].index(path) + 1


def changed(path: str = "agent/b.mpy", data: bytes = b"module b, fixed " * 400) -> dict[str, bytes]:
    files = slot_files()
    files[path] = data
    return files


def lay_out(root: Path, release: Release) -> None:
    """A board's /app as `fleet flash` leaves it (slot a: release 1.0.0, no release seq) and the stored
    release for the fleet of the harness."""
    app = root / "app"
    for path, data in slot_files().items():
        (app / "a" / path).parent.mkdir(parents=True, exist_ok=True)
        (app / "a" / path).write_bytes(data)
    (app / "a" / "manifest.json").write_text(json.dumps({"board": "emulator", "version": VERSION1}))
    (app / "active").write_text("a")
    (root / "data").mkdir()
    (root / "stored").mkdir()
    for i, data in enumerate(release.stored):
        (root / "stored" / str(i)).write_bytes(data)


# The node's side driven with a fake fleet: runs unchanged under CPython and MicroPython. Each scenario
# returns plain data, compared between the two.
HARNESS = r'''
import asyncio, json, os
from protocols.cbor import dumps
from protocols.cbor_lite import loads
from agent import ota_boot, ota_fetch, ota_mode, ota_offer
ota_fetch._WAIT_MS = 50


class Fleet:
    """The fleet's server: answers a pull with its chunks, into the node's chunk callback."""

    def __init__(self, root):
        self.stored = []
        while True:
            try:
                with open(root + "/stored/%d" % len(self.stored), "rb") as f:
                    self.stored.append(f.read())
            except OSError:
                break
        self.pulls = []
        self.sent = {}
        self.lose = None  # (index, offset): chunks of that file from there on are lost
        self.node = None

    def answer(self, pull):
        index, offset = pull[4], pull[5]
        self.pulls.append([index, offset])
        data = self.stored[index]
        for _ in range(pull[6]):
            if self.lose and index == self.lose[0] and offset >= self.lose[1]:
                return
            piece = data[offset:offset + 512]
            self.sent[index] = self.sent.get(index, 0) + len(piece)
            self.node.ota.chunk(memoryview(dumps({0: 1, 1: pull[3], 2: index, 3: offset, 4: piece, 5: len(data)})))
            offset += len(piece)
            if offset >= len(data):
                return


class Seq:
    def __init__(self, boot):
        self.boot = boot
        self.n = 0

    def next(self):
        self.n += 1
        return self.n


class Board:
    NAME = "emulator"

    def reset_cause(self):
        return "hard"


class Link:
    client = True

    async def run(self):
        pass

    async def stop(self):
        pass


class Node:
    """What update mode needs of its session (agent/ota_mode.py Node)."""

    def __init__(self, fleet, boot=2):
        self.sequence = Seq(boot)
        self.board = Board()
        self.link = Link()
        self.ota = None
        self.reports = []
        self.up = True
        self.fleet = fleet
        fleet.node = self

    async def publish_now(self, kind, payload, seq=None):
        if not self.up:
            return False
        obj = loads(payload)
        if kind == "pull":
            self.fleet.answer(obj)
        else:
            self.reports.append([obj[4], obj.get(5), obj.get(6), obj.get(7)])
        return True


class Commands:
    ota = None


class Sensor:
    def values(self):
        return {"level": 12.5}


class Agent:
    """What the running agent's OTA code needs of agent/app.py's Agent."""

    def __init__(self, root, boot=1):
        self.app_dir = root + "/app"
        self.sequence = Seq(boot)
        self.board = Board()
        self.commands = Commands()
        self.sensor = Sensor()
        self.reports = []
        self.rebooted = False

    async def publish_now(self, kind, payload, seq=None):
        obj = loads(payload)
        self.reports.append([obj[4], obj.get(5), obj.get(6), obj.get(7)])
        return True

    async def reboot(self):
        self.rebooted = True


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def listing(folder):
    out = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return None
    for name in names:
        sub = listing(folder + "/" + name)
        out += [name] if sub is None else [name + "/" + s for s in sub]
    return out


async def offer(root, payload, boot=1):
    """The running agent takes an offer: [its reports, rebooted, /app/step]."""
    agent = Agent(root, boot)
    await ota_offer.handle(agent, payload)
    return [agent.reports, agent.rebooted, read(root + "/app/step")]


async def mode(root, fleet, boot=2, cut=None):
    """Update mode, as main.py runs it (then removes /app/step): its reports. `cut`: a power cut once
    that many chunk bytes were written (the task is cancelled; what was flushed stays)."""
    node = Node(fleet, boot)
    task = asyncio.create_task(ota_mode.update(node, root + "/app", "6.3"))
    while not task.done():
        await asyncio.sleep(0.01)
        if cut is not None and sum(fleet.sent.values()) >= cut:
            task.cancel()
            await asyncio.sleep(0.05)
            return node.reports
    os.remove(root + "/app/step")
    return node.reports


async def connect(root, boot=3):
    """The agent's session comes up: [its reports, /app/trial]."""
    agent = Agent(root, boot)
    await ota_boot.connected(agent)
    for _ in range(100):
        if agent.commands.ota is None:
            break
        await asyncio.sleep(0.01)
    return [agent.reports, read(root + "/app/trial")]


def state(root):
    from agent import flashio
    data = flashio.read(root + "/app/ota")
    return None if data is None else json.loads(data)


async def full(root, payload, older):
    out = {}
    fleet = Fleet(root)
    out["offer"] = await offer(root, payload)
    out["mode"] = await mode(root, fleet)
    out["pulls"] = fleet.pulls
    out["sent"] = fleet.sent
    out["active"] = read(root + "/app/active")
    out["trial"] = read(root + "/app/trial")
    out["manifest"] = json.loads(read(root + "/app/b/manifest.json"))
    out["b"] = listing(root + "/app/b")
    out["connect"] = await connect(root)
    out["state"] = state(root)
    out["again"] = (await offer(root, payload, 4))[0]
    out["older"] = await offer(root, older, 4)
    return out


async def refused(root, payload):
    out = {}
    fleet = Fleet(root)
    out["offer"] = await offer(root, payload)
    if out["offer"][2] == "update":
        out["mode"] = await mode(root, fleet)
    out["state"] = state(root)
    out["active"] = read(root + "/app/active")
    out["a"] = listing(root + "/app/a")
    out["b"] = listing(root + "/app/b")
    out["pulls"] = fleet.pulls
    out["again"] = (await offer(root, payload, 3))[0]
    return out


async def resume(root, payload, index, lose, cut):
    """The chunks of file `index` from offset `lose` on are lost; then either the link drops and comes
    back (a new session: its offer again) or, with `cut`, the power goes and update mode runs again."""
    out = {}
    fleet = Fleet(root)
    out["offer"] = await offer(root, payload)
    fleet.lose = [index, lose]
    node = Node(fleet)
    task = asyncio.create_task(ota_mode.update(node, root + "/app", "6.3"))
    while fleet.pulls.count([index, lose]) < 3:  # pulled again after each time-out
        await asyncio.sleep(0.01)
    if cut:
        task.cancel()  # the power goes
        await asyncio.sleep(0.05)
        out["after_cut"] = read(root + "/app/step")
        fleet.lose = None
        out["mode"] = await mode(root, fleet, 3)
    else:
        node.up = False  # the link drops...
        await asyncio.sleep(0.2)
        fleet.lose = None
        node.up = True  # ...and comes back: a new session, its offer again
        node.ota.again(dumps({0: 1, 1: 77, 2: "2.0.0", 3: 3, 4: 1, 5: bytes(32)}))
        while not task.done():
            await asyncio.sleep(0.01)
        out["mode"] = node.reports
    out["pulls"] = fleet.pulls
    out["sent"] = fleet.sent
    out["active"] = read(root + "/app/active")
    return out


async def cancel(root, payload, cancel_payload):
    out = {}
    fleet = Fleet(root)
    out["offer"] = await offer(root, payload)
    fleet.lose = [0, 0]  # nothing comes: the download waits
    node = Node(fleet)
    task = asyncio.create_task(ota_mode.update(node, root + "/app", "6.3"))
    while not fleet.pulls:
        await asyncio.sleep(0.01)
    node.ota.again(cancel_payload)
    while not task.done():
        await asyncio.sleep(0.01)
    out["mode"] = node.reports
    out["state"] = state(root)
    out["b"] = listing(root + "/app/b")
    return out


async def rollback(root, payload):
    with open(root + "/app/rollback", "w") as f:
        f.write("CRASHED 77 2.0.0")
    out = {}
    out["connect"] = await connect(root)
    out["state"] = state(root)
    out["rollback"] = read(root + "/app/rollback")
    out["again"] = (await offer(root, payload))[0]
    return out


async def cut_confirm(root, payload):
    """A power cut as the new release confirms: its outcome written, /app/trial not yet removed."""
    from agent import flashio
    out = {}
    fleet = Fleet(root)
    await offer(root, payload)
    await mode(root, fleet)
    trial = read(root + "/app/trial").split()
    flashio.write(root + "/app/ota", json.dumps({"closed": int(trial[3]), "end": [4, None, trial[4]]}).encode())
    out["connect"] = await connect(root)
    out["state"] = state(root)
    out["again"] = (await offer(root, payload, 4))[0]
    out["a"] = listing(root + "/app/a")
    out["active"] = read(root + "/app/active")
    return out


async def crashed(root, payload):
    """The offer taken, the board cut before update mode ran, then update mode crashing."""
    from agent import flashio
    out = {}
    out["first"] = await offer(root, payload)
    os.remove(root + "/app/step")  # main.py: update mode never got to run (a power cut would keep it)
    out["again"] = await offer(root, payload, 2)  # taken again
    os.remove(root + "/app/step")
    now = state(root)
    now["ran"] = True  # update mode started, then crashed: main.py removed /app/step
    flashio.write(root + "/app/ota", json.dumps(now).encode())
    out["crashed"] = await offer(root, payload, 3)
    out["state"] = state(root)
    return out


def run(scenario, *args):
    return asyncio.run(scenario(*args))
'''


def _cpython(root: Path, scenario: str, *args) -> object:
    ns: dict = {}
    exec(compile(HARNESS, "harness", "exec"), ns)  # noqa: S102 - the harness the VM runs too
    return json.loads(json.dumps(ns["run"](ns[scenario], str(root), *args)))


def _vm(root: Path, scenario: str, *args) -> object:
    code = HARNESS + "\nimport json\nprint(json.dumps(run(%s, %r%s)))\n" % (
        scenario, str(root), "".join(", %r" % (a,) for a in args))
    return json.loads(check_micropython(code, heap="1m", cwd=root).strip().splitlines()[-1])


RUNNERS = [pytest.param(_cpython, id="cpython"), pytest.param(_vm, id="vm", marks=pytest.mark.micropython)]


@pytest.mark.parametrize("runner", RUNNERS)
def test_an_update_pulls_only_what_changed_installs_on_trial_and_confirms(tmp_path, runner):
    release = Release(changed())
    lay_out(tmp_path, release)
    older = Release(slot_files(), seq=2, version="1.9.0")
    out = runner(tmp_path, "full", release.offer(), older.offer(cid=78))
    # the agent takes the offer: reported, update mode left for the next boot, restarted
    assert out["offer"] == [[[1, 0, None, VERSION2]], True, "update"]
    b = release.index("agent/b.mpy")
    assert out["pulls"] == [[0, 0], [b, 0]]  # the envelope and the one changed file, compressed
    assert out["sent"] == {"0": len(release.stored[0]), str(b): len(release.stored[b])}
    assert out["mode"][0] == [2, None, None, VERSION2]  # verifying
    assert [r[0] for r in out["mode"]] == [2, 1, 3] and out["mode"][1][1] >= 90  # downloading ~100 %, staged
    assert out["active"] == "b" and out["trial"] == "b a 0 %d %s" % (CID, VERSION2)
    doc = out["manifest"]
    assert (doc["version"], doc["release"], doc["board"], doc["mpy"]) == (VERSION2, 3, "emulator", "6.3")
    assert {f["path"]: f["sha256"] for f in doc["files"]} == {
        p: hashlib.sha256(d).hexdigest() for p, d in changed().items()}
    assert out["b"] == sorted(["agent/a.mpy", "agent/b.mpy", "manifest.json", "protocols/c.mpy", "release.cbor",
                               "trust.cbor"])
    for path, data in changed().items():
        assert (tmp_path / "app/b" / path).read_bytes() == data
    # the new release's agent: sensors read, confirmed
    assert out["connect"] == [[[4, None, None, VERSION2]], None]
    assert out["state"] == {"closed": CID, "end": [4, None, VERSION2]}
    assert out["again"] == [[4, None, None, VERSION2]]  # its offer again: done again
    assert out["older"] == [[[5, None, "DOWNGRADE", "1.9.0"]], False, None]  # refused from the offer alone


def _bad_signature() -> Release:
    good = Release(changed())
    signature = bytearray(FLEET_KEY.sign(good.manifest.to_bytes()))
    signature[5] ^= 1
    return Release(changed(), signature=bytes(signature))


def _bad_manifest() -> Release:
    good = Release(changed())
    obj = good.manifest.to_obj()
    del obj[7]  # no total
    return Release(changed(), manifest_bytes=dumps(obj))


def _tampered() -> Release:
    release = Release(changed())
    index = release.index("agent/b.mpy")
    data = bytearray(release.stored[index])
    data[len(data) // 2] ^= 0x55
    release.stored[index] = bytes(data)
    return release


REFUSALS = {
    "HASH_MISMATCH": (_tampered, {}),
    "UNTRUSTED_KEY": (lambda: Release(changed(), key=OTHER_KEY), {}),
    "BAD_SIGNATURE": (_bad_signature, {}),
    "BAD_MANIFEST": (_bad_manifest, {}),
    "ABI_MISMATCH": (lambda: Release(changed(), mpy="6.2"), {}),
    "BOARD_MISMATCH": (lambda: Release(changed(), board="esp32"), {}),
    "TRANSFER_FAILED": (lambda: Release(changed()), {"sha": bytes(32)}),  # the envelope is not the offered one
    "DOWNGRADE": (lambda: Release(changed(), seq=3), {"release": 9}),  # the offer claims more than it holds
}


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("reason", sorted(REFUSALS))
def test_a_bad_release_is_refused_with_its_reason_and_nothing_running_changes(tmp_path, runner, reason):
    make, offer_args = REFUSALS[reason]
    release = make()
    lay_out(tmp_path, release)
    if reason == "DOWNGRADE":  # the board runs release 5: the offer says 9, the manifest 3
        manifest = tmp_path / "app/a/manifest.json"
        manifest.write_text(json.dumps({"board": "emulator", "release": 5, "version": VERSION1}))
    before = {p: (tmp_path / "app/a" / p).read_bytes() for p in slot_files()}
    out = runner(tmp_path, "refused", release.offer(**offer_args))
    assert out["mode"][-1] == [5, None, reason, VERSION2]
    assert out["state"] == {"closed": CID, "end": [5, reason, VERSION2]}
    assert out["active"] == "a" and out["b"] is None  # what was pulled is gone
    assert {p: (tmp_path / "app/a" / p).read_bytes() for p in slot_files()} == before
    assert out["again"] == [[5, None, reason, VERSION2]]  # the offer again: the same answer, nothing pulled
    pulled_files = {index for index, _ in out["pulls"] if index}
    assert pulled_files == ({release.index("agent/b.mpy")} if reason == "HASH_MISMATCH" else set())


def test_a_release_larger_than_the_free_flash_is_refused(tmp_path, monkeypatch):
    # The host's disk is large: the check sees a 2 MB flash with 1 MB free, as the emulator's littlefs.
    release = Release(changed())
    lay_out(tmp_path, release)
    statvfs = os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda path: (4096, 4096, 512, 256, 256) + tuple(statvfs(path))[5:])
    fits = _cpython(tmp_path, "refused", release.offer())
    assert fits["active"] == "b"  # 30 KB: it fits
    big = Release(changed(), seq=4, sizes={"agent/b.mpy": 2**20})
    lay_out(tmp_path / "big", big)
    out = _cpython(tmp_path / "big", "refused", big.offer())
    assert out["mode"][-1] == [5, None, "NO_SPACE", VERSION2] and out["b"] is None
    assert {index for index, _ in out["pulls"]} == {0}  # refused before any file was pulled


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("how", ["reconnect", "power cut"])
def test_a_download_cut_mid_file_resumes_at_its_last_good_offset(tmp_path, runner, how):
    big = os.urandom(9000)  # incompressible: 18 chunks, 3 windows
    release = Release(changed("agent/b.mpy", big))
    lay_out(tmp_path, release)
    b = release.index("agent/b.mpy")
    lose = 8 * 512 + 3 * 512  # three chunks into the second window
    out = runner(tmp_path, "resume", release.offer(), b, lose, how == "power cut")
    if how == "power cut":
        assert out["after_cut"] == "update"  # main.py never removed it: update mode runs again
    offsets = [offset for index, offset in out["pulls"] if index == b]
    assert offsets[:3] == [0, 4096, lose] and offsets.count(0) == 1 and offsets == sorted(offsets), offsets
    assert [index for index, _ in out["pulls"]].count(0) == 1  # nor was the envelope pulled again
    assert out["sent"][str(b)] == len(release.stored[b])  # every byte once
    assert out["active"] == "b" and (tmp_path / "app/b/agent/b.mpy").read_bytes() == big
    assert out["mode"][-1] == [3, None, None, VERSION2]  # staged


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("how", ["cancel", "cleared"])
def test_a_cancel_stops_the_download_and_clears_the_inactive_slot(tmp_path, runner, how):
    release = Release(changed())
    lay_out(tmp_path, release)
    stop = release.offer(cancel=True) if how == "cancel" else b""
    out = runner(tmp_path, "cancel", release.offer(), stop)
    assert out["mode"][-1] == [5, None, "CANCELLED", VERSION2]
    assert out["state"] == {"closed": CID, "end": [5, "CANCELLED", VERSION2]}
    assert out["b"] is None


@pytest.mark.parametrize("runner", RUNNERS)
def test_an_update_mode_that_never_ran_is_taken_again_and_one_that_crashed_fails(tmp_path, runner):
    release = Release(changed())
    lay_out(tmp_path, release)
    out = runner(tmp_path, "crashed", release.offer())
    assert out["first"] == out["again"] == [[[1, 0, None, VERSION2]], True, "update"]
    assert out["crashed"] == [[[5, None, "TRANSFER_FAILED", VERSION2]], False, None]
    assert out["state"] == {"closed": CID, "end": [5, "TRANSFER_FAILED", VERSION2]}


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_power_cut_as_the_release_confirms_still_ends_done_and_keeps_the_old_slot(tmp_path, runner):
    release = Release(changed())
    lay_out(tmp_path, release)
    old = tmp_path / "app" / "a"
    before = sorted(str(f.relative_to(old)) for f in old.rglob("*") if f.is_file())
    out = runner(tmp_path, "cut_confirm", release.offer())
    assert out["connect"] == [[[4, None, None, VERSION2]], None]  # confirmed again, reported again
    assert out["state"] == {"closed": CID, "end": [4, None, VERSION2]}
    assert out["again"] == [[4, None, None, VERSION2]]  # never "failed" for a release that runs
    assert out["active"] == "b" and sorted(out["a"]) == before  # the previous release, kept for a rollback


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_rollback_is_reported_then_given_to_its_offer(tmp_path, runner):
    release = Release(changed())
    lay_out(tmp_path, release)
    out = runner(tmp_path, "rollback", release.offer())
    assert out["connect"] == [[[6, None, "CRASHED", VERSION2]], None]
    assert out["state"] == {"closed": CID, "end": [6, "CRASHED", VERSION2]}
    assert out["rollback"] is None
    assert out["again"] == [[6, None, "CRASHED", VERSION2]]


@pytest.mark.micropython
def test_cpython_and_the_vm_give_the_same_update(tmp_path):
    release = Release(changed())
    outs = []
    for name, runner in (("c", _cpython), ("v", _vm)):
        root = tmp_path / name
        root.mkdir()
        lay_out(root, release)
        outs.append(runner(root, "full", release.offer(), release.offer(cid=78)))
    assert outs[0] == outs[1]


# ---- boot.py and main.py, in the VM ----------------------------------------------------------------

MACHINE = """
import os
PWRON_RESET, HARD_RESET, WDT_RESET = 1, 2, 3
def reset_cause():
    return int(os.getenv("CAUSE") or "2")
"""


def _boot(root: Path, cause: int = 2) -> str:
    """Run firmware/boot.py on `root`/app once (a boot with reset cause `cause`)."""
    source = (REPO / "firmware/boot.py").read_text().replace('_APP = "/app"', "_APP = %r" % str(root / "app"))
    (root / "lib").mkdir(exist_ok=True)
    (root / "lib/machine.py").write_text(MACHINE)
    return check_micropython(source, path=[root / "lib", REPO], env={"CAUSE": str(cause)})


def _app(root: Path) -> Path:
    app = root / "app"
    (app / "a").mkdir(parents=True)
    (app / "b").mkdir()
    (app / "active").write_text("b")
    return app


@pytest.mark.micropython
def test_boot_counts_trial_boots_and_rolls_back_after_three(tmp_path):
    app = _app(tmp_path)
    (app / "trial").write_text("b a 0 77 2.0.0")
    for tries in (1, 2, 3):
        _boot(tmp_path)
        assert (app / "trial").read_text() == "b a %d 77 2.0.0" % tries and (app / "active").read_text() == "b"
    _boot(tmp_path)
    assert (app / "active").read_text() == "a" and not (app / "trial").exists()
    assert (app / "rollback").read_text() == "CRASHED 77 2.0.0"
    assert sorted(p.name for p in app.iterdir()) == ["a", "active", "b", "rollback"]  # no temp file left


@pytest.mark.micropython
def test_boot_rolls_back_an_expired_trial_and_drops_one_never_switched_to(tmp_path):
    app = _app(tmp_path)
    (app / "trial").write_text("b a expired 77 2.0.0")  # main.py: not confirmed in time
    _boot(tmp_path)
    assert (app / "active").read_text() == "a" and (app / "rollback").read_text() == "TRIAL_FAILED 77 2.0.0"
    (app / "rollback").unlink()
    (app / "trial").write_text("b a 0 78 2.1.0")  # cut before the switch: /app/active still names a
    _boot(tmp_path)
    assert (app / "active").read_text() == "a" and not (app / "trial").exists() and not (app / "rollback").exists()


@pytest.mark.micropython
def test_boot_counts_watchdog_resets_and_a_power_on_clears_them(tmp_path):
    app = _app(tmp_path)
    _boot(tmp_path, cause=3)
    _boot(tmp_path, cause=3)
    assert (app / "crashes").read_text() == "2"
    _boot(tmp_path, cause=2)  # a reset by hand or by the fleet: not a crash
    assert (app / "crashes").read_text() == "2"
    _boot(tmp_path, cause=1)
    assert not (app / "crashes").exists()


FAKE_APP = """
import asyncio, os
def main(board):
    print("agent", getattr(board, "safe", False))
    how = os.getenv("AGENT")
    if how == "crash":
        raise RuntimeError("crash")
    async def run():
        await asyncio.sleep(float(os.getenv("RUN_S") or "0"))
    asyncio.run(run())
"""
FAKE_BOARD = """
class Board:
    NAME = "emulator"
    def reset(self):
        print("reset")
        raise SystemExit
"""
FAKE_MODE = """
def run(board):
    print("update mode")
"""


def _main(root: Path, env: dict[str, str], **constants: float) -> str:
    """Run firmware/main.py on `root`/app with a stand-in board and agent (its slot a)."""
    source = (REPO / "firmware/main.py").read_text().replace('_APP = "/app"', "_APP = %r" % str(root / "app"))
    for name, value in constants.items():
        source = source.replace("%s = " % name, "%s = %r  # " % (name, value), 1)
    lib = root / "lib"
    lib.mkdir(exist_ok=True)
    (lib / "board.py").write_text(FAKE_BOARD)
    for slot in ("a", "b"):  # main.py puts the active slot first on sys.path
        agent = root / "app" / slot / "agent"
        agent.mkdir(parents=True, exist_ok=True)
        (agent / "__init__.py").write_text("")
        (agent / "app.py").write_text(FAKE_APP)
        (agent / "errors.py").write_text("class AgentError(Exception):\n    pass\n")
        (agent / "ota_mode.py").write_text(FAKE_MODE)
    return check_micropython("try:\n" + "".join("    " + line + "\n" for line in source.splitlines())
                             + "except SystemExit:\n    pass\n", path=[lib], env=env, cwd=root)


@pytest.mark.micropython
def test_main_counts_crashes_and_starts_safe_mode_from_the_fourth(tmp_path):
    app = tmp_path / "app"
    (app / "a").mkdir(parents=True)
    (app / "active").write_text("a")
    for count in range(1, 5):
        out = _main(tmp_path, {"AGENT": "crash"}, _CRASHES=4, _PAUSE=0)
        assert "agent False" in out and "reset" in out and (app / "crashes").read_text() == str(count)
    out = _main(tmp_path, {"AGENT": "crash"}, _PAUSE=0)
    assert "agent True" in out and "safe mode after 4 crashes" in out
    # up for _UP_S: not a crash loop any more (but safe mode keeps its count until an update or a power-on)
    (app / "crashes").write_text("2")
    _main(tmp_path, {"RUN_S": "0.5"}, _UP_S=0.1)
    assert not (app / "crashes").exists()


@pytest.mark.micropython
def test_main_marks_a_trial_that_never_confirms_and_resets(tmp_path):
    app = tmp_path / "app"
    (app / "b").mkdir(parents=True)
    (app / "active").write_text("b")
    (app / "trial").write_text("b a 1 77 2.0.0")
    out = _main(tmp_path, {"RUN_S": "2"}, _UP_S=0.1, _TRIAL_S=0.3)
    assert "reset" in out and (app / "trial").read_text() == "b a expired 77 2.0.0"
    (app / "trial").write_text("b a 1 77 2.0.0")
    out = _main(tmp_path, {"AGENT": "crash"}, _PAUSE=1)  # on trial: a reset, uncounted (boot.py counts)
    assert "resetting in 1 s" in out and not (app / "crashes").exists()


@pytest.mark.micropython
def test_main_runs_update_mode_instead_of_the_agent_then_restarts(tmp_path):
    app = tmp_path / "app"
    (app / "a").mkdir(parents=True)
    (app / "active").write_text("a")
    (app / "step").write_text("update")
    out = _main(tmp_path, {})
    assert "update mode" in out and "agent" not in out.replace("agent/", "") and "reset" in out
    assert not (app / "step").exists()
