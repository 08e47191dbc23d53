"""fleet.ingest.thresholds: the fleet's own alarm check over reported readings (SPEC.md "Config" key 3)."""

from __future__ import annotations

import itertools

import pytest

from fleet.ingest.thresholds import Thresholds, effective_config, rules
from fleet.store.model import AlarmRow, FleetAlarm, Inbound, Reading
from protocols.state import State

T0 = 1_800_000_000.0
_seq = itertools.count(1)


def pack(device: str, *readings: tuple[str, float, object]) -> Inbound:
    """A telemetry Inbound of (name, time, value) readings."""
    seq = next(_seq)
    rows = [Reading(device, name, time, value, None, 1, seq, time) for name, time, value in readings]
    return Inbound(device, "telemetry", 1, seq, max(t for _n, t, _v in readings), None, rows)


def feed(checker: Thresholds, device: str, name: str, *points: tuple[float, object]) -> list[FleetAlarm]:
    """One message per (seconds after T0, value); every transition found."""
    out: list[FleetAlarm] = []
    for offset, value in points:
        out += checker.check(pack(device, (name, T0 + offset, value)))
    return out


def brief(alarms: list[FleetAlarm]) -> list[tuple]:
    return [(a.alarm, a.state, a.level, a.value, a.threshold, a.since - T0, a.time - T0) for a in alarms]


def registry(device: str, kind: str, doc: dict | None = None) -> dict:
    return {"id": device, "kind": kind, "config": {"version": 2, "doc": doc, "sent_at": "x"} if doc else None}


@pytest.fixture
def checker() -> Thresholds:
    made = Thresholds()
    made.set_devices([registry("wl1", "water-level"), registry("bb1", "wind-load"), registry("mh1", "manhole-tilt")])
    return made


def test_raise_needs_the_confirm_time_past_the_threshold(checker):
    # water-level flood_warn: raise 150 mm, confirm 30 s, level 1 (agent/defaults.py)
    assert feed(checker, "wl1", "level", (0, 100), (10, 160), (25, 165)) == []
    # confirmed at 10 + 30 s by the value held since the report at 25 s
    assert brief(feed(checker, "wl1", "level", (41, 170))) == [("flood_warn", 1, 1, 165, 150, 10, 40)]


def test_a_dip_restarts_the_run(checker):
    assert feed(checker, "wl1", "level", (0, 160), (20, 140), (25, 160), (50, 165)) == []
    assert brief(feed(checker, "wl1", "level", (55, 166))) == [("flood_warn", 1, 1, 165, 150, 25, 55)]


def test_value_is_held_until_the_next_report(checker):
    # reported once at 160, then silent (inside the deadband) until the heartbeat: raised at since + confirm
    assert feed(checker, "wl1", "level", (0, 160)) == []
    assert brief(feed(checker, "wl1", "level", (900, 160))) == [("flood_warn", 1, 1, 160, 150, 0, 30)]


def test_time_passing_confirms_a_held_value_without_a_new_report(checker):
    assert feed(checker, "wl1", "level", (0, 160)) == []
    assert checker.tick(T0 + 29) == []
    assert brief(checker.tick(T0 + 31)) == [("flood_warn", 1, 1, 160, 150, 0, 30)]
    assert feed(checker, "wl1", "level", (40, 100)) == []  # below the clear level (120) from 40 s
    assert brief(checker.tick(T0 + 75)) == [("flood_warn", 0, 1, 100, 120, 40, 70)]
    assert checker.tick(T0 + 500) == []


def test_switched_off_it_checks_nothing():
    made = Thresholds(enabled=False)
    made.set_devices([registry("wl1", "water-level")])
    assert feed(made, "wl1", "level", (0, 400), (100, 400)) == [] and made.tick(T0 + 200) == []


def test_silence_past_two_heartbeats_confirms_nothing():
    made = Thresholds()
    made.set_devices([registry("wl1", "water-level", {3: {"flood_warn": {0: "level", 1: 150, 2: 120, 3: 60, 4: 1}},
                                                        5: 20})])
    assert feed(made, "wl1", "level", (0, 160)) == []
    assert made.tick(T0 + 3600) == []  # held for 40 s at most: a stale node's silence says nothing


def test_a_report_of_another_measure_shows_the_held_value_lasted(checker):
    # wind-load load_warn: raise 3000 N, confirm 3 s; the next pack has only the gust
    assert checker.check(pack("bb1", ("load", T0, 3100))) == []
    assert brief(checker.check(pack("bb1", ("gust", T0 + 5, 10.0)))) == [("load_warn", 1, 1, 3100, 3000, 0, 3)]


def test_clear_has_hysteresis_and_its_own_confirm(checker):
    feed(checker, "wl1", "level", (0, 160), (30, 160))
    assert feed(checker, "wl1", "level", (40, 130), (100, 130)) == []  # below raise, above clear (120)
    assert feed(checker, "wl1", "level", (110, 110)) == []
    assert brief(feed(checker, "wl1", "level", (140, 115))) == [("flood_warn", 0, 1, 110, 120, 110, 140)]


