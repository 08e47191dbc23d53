"""OTA campaigns without a broker: wave arithmetic, the abort threshold, the per-device state machine
(fleet/ota/campaign.py), selection, the campaign files and locks, and the store keeping a pull's key only."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.errors import FleetError
from fleet.ota import campaign as cp
from fleet.ota.campaign import DONE, DOWNLOADING, FAILED, ROLLED_BACK, STAGED, VERIFYING, Campaign

RELEASE = {"seq": 7, "version": "2.0.0", "size": 3991, "sha256": "00" * 32, "board": "emulator"}
T0 = 1_750_000_000.0
HOUR = 3600.0


def make(count=20, waves="1%,10%,50%,100%", max_failures="5%", min_devices=1, timeout_s=HOUR) -> Campaign:
    names = ["d%02d" % i for i in range(count)]
    return Campaign.create("c1", dict(RELEASE), names, cp.parse_waves(waves),
                           cp.parse_share(max_failures, "--max-failures"), min_devices, timeout_s, T0,
                           cids=list(range(100, 100 + count)))


def offered(actions):
    return sorted(device for what, device, _ in actions if what == "offer")


#: device state -> the progress state (protocols.ota) that reports it
REPORTS = {name: number for number, name in cp.FROM_PROGRESS.items()}


def report(campaign, device, state, boot=1, seq=None, reason=None, percent=None, now=T0 + 10):
    """`device` reports `state` (a device state name) about its own cid; seq grows with each call unless
    given."""
    dev = campaign.devices[device]
    if seq is None:
        seq = (dev["key"][1] + 1) if dev["key"] and dev["key"][0] == boot else 1
    return campaign.progress(device, dev["cid"], boot, seq, REPORTS[state], percent, reason, now)


def finish(campaign, devices, now=T0 + 10):
    actions = []
    for name in devices:
        actions += report(campaign, name, DONE, now=now)
    return actions


# ---- numbers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("count", "waves", "sizes"), [
    (20, "1%,10%,50%,100%", [1, 2, 10, 20]),
    (1000, "1%,10%,50%,100%", [10, 100, 500, 1000]),
    (1, "1%,10%,50%,100%", [1]),
    (3, "1%,10%,50%,100%", [1, 2, 3]),
    (7, "100%", [7]),
    (10, "0.5%,33.3%,100", [1, 4, 10]),
])
def test_wave_sizes_are_cumulative_and_each_wave_has_a_device(count, waves, sizes):
    assert cp.wave_sizes(count, cp.parse_waves(waves)) == sizes


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5000), st.lists(st.integers(1, 999), min_size=0, max_size=6, unique=True))
def test_wave_sizes_properties(count, tenths):
    shares = [Fraction(t, 1000) for t in sorted(tenths)] + [Fraction(1)]
    sizes = cp.wave_sizes(count, shares)
    assert sizes[-1] == count
    assert all(b > a for a, b in zip(sizes, sizes[1:], strict=False))  # each wave adds at least one device
    assert sizes[0] >= 1 and len(sizes) <= len(shares)
    for share, size in zip(shares, sizes, strict=False):
        assert size >= min(count, math.ceil(count * share))  # never fewer than the share asks for


@pytest.mark.parametrize("text", ["", "10%,5%,100%", "10%,50%", "0%,100%", "50%,50%,100%", "x", "150%", "-1%,100%"])
def test_bad_waves_are_refused_with_a_usage_error(text):
    with pytest.raises(FleetError) as caught:
        cp.parse_waves(text)
    assert caught.value.exit_code == 2 and "100%" in str(caught.value)


def test_shares_and_timeouts_parse():
    assert cp.parse_share("5%", "x") == Fraction(1, 20)
    assert cp.parse_share("12.5", "x") == Fraction(1, 8)
    assert cp.parse_timeout("30m") == 1800 and cp.parse_timeout("90") == 90 and cp.parse_timeout("1.5h") == 5400
    for bad in ("-1%", "101%", "five"):
        with pytest.raises(FleetError):
            cp.parse_share(bad, "--max-failures")
    for bad in ("0", "10 minutes", "-5m", ""):
        with pytest.raises(FleetError):
            cp.parse_timeout(bad)


@pytest.mark.parametrize(("failures", "tried", "share", "least", "aborts"), [
    (1, 1, "5%", 1, True),       # a failed canary
    (1, 1, "5%", 2, False),      # not enough devices have tried yet
    (1, 20, "5%", 1, False),     # exactly 5% is not more than 5%
    (2, 20, "5%", 1, True),
    (0, 50, "0%", 1, False),
    (1, 50, "0%", 1, True),
    (5, 5, "100%", 1, False),    # 100%: never
    (0, 0, "0%", 0, False),      # nobody tried
])
def test_abort_threshold(failures, tried, share, least, aborts):
    assert cp.should_abort(failures, tried, cp.parse_share(share, "x"), least) is aborts


# ---- the state machine -----------------------------------------------------------------------------

def test_a_campaign_runs_its_waves_in_order_and_ends_done():
    campaign = make()
    assert campaign.doc["sizes"] == [1, 2, 10, 20] and campaign.counts()["pending"] == 20
    seen: list[str] = []
    for wave, size in enumerate([1, 1, 8, 10]):
        actions = campaign.step(T0 + wave, {})
        started = offered(actions)
        assert len(started) == size and not set(started) & set(seen)
        assert all(campaign.devices[d]["wave"] == wave for d in started)
        assert campaign.step(T0 + wave, {}) == []  # no new wave while this one runs
        # all but the last finish: the next wave still waits
        for name in started[:-1]:
            assert report(campaign, name, DOWNLOADING, percent=50) == []
            assert report(campaign, name, DONE) == [("clear", name, campaign.devices[name]["cid"])]
        assert campaign.step(T0 + wave, {}) == []
        report(campaign, started[-1], DONE)
        seen += started
    assert campaign.step(T0 + 9, {}) == [] and campaign.state == cp.FINISHED
    assert campaign.counts()["done"] == 20 and campaign.tried() == (20, 0)
    assert campaign.step(T0 + 10, {}) == []


def test_rollbacks_abort_before_the_next_wave_and_later_devices_never_get_an_offer():
    campaign = make(count=10, waves="20%,100%", min_devices=2)
    first = offered(campaign.step(T0, {}))
    assert len(first) == 2
    report(campaign, first[0], STAGED)
    report(campaign, first[0], ROLLED_BACK, boot=2, reason="CRASHED")
    assert campaign.step(T0 + 1, {}) == []  # 1 tried: below --min-devices 2
    report(campaign, first[1], DOWNLOADING, percent=10)
    assert campaign.state == cp.RUNNING
    report(campaign, first[1], FAILED, reason="HASH_MISMATCH")
    actions = campaign.step(T0 + 2, {})
    assert campaign.state == cp.ABORTED and "2 of 2 devices failed" in campaign.doc["reason"]
    assert offered(actions) == []
    assert campaign.counts()["pending"] == 8
    assert campaign.step(T0 + 3, {}) == [] and campaign.devices[first[0]]["reason"] == "CRASHED"


def test_abort_cancels_and_clears_open_offers_and_leaves_staged_devices_alone():
    campaign = make(count=10, waves="50%,100%")
    first = offered(campaign.step(T0, {}))
    report(campaign, first[0], DOWNLOADING, percent=30)
    report(campaign, first[1], VERIFYING)
    report(campaign, first[2], STAGED)
    report(campaign, first[3], DONE)
    actions = campaign.abort("aborted by the operator", T0 + 5)
    for name in (first[0], first[1], first[4]):  # downloading, verifying, offered: cancelled
        assert ("cancel", name, campaign.devices[name]["cid"]) in actions
        assert ("clear", name, campaign.devices[name]["cid"]) in actions
        assert (campaign.devices[name]["state"], campaign.devices[name]["reason"]) == ("failed", "CANCELLED")
    assert [a for a in actions if a[1] == first[2]] == [("clear", first[2], campaign.devices[first[2]]["cid"])]
    assert campaign.devices[first[2]]["state"] == STAGED and not [a for a in actions if a[1] == first[3]]
    assert campaign.abort("again", T0 + 6) == [] and campaign.step(T0 + 7, {}) == []
    assert campaign.state == cp.ABORTED and campaign.doc["reason"] == "aborted by the operator"


def test_reports_after_an_abort_tell_what_the_devices_it_caught_did():
    # The abort assumes the devices it cancelled failed; a report that was on its way, or one the ingest
    # stores later (`fleet ota status` merges them), tells what they did instead.
    campaign = make(count=10, waves="50%,100%")
    first = offered(campaign.step(T0, {}))
    report(campaign, first[0], DOWNLOADING, percent=30, seq=1)
    report(campaign, first[1], STAGED, seq=1)
    campaign.abort("aborted by the operator", T0 + 5)
    assert (campaign.devices[first[2]]["state"], campaign.devices[first[2]]["reason"]) == (FAILED, "CANCELLED")
    report(campaign, first[2], DONE, seq=9)  # it had confirmed the release a moment before
    report(campaign, first[0], FAILED, reason="CANCELLED", seq=2)  # the cancel seen
    report(campaign, first[1], DONE, boot=2, seq=1)  # the staged one confirmed
    report(campaign, first[3], DOWNLOADING, percent=80, seq=5)  # in-flight news after the outcome: ignored
    assert [campaign.devices[n]["state"] for n in first[:4]] == [FAILED, DONE, DONE, FAILED]
    assert campaign.devices[first[3]]["reason"] == "CANCELLED" and campaign.state == cp.ABORTED


def test_a_device_that_rolled_back_is_never_done():
    campaign = make(count=4, waves="100%", max_failures="100%")
    a, b, c, d = offered(campaign.step(T0, {}))
    # done, then rolled back after crashes: rolled back
    report(campaign, a, DONE, boot=2, seq=1)
    report(campaign, a, ROLLED_BACK, boot=3, seq=1, reason="CRASHED")
    # rolled back first, then an older done arrives late: still rolled back
    report(campaign, b, ROLLED_BACK, boot=3, seq=1, reason="TRIAL_FAILED")
    report(campaign, b, DONE, boot=2, seq=9)
    # rolled back, then a newer done (a confused device): still rolled back
    report(campaign, c, ROLLED_BACK, boot=3, seq=1, reason="TRIAL_FAILED")
    report(campaign, c, DONE, boot=4, seq=1)
    # a rolled-back report with an older key than a done still wins
    report(campaign, d, DONE, boot=5, seq=1)
    report(campaign, d, ROLLED_BACK, boot=4, seq=3, reason="CRASHED")
    assert {n: campaign.devices[n]["state"] for n in (a, b, c, d)} == dict.fromkeys((a, b, c, d), ROLLED_BACK)
    assert campaign.tried() == (4, 4) and campaign.counts()["done"] == 0


def test_reports_apply_in_seq_order_not_arrival_order():
    campaign = make(count=1, waves="100%")
    [name] = offered(campaign.step(T0, {}))
    report(campaign, name, DONE, boot=2, seq=1)
    report(campaign, name, STAGED, boot=1, seq=40)  # from the outbox, after the reboot
    report(campaign, name, DOWNLOADING, boot=1, seq=30, percent=90)
    assert campaign.devices[name]["state"] == DONE and campaign.devices[name]["percent"] is None
    assert report(campaign, name, DONE, boot=2, seq=1) == []  # a duplicate


def test_reports_of_other_cids_and_devices_are_ignored():
    campaign = make(count=2, waves="100%")
    a, b = offered(campaign.step(T0, {}))
    assert campaign.progress(a, 99999, 1, 1, 4, None, None, T0) == []
    assert campaign.progress("stranger", 100, 1, 1, 4, None, None, T0) == []
    assert campaign.progress(a, campaign.devices[a]["cid"], 1, 1, 9, None, None, T0) == []  # unknown state
    assert campaign.counts()["offered"] == 2


def test_first_pull_marks_downloading():
    campaign = make(count=1, waves="100%")
    [name] = offered(campaign.step(T0, {}))
    campaign.pulled(name, 12345)
    assert campaign.devices[name]["state"] == cp.OFFERED
    campaign.pulled(name, campaign.devices[name]["cid"])
    assert campaign.devices[name]["state"] == DOWNLOADING


def test_devices_time_out_from_their_offer():
    campaign = make(count=3, waves="100%", max_failures="100%", timeout_s=600)
    a, b, c = offered(campaign.step(T0, {}))
    report(campaign, b, STAGED)
    report(campaign, c, DONE)
    assert campaign.step(T0 + 599, {}) == []
    actions = campaign.step(T0 + 600, {})
    ca, cb = campaign.devices[a]["cid"], campaign.devices[b]["cid"]
    assert actions == [("cancel", a, ca), ("clear", a, ca), ("clear", b, cb)]  # staged: too late to cancel
    assert campaign.devices[a]["state"] == campaign.devices[b]["state"] == cp.TIMED_OUT
    assert campaign.state == cp.FINISHED and campaign.tried() == (3, 2)
    # the echo of our own cancel keeps it timed out; a late real outcome is the truth
    report(campaign, a, FAILED, reason="CANCELLED")
    report(campaign, b, DONE, boot=2)
    assert (campaign.devices[a]["state"], campaign.devices[b]["state"]) == (cp.TIMED_OUT, DONE)


def test_timeouts_count_as_failures():
    campaign = make(count=10, waves="10%,100%", timeout_s=60)
    offered(campaign.step(T0, {}))
    campaign.step(T0 + 60, {})
    assert campaign.state == cp.ABORTED and "timed out 1" in campaign.doc["reason"]


def test_pause_holds_the_next_wave_until_resume():
    campaign = make(count=4, waves="50%,100%")
    first = offered(campaign.step(T0, {}))
    campaign.pause()
    finish(campaign, first)
    assert campaign.step(T0 + 1, {}) == [] and campaign.state == cp.PAUSED and campaign.doc["wave"] == 0
    campaign.resume()
    second = offered(campaign.step(T0 + 2, {}))
    assert len(second) == 2 and not set(second) & set(first)
    finish(campaign, second)
    campaign.pause()  # a paused campaign whose last wave is over is done
    campaign.step(T0 + 3, {})
    assert campaign.state == cp.FINISHED


def test_devices_already_running_the_release_are_done_and_not_offered():
    campaign = make(count=4, waves="50%,100%", max_failures="0%")
    running = {name: "2.0.0" for name in campaign.devices}
    running["d00"] = "1.0.0"
    actions = campaign.step(T0, running)
    assert offered(actions) == ["d00"]
    skipped = [n for n, d in campaign.devices.items() if d["skipped"]]
    assert len(skipped) == 3 and all(campaign.devices[n]["state"] == DONE for n in skipped)
    assert campaign.devices[skipped[0]]["note"] == "already running 2.0.0"
    report(campaign, "d00", FAILED, reason="NO_SPACE")
    campaign.step(T0 + 1, running)
    # one failure of one device that tried: above 0%; the skipped ones did not try
    assert campaign.state == cp.ABORTED and campaign.doc["reason"].startswith("1 of 1 devices failed")


def test_the_document_survives_json():
    campaign = make(count=5, waves="40%,100%")
    first = offered(campaign.step(T0, {}))
    report(campaign, first[0], DONE)
    again = Campaign(json.loads(json.dumps(campaign.doc)))
    report(again, first[1], DONE)
    assert report(again, first[0], STAGED, seq=1) == []
    assert len(offered(again.step(T0 + 1, {}))) == 3


# ---- selection ------------------------------------------------------------------------------------

RECORDS = [
    {"id": "wl-1", "kind": "water-level", "site": "harbour", "state": "active", "board": "emulator"},
    {"id": "wl-2", "kind": "water-level", "site": "market", "state": "active", "board": None},
    {"id": "wl-3", "kind": "water-level", "site": "harbour", "state": "retired", "board": "emulator"},
    {"id": "wl-4", "kind": "water-level", "site": "harbour", "state": "active", "board": "esp32"},
    {"id": "mh-1", "kind": "manhole-tilt", "site": "harbour", "state": "pending-selftest", "board": "emulator"},
]


@pytest.mark.parametrize(("select", "chosen"), [
    ("", ["mh-1", "wl-1", "wl-2"]),
    ("kind=water-level", ["wl-1", "wl-2"]),
    ("kind=water-level,site=harbour", ["wl-1"]),
    ("site=harbour,site=market", ["mh-1", "wl-1", "wl-2"]),
    ("id=wl-*", ["wl-1", "wl-2"]),
    ("state=retired", ["wl-3"]),
    ("kind=wind-load", []),
])
def test_selection_from_the_registry(select, chosen):
    assert cp.select_devices(RECORDS, cp.parse_select(select), "emulator")[0] == chosen


def test_devices_of_another_board_are_left_out():
    assert cp.select_devices(RECORDS, {}, "emulator")[1] == ["wl-4"]
    assert cp.select_devices(RECORDS, {}, "esp32") == (["wl-2", "wl-4"], ["mh-1", "wl-1"])


@pytest.mark.parametrize("text", ["kind", "colour=red", "kind=", "=x"])
def test_bad_selections_name_the_keys(text):
    with pytest.raises(FleetError, match="KEY=VALUE"):
        cp.parse_select(text)


# ---- files, locks, control ---------------------------------------------------------------------------

def test_campaign_files_and_the_one_rollout_lock(tmp_path):
    folder = cp.campaigns_dir(tmp_path)
    with pytest.raises(FleetError, match="no campaigns yet"):
        cp.load(None, tmp_path)
    campaign = make(count=3)
    cp.save(campaign, folder)
    assert cp.load(None, tmp_path).doc == campaign.doc and cp.campaign_ids(folder) == ["c1"]
    with pytest.raises(FleetError, match="no campaign c9"):
        cp.load("c9", tmp_path)
    with pytest.raises(FleetError, match="bad campaign id"):
        cp.load("../x", tmp_path)
    assert cp.running_rollout(tmp_path) is None
    with cp.RolloutLock(folder) as lock:
        lock.claim("c1")
        assert cp.running_rollout(tmp_path) == "c1"
        with pytest.raises(FleetError, match=r"a rollout is running \(campaign c1\)"):
            cp.RolloutLock(folder).__enter__()
        with pytest.raises(FleetError, match="already ended"):
            done = make(count=1, waves="100%")
            done.doc.update(id="c2", state=cp.ABORTED)
            cp.save(done, folder)
            cp.control("c2", "pause", home=tmp_path)
    assert cp.running_rollout(tmp_path) is None
    with pytest.raises(FleetError, match="no running rollout"):
        cp.control("c1", "pause", home=tmp_path)


# ---- the store keeps only a pull's key ---------------------------------------------------------------

def test_the_store_keeps_a_pull_as_a_dedupe_key_only(tmp_path):
    from fleet.ingest.decode import decode
    from fleet.store import Batch, open_store
    from protocols import up_status

    store = open_store("sqlite:///%s" % (tmp_path / "fleet.db"))
    try:
        topic = "dt/city/wl-1/"
        got = [decode(topic + "ota", up_status.ota_progress(1, 1, 5, 1, 0), T0, "city"),
               decode(topic + "pull", up_status.pull(1, 2, 5, 0, 0, 8), T0, "city"),
               decode(topic + "pull", up_status.pull(1, 3, 5, 0, 4096, 8), T0, "city"),
               decode(topic + "pull", up_status.pull(1, 3, 5, 0, 4096, 8), T0, "city"),  # a resend
               decode(topic + "ota", up_status.ota_progress(1, 4, 5, 4), T0, "city")]
        result = store.ingest(Batch(got))
        assert (result.stored, result.duplicates, result.quarantined) == (4, 1, 0)
        assert store.gaps() == []
        assert [row["seq"] for row in store.ota("wl-1")] == [1, 4]
        assert store.acks("wl-1") == [] and store.readings("wl-1") == []
    finally:
        store.close()


def test_status_reads_later_reports_from_the_store_and_never_shows_a_rollback_as_done(tmp_path, monkeypatch,
                                                                                        capsys):
    """After the rollout ended, the ingest stored more: a device that was done rolled back (it crashed
    after confirming). `fleet ota status` shows that, from the store the ingest writes."""
    from fleet.cli.main import main
    from fleet.ingest.decode import decode
    from fleet.store import Batch, open_store
    from protocols import up_status

    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    campaign = make(count=2, waves="100%", max_failures="100%")
    a, b = offered(campaign.step(T0, {}))
    report(campaign, a, DONE, boot=2, seq=1)
    report(campaign, b, DONE, boot=2, seq=1)
    campaign.step(T0 + 1, {})
    assert campaign.state == cp.FINISHED
    cp.save(campaign, cp.campaigns_dir(tmp_path))
    store = open_store("sqlite:///%s" % (tmp_path / "fleet.db"))
    cid = campaign.devices[a]["cid"]
    rolled_back = up_status.ota_progress(3, 1, cid, 6, None, "CRASHED")
    store.ingest(Batch([decode("dt/city/%s/ota" % a, up_status.ota_progress(2, 1, cid, 4), T0, "city"),
                        decode("dt/city/%s/ota" % a, rolled_back, T0, "city")]))
    store.close()
    assert main(["ota", "status", "--json"]) == 0
    rows = {row["device"]: row for row in json.loads(capsys.readouterr().out)["devices"]}
    assert (rows[a]["state"], rows[a]["reason"], rows[b]["state"]) == ("rolled_back", "CRASHED", "done")
    assert main(["ota", "status", "c1"]) == 0
    out = capsys.readouterr().out
    assert "campaign c1: done, release 7 (2.0.0), 2 devices" in out and "rolled_back" in out and "CRASHED" in out
    assert main(["ota", "status", "c7"]) == 3
    assert "fleet: no campaign c7" in capsys.readouterr().err
