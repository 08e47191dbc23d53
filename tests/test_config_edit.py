"""`fleet config --set` edits (fleet/config_edit.py): parsing, validation naming the bad key, the version
rule, the registry's JSON form, desired against reported, and what the agent makes of the result."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.config_check import validate as agent_validate
from agent.defaults import MEASURES, config_for
from fleet import config_edit
from fleet.config_edit import apply_sets, build, config_state, describe, next_version, parse_set
from fleet.errors import FleetError
from fleet.registry import open_registry
from protocols.messages import decode, encode

ROOT = Path(__file__).resolve().parents[1]


def test_keys_parse_into_their_path_and_text():
    assert parse_set("heartbeat=600") == (("heartbeat",), "600")
    assert parse_set(" sample.level = 10 ") == (("sample", "level"), "10")
    assert parse_set("calibration.level=1.0,-12") == (("calibration", "level"), "1.0,-12")
    assert parse_set("alarm.flood.raise=200") == (("alarm", "flood", "raise"), "200")
    for bad in ("heartbeat", "=5", "colour=red", "alarm.flood=1", "alarm.flood.colour=1", "sample=5",
                "sample.level.x=5", "alarm..raise=1"):
        with pytest.raises(FleetError):
            parse_set(bad)


def test_every_key_lands_in_the_wire_shape():
    doc = apply_sets({}, "water-level", ["heartbeat=600", "sample.level=10", "deadband.level=5",
                                         "calibration.level=1.0,-12", "alarm.flood.raise=300"])
    # An alarm the kind has by default starts from that default: only raise changed.
    assert doc == {5: 600, 4: {"level": 10}, 6: {"level": 5}, 7: {"level": [1.0, -12]},
                   3: {"flood": {0: "level", 1: 300, 2: 240, 3: 30, 4: 2}}}
    assert isinstance(doc[3]["flood"][1], int) and isinstance(doc[7]["level"][0], float)


def test_edits_start_from_the_desired_document_and_leave_it_untouched():
    current = {3: {"flood": {0: "level", 1: 300, 2: 260, 3: 5, 4: 2}}, 5: 600}
    doc = apply_sets(current, "water-level", ["alarm.flood.confirm=10", "sample.rise=30"])
    assert doc == {3: {"flood": {0: "level", 1: 300, 2: 260, 3: 10, 4: 2}}, 5: 600, 4: {"rise": 30}}
    assert current[3]["flood"][3] == 5


def test_a_new_alarm_needs_every_field():
    with pytest.raises(FleetError) as err:
        apply_sets({}, "water-level", ["alarm.surge.raise=500", "alarm.surge.clear=450"])
    assert str(err.value) == ("alarm.surge is new: also set alarm.surge.measure, alarm.surge.confirm, "
                              "alarm.surge.level")
    doc = apply_sets({}, "water-level", ["alarm.surge.measure=rise", "alarm.surge.raise=50", "alarm.surge.clear=20",
                                         "alarm.surge.confirm=0", "alarm.surge.level=1"])
    assert doc[3] == {"surge": {0: "rise", 1: 50, 2: 20, 3: 0, 4: 1}}


@pytest.mark.parametrize("sets, message", [
    (["alarm.flood.raise=260", "alarm.flood.clear=260"],
     "bad --set alarm.flood.raise alarm.flood.clear: raise and clear thresholds must differ (hysteresis)"),
    (["heartbeat=0"], "bad --set heartbeat: heartbeat must be at least 1 second"),
    (["heartbeat=1.5"], "bad --set heartbeat=1.5: a whole number is needed"),
    (["sample.level=90000"], "bad --set sample.level: sample[level] must be an integer 0..86400, not 90000"),
    (["deadband.level=-1"], "bad --set deadband.level: deadband[level] must not be negative"),
    (["calibration.level=2"], "bad --set calibration.level=2: give scale,offset, e.g. calibration.level=1.0,-12"),
    (["alarm.flood.level=3"], "bad --set alarm.flood.level: level must be one of (1, 2), not 3"),
    (["alarm.flood.confirm=-1"], "bad --set alarm.flood.confirm: confirm must be an integer 0..86400, not -1"),
    (["alarm.flood.raise=high"], "bad --set alarm.flood.raise=high: not a number"),
    (["alarm.flood.raise=inf"], "bad --set alarm.flood.raise=inf: not a number"),
    (["sample.tilt=5"], "bad --set sample.tilt: a water-level device measures level, rise, not 'tilt'"),
    (["alarm.flood.measure=load"], "bad --set alarm.flood.measure: a water-level device measures level, rise, "
                                   "not 'load'"),
    (["alarm.Flood.raise=1"], "bad alarm name in 'alarm.Flood.raise': 1-32 of a-z 0-9 _ - starting with a letter "
                              "or digit"),
])
def test_bad_values_are_one_line_errors_naming_the_key(sets, message):
    with pytest.raises(FleetError) as err:
        apply_sets({}, "water-level", sets)
    assert str(err.value) == message


def test_one_threshold_may_not_silently_turn_an_alarm_around():
    # flood raises at 270 and clears at 240: raise=200 alone would make it a low-water alarm.
    with pytest.raises(FleetError) as err:
        apply_sets({}, "water-level", ["alarm.flood.raise=200"])
    assert str(err.value) == ("bad --set alarm.flood.raise: raise 200 below clear 240 makes flood watch low values, "
                              "not high ones; set both alarm.flood.raise and alarm.flood.clear to move or turn it")
    moved = apply_sets({}, "water-level", ["alarm.flood.raise=200", "alarm.flood.clear=180"])[3]["flood"]
    assert (moved[1], moved[2]) == (200, 180)
    # Checked after all edits: on the way raise may equal clear (240 = 240) without an error.
    assert apply_sets({}, "water-level", ["alarm.flood.raise=240", "alarm.flood.clear=200"])[3]["flood"][2] == 200


def test_the_version_is_one_above_desired_and_every_report():
    assert next_version(None) == 1
    assert next_version(0, None, 0) == 1
    assert next_version(4, 2, None) == 5
    assert next_version(4, 7, 3) == 8  # the device runs a version the fleet did not record: never reuse it


def test_the_registry_form_round_trips_and_keeps_keys_as_strings():
    doc = apply_sets({}, "manhole-tilt", ["alarm.lift.raise=4.2", "calibration.tilt=1.0,-0.5", "heartbeat=300"])
    stored = config_edit.to_json(doc)
    assert stored["3"]["lift"] == {"0": "accel", "1": 4.2, "2": 8.8, "3": 0, "4": 2, "5": 60}
    assert set(stored) == {"3", "5", "7"}
    assert config_edit.from_json(stored) == doc
    assert config_edit.desired({"config": {"version": 3, "doc": stored}}) == (3, doc)
    assert config_edit.desired({"config": None}) == (0, {})


@pytest.mark.parametrize("kind", sorted(MEASURES))
def test_the_message_keeps_agent_alarm_keys_and_the_agent_accepts_it_whole(kind):
    names = sorted(config_for(kind)[3])
    sets = ["alarm.%s.confirm=7" % name for name in names] + ["heartbeat=120"]
    doc = apply_sets({}, kind, sets)
    data = encode(build(77, 5, doc))
    wire = decode("cmd/city/x/config", data)  # the protocol's reader accepts it
    assert (wire.cid, wire.version, wire.heartbeat) == (77, 5, 120)
    obj = wire.to_obj()
    from protocols.cbor_decode import loads

    raw = loads(data)
    for name in names:
        assert raw[3][name] == {**config_for(kind)[3][name], 3: 7}  # clear-confirm (key 5) kept
        assert obj[3][name][3] == 7
    clean, refused, reasons = agent_validate(raw, MEASURES[kind])
    assert (refused, reasons) == ([], []) and clean[2] == 5


def test_describe_gives_back_the_sets():
    sets = ["heartbeat=600", "sample.level=10", "deadband.level=5", "calibration.level=1.0,-12"]
    doc = apply_sets({}, "water-level", sets + ["alarm.flood.raise=300"])
    assert describe(doc) == sets + ["alarm.flood.measure=level", "alarm.flood.raise=300", "alarm.flood.clear=240",
                                    "alarm.flood.confirm=30", "alarm.flood.level=2"]
    assert apply_sets({}, "water-level", describe(doc)) == doc


def test_desired_against_reported_without_a_store(tmp_path):
    record = {"id": "wl-1", "config": None}
    assert config_state(record, home=tmp_path)["state"] == "defaults"
    sent = {"version": 5, "doc": {"5": 600}, "sent_at": "2025-01-31T12:00:00Z", "cid": 99}
    state = config_state({"id": "wl-1", "config": sent}, home=tmp_path)
    assert (state["desired"], state["reported"], state["state"]) == (5, None, "pending")
    applied = {**sent, "answer": {"cid": 99, "status": "applied", "reasons": [], "config": 5}}
    assert config_state({"id": "wl-1", "config": applied}, home=tmp_path)["state"] == "in force"
    refused = {**sent, "answer": {"cid": 99, "status": "refused", "reasons": ["bad_threshold:flood"], "config": 4}}
    state = config_state({"id": "wl-1", "config": refused}, home=tmp_path)
    assert (state["state"], state["reported"], state["reasons"]) == ("refused", 4, ["bad_threshold:flood"])
    assert not (tmp_path / "fleet.db").exists()  # looking never creates the store


def test_the_registry_keeps_a_desired_config_and_refuses_a_malformed_one(tmp_path):
    registry = open_registry(tmp_path)
    registry.add({"id": "wl-1", "kind": "water-level", "site": "Quay 3"})
    assert registry.get("wl-1")["config"] is None
    desired = {"version": 2, "doc": {"5": 600}, "sent_at": "2025-01-31T12:00:00Z", "cid": 7}
    assert registry.update("wl-1", config=desired)["config"] == desired
    for bad in ({"version": 0, "doc": {}}, {"doc": {}}, {"version": 1, "doc": []}, "v1"):
        with pytest.raises(FleetError):
            registry.update("wl-1", config=bad)
    assert registry.get("wl-1")["config"] == desired


def _fleet(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleet.cli.main", *args], capture_output=True, text=True,
                          cwd=ROOT, check=False, env={**os.environ, "FLEET_HOME": str(home)}, stdin=subprocess.DEVNULL)


def test_bad_input_fails_before_any_broker_is_needed(tmp_path):
    open_registry(tmp_path).add({"id": "wl-1", "kind": "water-level", "site": "Quay 3"})
    # No broker is configured for this home: a reachable broker is not what these fail on.
    bad = _fleet(tmp_path, "config", "wl-1", "--set", "alarm.flood.clear=270")
    assert (bad.returncode, bad.stdout) == (3, "")
    assert bad.stderr == ("fleet: bad --set alarm.flood.clear: raise and clear thresholds must differ "
                          "(hysteresis)\n")
    unknown = _fleet(tmp_path, "config", "wl-9", "--set", "heartbeat=60")
    assert unknown.returncode == 3 and unknown.stderr.startswith("fleet: no device 'wl-9' in the registry")
    assert open_registry(tmp_path).get("wl-1")["config"] is None
    shown = _fleet(tmp_path, "device", "show", "wl-1")
    assert shown.returncode == 0 and "firmware defaults (the fleet sent none), not reported" in shown.stdout


def test_desired_against_what_the_store_saw(tmp_path):
    from fleet.store import Batch, Inbound, open_store
    from protocols.ack import Ack
    from protocols.state import State

    store = open_store(home=tmp_path)  # the default store of the home, as `fleet ingest` makes it
    now = time.time()
    birth = State(4, 10, True, "1.4.2", 3, 1, "water")
    store.ingest(Batch([Inbound("wl-1", "state", 4, 10, now, birth)]))
    sent = {"version": 5, "doc": {"5": 600}, "sent_at": "2025-01-31T12:00:00Z", "cid": 99}
    record = {"id": "wl-1", "config": sent}
    state = config_state(record, home=tmp_path)
    assert (state["desired"], state["reported"], state["state"]) == (5, 3, "pending")
    ack = Ack(4, 11, 99, 1, ["bad_threshold:flood"], 5)  # asleep at `fleet config`: acked later, to the ingest
    store.ingest(Batch([Inbound("wl-1", "ack", 4, 11, now, ack)]))
    state = config_state(record, home=tmp_path)
    assert (state["reported"], state["state"], state["reasons"]) == (5, "refused", ["bad_threshold:flood"])
    store.ingest(Batch([Inbound("wl-1", "ack", 4, 12, now, Ack(4, 12, 100, 0, None, 6))]))
    assert config_state({"id": "wl-1", "config": {**sent, "version": 6, "cid": 100}}, home=tmp_path)["state"] == \
        "in force"
    store.close()
    assert config_state({"id": "wl-1", "config": sent}, f"sqlite:///{tmp_path}/fleet.db")["reported"] == 6
