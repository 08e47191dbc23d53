"""Agent config: validation with reasons, partial or whole application, persistence, defaults per kind;
the case_* functions run under CPython and under the MicroPython VM."""

try:
    import pytest
except ImportError:  # under the MicroPython VM only the case_* functions and run_cases() are used
    pytest = None

import os

from agent import config_check, defaults, flashio, reconfig
from agent.config import AgentConfig
from agent.defaults import config_for

FLOOD = {0: "level", 1: 300, 2: 280, 3: 10, 4: 2}


def validate(doc, kind):
    """(clean, refused, reasons) of `doc` for a `kind` node, as AgentConfig.apply() checks it."""
    return config_check.validate(doc, defaults.MEASURES[kind])


def _with(entry, key, value):
    out = dict(entry)
    out[key] = value
    return out


def case_boots_with_defaults_for_each_kind(tmp):
    for kind in ("manhole-tilt", "water-level", "wind-load"):
        cfg = AgentConfig(kind, tmp + "/" + kind)
        assert cfg.load() == [] and cfg.version == 0
        assert reconfig.heartbeat(cfg) == 900 and reconfig.effective(cfg)[3]
    water = AgentConfig("water-level", tmp + "/w")
    alarms = reconfig.alarms(water)
    assert alarms["flood"].raise_at == 270 and alarms["flood_warn"].raise_at == 150
    assert alarms["flood"].level == 2 and alarms["flood_warn"].level == 1


def case_valid_document_is_applied_persisted_and_merged(tmp):
    path = tmp + "/cfg"
    cfg = AgentConfig("water-level", path)
    doc = {0: 1, 1: 77, 2: 4, 3: {"flood": FLOOD}, 4: {"level": 10}, 5: 600, 6: {"level": 5},
           7: {"level": [1.0, -12]}, 99: "from a newer fleet"}
    assert cfg.apply(doc) == []
    again = AgentConfig("water-level", path)
    assert again.load() == [] and again.version == 4
    assert reconfig.alarms(again)["flood"].raise_at == 300
    assert reconfig.alarms(again)["flood_warn"].raise_at == 150  # missing from the document: default kept
    assert reconfig.sample_s(again, "level") == 10 and reconfig.sample_s(again, "rise") == 60
    assert reconfig.heartbeat(again) == 600 and reconfig.deadband(again, "level") == 5
    assert list(reconfig.effective(again)[7]["level"]) == [1.0, -12] and "rise" not in reconfig.effective(again)[7]
    assert again.apply(doc) == []  # the retained document redelivered: no-op


def case_bad_entries_are_refused_with_reasons_and_the_old_ones_stay(tmp):
    cfg = AgentConfig("water-level", tmp + "/cfg")
    cfg.apply({2: 1, 3: {"flood": FLOOD}, 4: {"level": 10}})
    reasons = cfg.apply({2: 2, 3: {"flood": {0: "level", 1: 100, 2: 100, 3: 10, 4: 2},
                                   "Bad Name": FLOOD, "x": _with(FLOOD, 0, "tilt")},
                         4: {"level": 0, "rise": 30}, 5: True, 6: {"level": -1},
                         7: {"level": [0, 1]}})
    assert sorted(reasons) == sorted(["bad_threshold:flood", "bad_name:Bad Name", "unknown_measure:x",
                                      "bad_period:level", "bad_heartbeat", "bad_deadband:level",
                                      "bad_calibration:level"]), reasons
    assert cfg.version == 2
    assert reconfig.alarms(cfg)["flood"].raise_at == 300  # the entry in force before stays
    assert reconfig.sample_s(cfg, "level") == 10 and reconfig.sample_s(cfg, "rise") == 30
    assert "x" not in reconfig.alarms(cfg)


def case_whole_mode_refuses_everything_on_any_reason(tmp):
    cfg = AgentConfig("wind-load", tmp + "/cfg")
    reasons = cfg.apply({2: 3, 4: {"gust": 5}, 6: {"load": "big"}}, whole=True)
    assert reasons == ["bad_deadband:load"] and cfg.version == 0 and reconfig.sample_s(cfg, "gust") == 60
    assert not flashio.exists(tmp + "/cfg")


def case_bad_version_or_shape_refuses_the_document(tmp):
    cfg = AgentConfig("manhole-tilt", tmp + "/cfg")
    for doc in ({}, {2: 0}, {2: -1}, {2: "4"}, {2: True}, [1, 2]):
        assert cfg.apply(doc) == ["bad_version"], doc
    assert cfg.apply({2: 5, 3: [1], 4: {"tilt": 5}}) == ["bad_table:3"]
    assert cfg.version == 5 and "tilt" in reconfig.alarms(cfg)


def case_below_alarms_and_agent_keys_validate(tmp):
    clean, refused, reasons = validate(
        {2: 1, 3: {"low": {0: "level", 1: -50, 2: -20, 3: 5, 4: 1, 5: 60, 6: 3, 7: 2},
                   "bad": {0: "level", 1: 10, 2: 5, 3: 5, 4: 3},
                   "slow": {0: "level", 1: 10, 2: 5, 3: 90000, 4: 1}}}, "water-level")
    assert sorted(reasons) == ["bad_confirm:slow", "bad_level:bad"]
    cfg = AgentConfig("water-level", tmp + "/cfg")
    cfg.apply({2: 1, 3: {"low": clean[3]["low"]}})
    low = reconfig.alarms(cfg)["low"]
    assert not low.above and low.clear_confirm == 60 and low.samples == 3 and low.clear_samples == 2


def case_corrupt_file_falls_back_to_defaults(tmp):
    path = tmp + "/cfg"
    cfg = AgentConfig("water-level", path)
    cfg.apply({2: 9, 5: 100})
    with open(path, "r+b") as f:
        f.write(b"#")
    cfg = AgentConfig("water-level", path)
    assert cfg.load() == ["no_config"] and cfg.version == 0 and reconfig.heartbeat(cfg) == 900


def run_cases(tmp):
    """Run every case_* function (the MicroPython VM calls this) in subdirectories of `tmp`."""
    names = [name for name in sorted(globals()) if name.startswith("case_")]
    for name in names:
        os.mkdir(tmp + "/" + name)
        globals()[name](tmp + "/" + name)
    print("ok", len(names))


if pytest is not None:
    from tests.mpvm import check_micropython

    CASES = [name for name in sorted(globals()) if name.startswith("case_")]

    @pytest.mark.parametrize("name", CASES)
    def test_case_under_cpython(name, tmp_path):
        globals()[name](str(tmp_path))

    @pytest.mark.micropython
    def test_cases_under_micropython(tmp_path):
        out = check_micropython(f"import tests.test_agent_config as t\nt.run_cases({str(tmp_path)!r})",
                                heap="110k")
        assert f"ok {len(CASES)}" in out

    def test_the_wire_config_message_applies_as_it_is(tmp_path):
        from protocols.config import Alarm, Config

        wire = Config(77, 4, alarms={"flood": Alarm("level", 150, 120, 30, 2)}, sample={"level": 10},
                      heartbeat=900, deadband={"level": 5}, calibration={"level": [1.0, -12]})
        cfg = AgentConfig("water-level", str(tmp_path / "cfg"))
        assert cfg.apply(wire.to_obj()) == [] and cfg.version == 4
        assert reconfig.alarms(cfg)["flood"].raise_at == 150

    def test_defaults_pass_their_own_validation():
        for kind in ("manhole-tilt", "water-level", "wind-load"):
            doc = config_for(kind)
            doc[2] = 1
            assert validate(doc, kind)[2] == []
