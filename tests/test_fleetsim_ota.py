"""fleet-sim's OTA without a broker: a simulated device's offers, its update mode's pulls and checks against
a release signed here, resume after a cut, and what the report counts."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fleet.ota.store import compress
from protocols import manifest as mf
from protocols.messages import decode, encode
from protocols.ota import CHUNK, WINDOW, Chunk, OtaOffer
from tests.test_fleetsim import FakeConn, online
from tools.fleetsim import device as simdevice
from tools.fleetsim import items, ota, report
from tools.fleetsim import session as simsession
from tools.fleetsim import update as simupdate
from tools.fleetsim.context import Context, Settings
from tools.fleetsim.firmware import Catalogue, Firmware

CID = 9
FILES = {"agent/a.mpy": b"a" * 300, "agent/b.mpy": random.Random(1).randbytes(5000), "trust.cbor": b"t" * 35}
OLD_B = b"old b"


def key(seed: int) -> tuple[Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class Release:
    """Release 1.1.0 (seq 1) of FILES, signed with key 1: its envelope and stored files, as the fleet
    serves them."""

    def __init__(self, signer: int = 1, seq: int = 1) -> None:
        private, public = key(signer)
        packed = {path: compress(data) for path, data in FILES.items()}
        entries = [[p, len(d), hashlib.sha256(d).digest(), len(packed[p])] for p, d in sorted(FILES.items())]
        self.manifest = mf.Manifest(seq, "1.1.0", "emulator", "6.3", entries)
        body = self.manifest.to_bytes()
        self.envelope = mf.signed(body, mf.key_id(public), private.sign(body))
        self.stored = [self.envelope] + [packed[e[0]] for e in self.manifest.files]

    def offer(self, cid: int = CID, **changes) -> OtaOffer:
        fields = dict(cid=cid, firmware="1.1.0", release=self.manifest.seq, size=len(self.envelope),
                      sha256=hashlib.sha256(self.envelope).digest())
        fields.update(changes)
        return OtaOffer(**fields)


def running(**changes) -> Firmware:
    """1.0.0 (release 0): a.mpy and trust.cbor as in FILES, an older b.mpy; trusts key 1."""
    files = {p: hashlib.sha256(OLD_B if p == "agent/b.mpy" else d).digest() for p, d in FILES.items()}
    fields = dict(version="1.0.0", release=0, board="emulator", mpy="6.3", files=files, trust=[key(1)[1]])
    fields.update(changes)
    return Firmware(**fields)


@pytest.fixture
def sim(event_loop_free):
    """make(**firmware changes) -> an online device running `running()` (its restarts are not run)."""
    loop = event_loop_free

    def make(behaviour: int = simupdate.WORKS, **changes):
        ctx = Context(Settings(scenario="rainstorm"), loop, 1_800_000_000.0, loop.time(), 5)
        ctx.catalogue = Catalogue(running(**changes))
        ctx.spawn = lambda coro: coro.close()  # type: ignore[method-assign]  # restarts are not run here
        dev = simdevice.SimDevice(ctx, {"id": "sim-x-1", "kind": "water-level"}, behaviour=behaviour)
        return dev, online(dev)

    return make


@pytest.fixture
def event_loop_free():
    import asyncio

    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def in_update_mode(dev, offer: OtaOffer) -> list:
    """Put `dev` in update mode for `offer`; the list receives the update's end (None: staged)."""
    ended: list = []
    dev.ota = ota.OtaSide()
    dev.ledger.ota_entry(dev.firmware.version)
    dev.mode = simdevice.UPDATE_MODE
    dev.ota.update = simupdate.Update(dev, offer, ended.append)
    return ended


def sent(conn: FakeConn, kind: str) -> list:
    return [decode(t, p) for t, p, *_ in conn.published() if t.endswith("/" + kind)]


