"""Alarms: confirmation, hysteresis, events, and state across a reboot (AlarmStore); the case_* functions
run under CPython and under the MicroPython VM, hypothesis properties under CPython."""

try:
    import pytest
except ImportError:  # under the MicroPython VM only the case_* functions and run_cases() are used
    pytest = None

from agent.alarm import CLEARED, RAISED, Alarm, AlarmStore
from agent.defaults import config_for
from agent.errors import AgentError
from agent.reconfig import alarm_from as from_entry

# water level (mm) every 10 s: noise of +-20 mm around 100, three one-sample echo spikes to 400 and a
# dip to 0, then a real rise to ~300 mm for 10 minutes, then back to ~100
NOISE = (0, 20, -15, 8, -20, 12, 5, -8, 18, -12)


def _trace():
    out = []
    for i in range(200):
        t = 10 * i
        level = 300 if 60 <= i < 120 else 100
        value = level + NOISE[i % len(NOISE)]
        if i in (10, 30, 75):
            value = 400
        if i == 90:
            value = 0
        out.append((t, value))
    return out


def _events(alarm, trace):
    events = []
    for t, v in trace:
        ev = alarm.update(v, t)
        if ev is not None:
            events.append(ev)
    return events


def case_no_flapping_on_a_noisy_trace_with_spikes_one_raise_one_clear():
    flood = Alarm("flood", "level", 270, 240, confirm=30)
    events = _events(flood, _trace())
    assert [e.state for e in events] == [RAISED, CLEARED], events
    raised, cleared = events
    assert raised.since == 600 and raised.threshold == 270 and raised.value >= 270
    assert cleared.since == 1200 and cleared.threshold == 240 and cleared.value <= 240
    assert raised.name == "flood" and raised.level == 2


def case_since_is_the_first_sample_past_the_threshold():
    a = Alarm("tilt", "tilt", 15, 12, confirm=10)
    assert a.update(16, 100) is None and a.since == 100  # a run is pending
    assert a.update(17, 105) is None
    ev = a.update(16, 110)
    assert ev.state == RAISED and ev.since == 100 and ev.value == 16
    # a short dip back under the clear level is not a clear
    assert a.update(11, 120) is None and a.update(14, 125) is None and a.since is None
    assert a.update(12, 130) is None and a.update(5, 139) is None
    ev = a.update(6, 140)
    assert ev.state == CLEARED and ev.since == 130 and ev.threshold == 12


def case_below_alarm_and_sample_counts():
    lift = Alarm("lift", "accel", 3.9, 8.8, confirm=0, samples=2, clear_confirm=60, clear_samples=1)
    assert not lift.above
    assert lift.update(2.0, 0) is None  # one sample of two
    assert lift.update(9.8, 1) is None and lift.update(1.0, 2) is None
    ev = lift.update(0.5, 3)
    assert ev.state == RAISED and ev.since == 2 and ev.threshold == 3.9
    assert lift.update(9.8, 4) is None and lift.update(9.8, 63) is None
    ev = lift.update(9.7, 64)
    assert ev.state == CLEARED and ev.since == 4


def case_bad_rules_are_refused():
    for args in (("a", "x", 5, 5), ("a", "x", 5, 4, -1), ("a", "x", 5, 4, 0, 3), ("a", "x", 5, 4, 0, 2, 0)):
        try:
            Alarm(*args)
        except AgentError:
            continue
        raise AssertionError("accepted " + repr(args))


def case_defaults_build_alarms_for_every_kind():
    for kind in ("manhole-tilt", "water-level", "wind-load"):
        for name, entry in config_for(kind)[3].items():
            a = from_entry(name, entry)
            assert (a.measure, a.raise_at, a.clear_at, a.confirm, a.level) == tuple(entry[k]
                                                                                     for k in range(5))
            assert a.clear_confirm == entry.get(5, entry[3])
    storm = from_entry("storm", config_for("wind-load")[3]["storm"])
    assert storm.update(24.5, 0).state == RAISED  # Beaufort 10 raises at once