def test_levels_are_separate_alarms(checker):
    got = feed(checker, "wl1", "level", (0, 300), (30, 300))
    assert sorted(brief(got)) == [("flood", 1, 2, 300, 270, 0, 30), ("flood_warn", 1, 1, 300, 150, 0, 30)]


def test_key_5_clear_confirm(checker):
    # wind-load storm: gust raise 24.5 m/s at once (confirm 0), clear 20.8 after 60 s (key 5)
    assert brief(feed(checker, "bb1", "gust", (0, 25.0))) == [("storm", 1, 2, 25.0, 24.5, 0, 0)]
    assert feed(checker, "bb1", "gust", (10, 20.0), (50, 20.0)) == []
    assert brief(feed(checker, "bb1", "gust", (70, 19.0))) == [("storm", 0, 2, 20.0, 20.8, 10, 70)]


def test_wire_units(checker):
    # manhole tilt in deg: 15 raise, 12 clear, 10 s confirm
    assert brief(feed(checker, "mh1", "tilt", (0, 16.0), (10, 16.5))) == [("tilt", 1, 2, 16.0, 15, 0, 10)]


def test_desired_config_overrides_the_defaults_by_name():
    made = Thresholds()
    doc = {"3": {"flood_warn": {"0": "level", "1": 200, "2": 180, "3": 0, "4": 1},
                 "dry": {"0": "level", "1": 5, "2": 20, "3": 0, "4": 1}}}
    made.set_devices([registry("wl1", "water-level", doc)])
    assert feed(made, "wl1", "level", (0, 190)) == []
    assert brief(feed(made, "wl1", "level", (1, 200))) == [("flood_warn", 1, 1, 200, 200, 1, 1)]
    # a low-value alarm (raise < clear): raised at or below 5, cleared at or above 20
    assert brief(feed(made, "wl1", "level", (2, 4))) == [("flood_warn", 0, 1, 4, 180, 2, 2), ("dry", 1, 1, 4, 5, 2, 2)]
    assert brief(feed(made, "wl1", "level", (3, 21))) == [("dry", 0, 1, 21, 20, 3, 3)]


def test_config_change_keeps_the_state():
    made = Thresholds()
    made.set_devices([registry("wl1", "water-level")])
    feed(made, "wl1", "level", (0, 160), (30, 160))  # flood_warn raised
    doc = {"3": {"flood_warn": {"0": "level", "1": 400, "2": 350, "3": 0, "4": 1}}}
    made.set_devices([registry("wl1", "water-level", doc)])
    assert brief(feed(made, "wl1", "level", (40, 300))) == [("flood_warn", 0, 1, 300, 350, 40, 40)]


def test_unknown_device_is_not_checked_until_its_birth_names_the_kind():
    made = Thresholds()
    assert feed(made, "wl9", "level", (0, 300), (30, 300)) == []
    birth = Inbound("wl9", "state", 1, 0, T0, State(1, 0, True, "1.0", 0, 1, "water"))
    assert made.check(birth) == []
    assert brief(feed(made, "wl9", "level", (40, 160), (70, 160))) == [("flood_warn", 1, 1, 160, 150, 40, 70)]


def test_seeded_open_fleet_alarm_does_not_raise_again_and_clears():
    made = Thresholds()
    made.set_devices([registry("wl1", "water-level")])
    row = AlarmRow(7, "wl1", "flood_warn", 1, "fleet", T0 - 500, 160, 150, None, None, None, None, None, None)
    device_row = AlarmRow(8, "wl1", "flood", 2, "device", T0 - 500, 300, 270, None, None, None, None, None, None)
    made.seed([row, device_row])
    assert feed(made, "wl1", "level", (0, 160), (60, 160)) == []
    assert brief(feed(made, "wl1", "level", (70, 100), (100, 100))) == [("flood_warn", 0, 1, 100, 120, 70, 100)]


def test_older_readings_and_non_numbers_are_ignored(checker):
    assert feed(checker, "wl1", "level", (100, 160)) == []
    assert feed(checker, "wl1", "level", (50, 100), (90, "high"), (110, None), (115, True)) == []
    assert brief(feed(checker, "wl1", "level", (130, 160))) == [("flood_warn", 1, 1, 160, 150, 100, 130)]


def test_other_messages_and_unknown_measures_do_nothing(checker):
    assert checker.check(Inbound("wl1", "health", 1, 5, T0, None)) == []
    assert feed(checker, "wl1", "rise", (0, 9.0), (100, 9.0)) == []


def test_effective_config_and_rules():
    doc = effective_config("wind-load", {3: {"storm": {0: "gust", 1: 30, 2: 25, 3: 5, 4: 2}}, 5: 600})
    assert doc[5] == 600 and doc[3]["load_warn"][1] == 3000
    found = rules(doc)
    assert (found["storm"].raise_at, found["storm"].clear_confirm) == (30, 5)  # replaced whole: no key 5 now
    assert rules({3: {"bad": {0: "level", 1: 5, 2: 5}, "odd": "x", "ok": {0: "level", 1: 9, 2: 3}}}).keys() == {"ok"}
    with pytest.raises(ValueError):
        effective_config("toaster")