def serve(dev, conn: FakeConn, stored: list[bytes], stop_after: int | None = None) -> tuple[list, list]:
    """Answer the device's pulls with chunks of `stored` (as fleet/ota/server.py does) until it pulls no
    more: (pulls, progress reports). With `stop_after`, the connection delivers that many chunks only."""
    pulls, reports, delivered = [], [], 0
    while True:
        messages = [decode(t, p) for t, p, *_ in conn.published()]
        reports += [m for m in messages if type(m).__name__ == "OtaProgress"]
        new = [m for m in messages if type(m).__name__ == "Pull"]
        if not new:
            return pulls, reports
        pulls += new
        for pull in new:
            data, offset = stored[pull.index], pull.offset
            for _ in range(pull.count):
                if conn.transport is None or (stop_after is not None and delivered >= stop_after):
                    break
                piece = data[offset:offset + CHUNK]
                dev.on_command("cmd/city/sim-x-1/chunk", encode(Chunk(pull.cid, pull.index, offset, piece, len(data))))
                delivered += 1
                offset += len(piece)


def states(reports: list) -> list[tuple[int, int | None, str | None]]:
    return [(r.state, r.percent, r.reason) for r in reports]


# ---- update mode ----

def test_update_mode_pulls_only_the_files_that_differ_checks_them_and_stages(sim):
    release = Release()
    dev, conn = sim()
    ended = in_update_mode(dev, release.offer())
    dev.ota.update.session_up()
    pulls, reports = serve(dev, conn, release.stored)
    b = [e[0] for e in release.manifest.files].index("agent/b.mpy") + 1
    assert [(p.index, p.offset, p.count) for p in pulls] == [
        (0, 0, 1), (b, 0, WINDOW), (b, WINDOW * CHUNK, (len(release.stored[b]) - WINDOW * CHUNK + CHUNK - 1) // CHUNK)]
    assert all(p.cid == CID and p.boot == dev.boot for p in pulls)
    todo = 1 + len(release.stored[b])  # as agent/ota_fetch.py counts: every 10 % of the files' bytes
    assert states(reports) == [(2, None, None), (1, WINDOW * CHUNK * 100 // todo, None),
                               (1, (todo - 1) * 100 // todo, None), (3, None, None)]
    assert ended == [None] and dev.ota.update.manifest.version == "1.1.0"
    assert dev.ledger.ota.received == len(release.envelope) + len(release.stored[b])  # each byte once
    assert dev.ledger.ota.pulls == 3 and dev.ota.update.envelope is None and dev.ota.update.inflater is None


def tampered(stored: list[bytes]) -> list[bytes]:
    out = list(stored)
    b = bytearray(out[2])
    b[len(b) // 2] ^= 0xFF
    out[2] = bytes(b)
    return out


@pytest.mark.parametrize("case, reason", [
    ("untrusted", "UNTRUSTED_KEY"), ("forged", "BAD_SIGNATURE"), ("older", "DOWNGRADE"), ("abi", "ABI_MISMATCH"),
    ("board", "BOARD_MISMATCH"), ("flash", "NO_SPACE"), ("tampered", "HASH_MISMATCH"),
    ("envelope", "TRANSFER_FAILED")])
def test_each_check_refuses_with_its_reason(sim, case, reason):
    release = Release()
    offer = release.offer()
    stored = release.stored
    firmware = {"untrusted": dict(trust=[key(2)[1]]), "older": dict(release=1), "abi": dict(mpy="6.2"),
                "board": dict(board="esp32")}.get(case, {})
    if case == "forged":  # signed by key 2 under key 1's id
        body = release.manifest.to_bytes()
        forged = mf.signed(body, mf.key_id(key(1)[1]), key(2)[0].sign(body))
        stored = [forged] + stored[1:]
        offer = release.offer(size=len(forged), sha256=hashlib.sha256(forged).digest())
    elif case == "tampered":
        stored = tampered(stored)
    elif case == "envelope":
        offer = release.offer(sha256=bytes(32))
    dev, conn = sim(simupdate.NO_SPACE if case == "flash" else simupdate.WORKS, **firmware)
    ended = in_update_mode(dev, offer)
    dev.ota.update.session_up()
    _pulls, reports = serve(dev, conn, stored)
    assert states(reports)[0] == (2, None, None) and states(reports)[-1] == (5, None, reason)
    assert ended == [reason]


def test_a_cut_link_resumes_from_the_last_good_offset(sim):
    release = Release()
    dev, conn = sim(simupdate.CUTS)
    in_update_mode(dev, release.offer())
    update = dev.ota.update
    update.session_up()
    pulls, _ = serve(dev, conn, release.stored)  # the device cuts its link 3 chunks into b.mpy
    b = [e[0] for e in release.manifest.files].index("agent/b.mpy") + 1
    assert conn.transport is None and dev.state == simsession.OUTAGE and dev.ledger.ota.cuts == 1
    assert (update.index, update.offset) == (b, simupdate.CUT_AFTER)
    dev.on_lost(conn)
    assert dev.ledger.boot(dev.boot).wills == [] and dev.ledger.outages == 1  # no will: none was registered here
    conn = online(dev)
    dev.ledger.connects += 1  # a new session: its offer comes again, the window is pulled again at once
    update.session_up()
    update.offer_again(release.offer())  # the retained offer on the same session: no second pull
    stale = release.stored[b][:CHUNK]  # a chunk of the window before the cut, late: dropped
    dev.on_command("cmd/city/sim-x-1/chunk", encode(Chunk(CID, b, 0, stale, len(release.stored[b]))))
    more, reports = serve(dev, conn, release.stored)
    assert [(p.index, p.offset) for p in more][0] == (b, simupdate.CUT_AFTER)
    assert states(reports)[-1] == (3, None, None)
    assert dev.ledger.ota.received == len(release.envelope) + len(release.stored[b])
    assert len(pulls) + len(more) == dev.ledger.ota.pulls


def test_a_window_that_does_not_come_is_pulled_again_then_the_transfer_fails(sim):
    release = Release()
    dev, conn = sim()
    ended = in_update_mode(dev, release.offer())
    update = dev.ota.update
    update.session_up()
    for _ in range(simupdate.TRIES):
        update._stale(0)  # the timer: nothing came
    assert [p.offset for p in sent(conn, "pull")] == [0] * (simupdate.TRIES + 1) and ended == []
    update._stale(0)
    assert ended == ["TRANSFER_FAILED"] and states(sent(conn, "ota")) == [(5, None, "TRANSFER_FAILED")]


@pytest.mark.parametrize("payload", [b"", "cancel", "other"])
def test_in_update_mode_a_cancel_an_empty_offer_or_another_update_ends_it(sim, payload):
    release = Release()
    dev, conn = sim()
    ended = in_update_mode(dev, release.offer())
    dev.ota.update.session_up()
    if payload == "cancel":
        payload = encode(release.offer(cancel=True))
    elif payload == "other":
        payload = encode(release.offer(cid=CID + 1))
    dev.on_command("cmd/city/sim-x-1/ota", payload)
    assert ended == ["CANCELLED"] and states(sent(conn, "ota")) == [(5, None, "CANCELLED")]


def test_update_mode_reads_no_other_command(sim):
    from protocols.commands import Ping

    dev, conn = sim()
    in_update_mode(dev, Release().offer())
    dev.tick()
    dev.on_command("cmd/city/sim-x-1/ping", encode(Ping(7, 1)))
    assert conn.published() == [] and dev.ledger.commands == 0


# ---- the running agent ----

def test_an_offer_in_the_running_agent(sim):
    release = Release()
    dev, conn = sim()

    def offer(**changes) -> list:
        dev.on_command("cmd/city/sim-x-1/ota", encode(release.offer(**changes)))
        return states(sent(conn, "ota"))

    dev.firmware = running(release=1)
    assert offer(cid=1) == [(4, None, None)]  # the release it runs: done, not closed
    assert offer(cid=1) == [(4, None, None)]
    dev.firmware = running(release=2)
    assert offer(cid=2, release=1) == [(5, None, "DOWNGRADE")]
    assert offer(cid=2, release=1) == [(5, None, "DOWNGRADE")]  # closed: its outcome again
    assert offer(cid=2, release=1, cancel=True) == []
    dev.firmware = running()
    assert offer(cid=3, size=20000) == [(5, None, "BAD_MANIFEST")]
    assert offer(cid=4, cancel=True) == []
    assert offer() == [(1, 0, None)] and dev.ota.taken.cid == CID  # taken: downloading 0 %, then the restart
    assert offer() == []  # restarting: nothing more
    dev.on_command("cmd/city/sim-x-1/ota", b"")  # cleared: nothing
    entry = dev.ledger.ota.to_json()
    assert entry["offers"] == 9 and entry["cancels"] == 2 and entry["taken"] == [CID]
    assert entry["outcome"] == {"cid": 3, "state": "failed", "reason": "BAD_MANIFEST", "target": "1.1.0"}


def test_a_report_with_no_session_goes_to_the_outbox(sim):
    dev, conn = sim()
    dev.state = simsession.OFFLINE
    dev.firmware = running(release=1)
    dev.on_command("cmd/city/sim-x-1/ota", encode(Release().offer()))  # its own release: done
    assert [(item[0], item[3]) for item in dev.outbox] == [(items.OUTBOX, items.OTA)]


def test_after_the_restart_the_outcome_is_reported_then_repeated_to_its_offer(sim):
    release = Release()
    dev, conn = sim()
    dev.ota = ota.OtaSide()
    dev.ledger.ota_entry("1.1.0")
    dev.ota.settle = (CID, 6, "CRASHED", "1.1.0")  # boot.py went back
    dev.on_command("cmd/city/sim-x-1/ota", encode(release.offer()))  # not before the session settles it
    assert sent(conn, "ota") == []
    ota.on_session(dev)
    assert states(sent(conn, "ota")) == [(6, None, "CRASHED")]
    dev.on_command("cmd/city/sim-x-1/ota", encode(release.offer()))
    assert states(sent(conn, "ota")) == [(6, None, "CRASHED")]
    assert dev.ledger.ota.outcome == {"cid": CID, "state": "rolled_back", "reason": "CRASHED", "target": "1.1.0"}


def test_behaviours_follow_their_shares():
    settings = Settings(ota_rollback_share=0.2, ota_fail_share=0.1, ota_cut_share=0.3)
    rnd = random.Random(4)
    drawn = [ota.behaviour(rnd, settings) for _ in range(20000)]
    shares = [drawn.count(kind) / len(drawn) for kind in (simupdate.ROLLS_BACK, simupdate.NO_SPACE, simupdate.CUTS)]
    assert shares == pytest.approx([0.2, 0.1, 0.3], abs=0.015)
    assert {ota.behaviour(rnd, Settings()) for _ in range(100)} == {simupdate.WORKS}


def test_the_firmware_of_a_bundle(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    digest = hashlib.sha256(b"x").hexdigest()
    (bundle / "manifest.json").write_text(json.dumps({
        "format": 1, "version": "1.0.0", "board": "emulator", "mpy": "6.3",
        "files": [{"path": "agent/app.mpy", "size": 1, "sha256": digest}]}))
    (bundle / "trust.cbor").write_bytes(mf.trust_bytes([key(1)[1]]))
    firmware = Firmware.from_bundle(bundle)
    assert (firmware.version, firmware.release, firmware.board, firmware.mpy) == ("1.0.0", 0, "emulator", "6.3")
    assert firmware.files == {"agent/app.mpy": bytes.fromhex(digest)} and firmware.trust == [key(1)[1]]
    from fleet.errors import FleetError

    with pytest.raises(FleetError, match="not a bundle"):
        Firmware.from_bundle(tmp_path)


def test_the_report_counts_updates():
    ledger = report.DeviceLedger("water-level")
    entry = ledger.ota_entry("1.0.0")
    entry.offers, entry.taken, entry.pulls, entry.received = 2, [CID], 3, 5000
    entry.outcome = {"cid": CID, "state": "rolled_back", "reason": "CRASHED", "target": "1.1.0"}
    plain = report.DeviceLedger("water-level")
    totals = report.totals({"a": ledger.to_json(), "b": plain.to_json()})
    assert "ota" not in plain.to_json()
    assert (totals["ota_offered"], totals["ota_taken"], totals["ota_rolled_back"], totals["ota_done"],
            totals["ota_pulls"], totals["ota_received"]) == (1, 1, 1, 0, 3, 5000)


def test_cli_refuses_shares_over_one_and_a_folder_that_is_no_bundle(tmp_path, capsys):
    from tools.fleetsim.cli import main

    path = tmp_path / "devices.json"
    path.write_text(json.dumps({"fleet": "city", "broker": {"host": "127.0.0.1", "port": 1},
                                "devices": [{"id": "d1", "kind": "water-level"}]}))
    assert main(["run", "--devices", str(path), "--ota-rollback-share", "0.6", "--ota-cut-share", "0.5"]) == 1
    assert "add up to more than 1" in capsys.readouterr().err
    assert main(["run", "--devices", str(path), "--bundle", str(tmp_path)]) == 1
    assert "fleet-sim: %s is not a bundle" % tmp_path in capsys.readouterr().err