def case_state_survives_a_reboot(tmp):
    path = tmp + "/alarms"
    store = AlarmStore(path)
    alarms = {"flood": Alarm("flood", "level", 270, 240, 30), "warn": Alarm("warn", "level", 150, 120, 30)}
    assert store.restore(alarms) == []
    for t in (0, 10, 20, 30):
        for a in alarms.values():
            a.update(280, t)
    assert store.sync(alarms) and not store.sync(alarms)  # written once per change
    # reboot: fresh objects, water still high: no second raise
    alarms = {"flood": Alarm("flood", "level", 270, 240, 30), "warn": Alarm("warn", "level", 150, 120, 30)}
    store = AlarmStore(path)
    assert store.restore(alarms) == ["flood", "warn"]
    assert all(a.update(285, t) is None for t in (0, 10, 20, 30, 40) for a in alarms.values())
    # reboot again, the water went down meanwhile: each clears once, after its confirm time
    alarms = {"flood": Alarm("flood", "level", 270, 240, 30), "warn": Alarm("warn", "level", 150, 120, 30)}
    store = AlarmStore(path)
    store.restore(alarms)
    events = []
    for t in (0, 10, 20, 30, 40, 50):
        for a in alarms.values():
            ev = a.update(50, t)
            if ev is not None:
                events.append((ev.name, ev.state, ev.since))
    assert sorted(events) == [("flood", CLEARED, 0), ("warn", CLEARED, 0)]
    assert store.sync(alarms) and AlarmStore(path).load() == []


def case_store_forgets_alarms_no_longer_configured(tmp):
    path = tmp + "/alarms"
    store = AlarmStore(path)
    old = {"gone": Alarm("gone", "level", 10, 5)}
    old["gone"].update(11, 0)
    store.sync(old)
    new = {"flood": Alarm("flood", "level", 270, 240)}
    assert AlarmStore(path).restore(new) == [] and not new["flood"].active


def run_cases(tmp):
    """Run every case_* function (the MicroPython VM calls this) in subdirectories of `tmp`."""
    import os

    names = [name for name in sorted(globals()) if name.startswith("case_")]
    for name in names:
        fn = globals()[name]
        if name in TMP_CASES:
            os.mkdir(tmp + "/" + name)
            fn(tmp + "/" + name)
        else:
            fn()
    print("ok", len(names))


TMP_CASES = ("case_state_survives_a_reboot", "case_store_forgets_alarms_no_longer_configured")

if pytest is not None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tests.mpvm import check_micropython

    CASES = [name for name in sorted(globals()) if name.startswith("case_")]

    @pytest.mark.parametrize("name", CASES)
    def test_case_under_cpython(name, tmp_path):
        if name in TMP_CASES:
            globals()[name](str(tmp_path))
        else:
            globals()[name]()

    @pytest.mark.micropython
    def test_cases_under_micropython(tmp_path):
        out = check_micropython(f"import tests.test_agent_alarm as t\nt.run_cases({str(tmp_path)!r})",
                                heap="110k")
        assert f"ok {len(CASES)}" in out

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.floats(-50, 50), min_size=1, max_size=200), st.integers(0, 40))
    def test_events_alternate_and_are_confirmed(values, confirm):
        a = Alarm("x", "level", 10, 0, confirm=confirm)
        state, runs = False, []
        for t, v in enumerate(values):
            ev = a.update(v, t)
            if ev is None:
                continue
            assert ev.state == (CLEARED if state else RAISED)
            state = not state
            # every sample from since to now was past the threshold, for at least `confirm` seconds
            past = values[ev.since:t + 1]
            assert t - ev.since >= confirm
            assert all((x >= 10) if ev.state == RAISED else (x <= 0) for x in past)
            runs.append(ev)
        assert a.active == state

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.sampled_from([5, 30, -20, 6]), min_size=1, max_size=200))
    def test_single_spikes_never_raise_with_a_confirm_time(values):
        # a spike is one sample past the raise level between samples that are not
        values = [v if v != 30 or i % 2 else 5 for i, v in enumerate(values)]
        a = Alarm("x", "level", 10, 0, confirm=1)
        assert all(a.update(v, t) is None for t, v in enumerate(values))
