"""Reporter: every quantity each kind's sensor produces goes out as valid SenML-CBOR, alarms as events."""

from __future__ import annotations

import pytest

from agent import defaults, reconfig
from agent.config import AgentConfig
from agent.outbox import Outbox
from agent.reporter import EVENT, TELEMETRY, WIRE, Reporter
from agent.sequence import Sequence
from protocols import messages, senml

SAMPLES = {
    "manhole-tilt": {"tilt": 0.4, "accel": 9.81},
    "water-level": {"level": 3.2, "rise": 0.1, "dist": 2968.0},
    "wind-load": {"wind": 3.0, "gust": 4.5, "wind10": 2.5, "load": 12.0},
}
ALARMING = {"manhole-tilt": {"tilt": 40.0, "accel": 9.81}, "water-level": {"level": 40.0, "rise": 2.0},
            "wind-load": {"wind": 30.0, "gust": 33.0, "wind10": 25.0, "load": 4500.0}}


def _reporter(kind, tmp_path):
    outbox = Outbox(str(tmp_path / "outbox"))
    sequence = Sequence(str(tmp_path / "seq"))
    return Reporter(AgentConfig(kind, str(tmp_path / "config.json")), outbox, sequence, str(tmp_path / "alarms"))


def _drain(outbox):
    out = []
    while outbox.count:
        records = outbox.peek(16)
        out += [(kind, bytes(payload)) for kind, _, payload in records]
        outbox.ack(len(records))
    return out


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_measure_of_a_kind_is_published_and_decodes(kind, tmp_path):
    (tmp_path / "outbox").mkdir()
    reporter = _reporter(kind, tmp_path)
    reporter.sample(SAMPLES[kind], 1_800_000_000)
    (record_kind, payload), = _drain(reporter.outbox)
    assert record_kind == TELEMETRY
    message = messages.decode("dt/city/n1/telemetry", payload)
    names = {r.name for r in message.records(1_800_000_000)}
    assert names == set(reporter.measures)  # diagnostics such as the raw distance stay on the node


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_alarm_levels_raise_events_once(kind, tmp_path):
    (tmp_path / "outbox").mkdir()
    reporter = _reporter(kind, tmp_path)
    for t in range(0, 120, 2):  # two minutes past every threshold: longer than any default confirm
        reporter.sample(ALARMING[kind], 1_800_000_000 + t)
    events = [messages.decode("dt/city/n1/event", p) for k, p in _drain(reporter.outbox) if k == EVENT]
    raised = [e.alarm for e in events if e.state == 1]
    assert raised and len(raised) == len(set(raised))


def test_wire_names_and_units_are_what_senml_allows():
    """The node's pack builder trusts the reporter's names and units (protocols/senml_pack.py): check them
    here, where they are constants. A name without a unit must be a catalogue measurement."""
    for name, (_, unit, _) in WIRE.items():
        assert senml.check_name(name) == name
        assert unit in senml.UNITS if unit is not None else name in senml.MEASUREMENTS
    for measures in defaults.MEASURES.values():
        assert set(measures) <= set(WIRE)  # to_wire() would send an unknown name without a unit


def test_a_calibration_in_the_config_corrects_telemetry_and_alarms(tmp_path):
    """Config key 7, value = raw x scale + offset in wire units: the level sensor reads 12 mm high and the
    flood alarm (270 mm) must see the corrected level, as must the telemetry."""
    (tmp_path / "outbox").mkdir()
    reporter = _reporter("water-level", tmp_path)
    assert reporter.config.apply({0: 1, 1: 7, 2: 3, 7: {"level": [1.0, -12]}}) == []
    reconfig.reload(reporter)
    reporter.sample({"level": 27.5, "rise": 0.0}, 1_800_000_000)  # 275 mm raw: 263 mm, under 270
    telemetry = [messages.decode("dt/city/n1/telemetry", p) for k, p in _drain(reporter.outbox) if k == TELEMETRY]
    level = [r.value for m in telemetry for r in m.records(1_800_000_000) if r.name == "level"]
    assert level == [263]
    for t in range(2, 120, 2):  # well past the flood alarm's 30 s confirm
        reporter.sample({"level": 27.5, "rise": 0.0}, 1_800_000_000 + t)
    assert not reporter.alarms["flood"].active and reporter.alarms["flood_warn"].active
