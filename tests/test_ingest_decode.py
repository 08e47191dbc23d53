"""fleet.ingest.decode: a device message -> Inbound (readings resolved) or Quarantined with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet.ingest.decode import WRONG_FLEET, decode
from fleet.store.model import Inbound, Quarantined
from protocols import up
from protocols.ack import Ack
from protocols.event import Event
from protocols.health import Health
from protocols.ota import OtaProgress, Pull
from protocols.state import State
from protocols.telemetry import Telemetry

VECTORS = json.loads((Path(__file__).parent.parent / "protocols" / "vectors" / "messages.json").read_text())["vectors"]
FLEET = "city1"
NOW = 1732850100.25  # a receive time (float, as time.time() gives)
CLASSES = {"telemetry": Telemetry, "event": Event, "health": Health, "state": State, "ack": Ack, "ota": OtaProgress,
           "pull": Pull}


def vector(name: str) -> tuple[str, bytes]:
    found = next(v for v in VECTORS if v["name"] == name)
    return found["topic"], bytes.fromhex(found["hex"])


@pytest.mark.parametrize("entry", [v for v in VECTORS if v["topic"].startswith("dt/")], ids=lambda v: v["name"])
def test_every_device_vector_is_an_inbound_of_its_kind(entry):
    kind = entry["topic"].rsplit("/", 1)[1]
    got = decode(entry["topic"], bytes.fromhex(entry["hex"]), NOW, FLEET)
    assert isinstance(got, Inbound), got
    assert (got.device, got.kind, got.received) == ("wl-0001", kind, NOW)
    assert isinstance(got.message, CLASSES[kind])
    assert (got.boot, got.seq) == (got.message.boot, got.message.seq)
    assert bool(got.readings) == (kind == "telemetry")


def test_telemetry_absolute_time_keeps_its_time_and_catalogue_unit():
    got = decode(*vector("telemetry one reading"), NOW, FLEET)
    assert isinstance(got, Inbound)
    [reading] = got.readings
    assert (reading.device, reading.name, reading.time, reading.value, reading.unit) == \
        ("wl-0001", "tilt", 1732850000.0, 2.5, "deg")
    assert (reading.boot, reading.seq, reading.received, reading.historical) == (12, 40000, NOW, False)
    assert got.ut == {}


def test_telemetry_relative_time_is_resolved_against_arrival_and_ut_kept():
    got = decode(*vector("telemetry relative time, ut"), NOW, FLEET)
    assert isinstance(got, Inbound)
    [reading] = got.readings
    assert (reading.name, reading.value, reading.unit, reading.time) == ("level", 412, "mm", NOW - 2)
    assert got.ut == {"level": 900}


def test_backfill_older_than_two_minutes_is_historical_at_its_own_time():
    topic, payload = vector("telemetry backfill")  # base time 1732850060, records at -60, +0, +60, +120 s
    got = decode(topic, payload, 1732850060 + 150.0, FLEET)
    assert isinstance(got, Inbound)
    assert [(r.time, r.value) for r in got.readings] == \
        [(1732850000.0, 400), (1732850060.0, 403), (1732850120.0, 406), (1732850180.0, 409)]
    assert [r.historical for r in got.readings] == [True, True, False, False]


def test_several_names_in_one_pack():
    pack = [{-2: "", 0: "gust", 2: 25.5, 1: "m/s", 6: -3}, {0: "load", 2: 3100, 7: 600}]
    got = decode("dt/city1/bb-1/telemetry", up.telemetry(2, 9, pack), NOW, FLEET)
    assert isinstance(got, Inbound)
    assert [(r.name, r.value, r.unit, r.time) for r in got.readings] == \
        [("gust", 25.5, "m/s", NOW - 3), ("load", 3100, "N", NOW)]
    assert got.ut == {"load": 600}


def test_bytes_topic_is_accepted():
    topic, payload = vector("health minimal")
    got = decode(topic.encode(), payload, NOW, FLEET)
    assert isinstance(got, Inbound) and got.kind == "health"


def quarantined(topic, payload) -> Quarantined:
    got = decode(topic, payload, NOW, FLEET)
    assert isinstance(got, Quarantined), got
    assert (got.received, got.payload) == (NOW, bytes(payload))
    return got


def test_wrong_fleet():
    topic, payload = vector("health")
    got = quarantined(topic.replace("city1", "other"), payload)
    assert (got.topic, got.reason) == ("dt/other/wl-0001/health", WRONG_FLEET)
    assert "other" in got.detail


@pytest.mark.parametrize("topic, reason", [
    ("cmd/city1/wl-0001/ping", "bad_topic"),        # a command topic is not a device's
    ("dt/city1/wl-0001", "bad_topic"),              # three levels
    ("dt/city1/wl-0001/telemetry/x", "bad_topic"),
    ("dt/city1/WL-0001/telemetry", "bad_id"),       # upper case
    ("dt/city1/wl-0001/config", "bad_type"),        # a down type on an up topic
    ("dt/city1/wl-0001/bogus", "bad_type"),
])
def test_bad_topics(topic, reason):
    got = quarantined(topic, vector("health")[1])
    assert (got.topic, got.reason) == (topic, reason)


def test_topic_that_is_not_utf8_is_kept_readable():
    got = quarantined(b"dt/city1/\xff\xfe/health", vector("health")[1])
    assert got.reason == "bad_topic"
    assert got.topic.startswith("dt/city1/") and "\ufffd" in got.topic


def test_oversized_payload():
    got = quarantined("dt/city1/wl-0001/telemetry", b"\x00" * 1025)
    assert got.reason == "too_large"
    assert "1025" in got.detail


@pytest.mark.parametrize("payload", [b"", b"\xff\x00garbage", b"\x9f\x01", b"\x1c"], ids=["empty", "break", "open", "reserved"])
def test_bad_cbor(payload):
    assert quarantined("dt/city1/wl-0001/event", payload).reason == "bad_cbor"


def test_too_deep():
    assert quarantined("dt/city1/wl-0001/health", bytes.fromhex("8181818181")).reason == "too_deep"


def test_wrong_shape_for_the_topic_type():
    # a valid telemetry payload on the event topic: not a map
    got = quarantined("dt/city1/wl-0001/event", vector("telemetry one reading")[1])
    assert got.reason == "bad_message"


@pytest.mark.parametrize("obj, reason", [
    ({0: 1, 1: 12, 2: 5}, "missing_field"),                       # health without uptime
    ({0: 1, 1: 12, 2: -5, 3: 60}, "bad_field"),                   # negative seq
    ({0: 0, 1: 12, 2: 5, 3: 60}, "bad_version"),
])
def test_failed_validation(obj, reason):
    from protocols.cbor import dumps

    assert quarantined("dt/city1/wl-0001/health", dumps(obj)).reason == reason


def test_bad_senml_record():
    from protocols.cbor import dumps

    # a record with two value fields
    got = quarantined("dt/city1/wl-0001/telemetry", dumps([1, 1, 1, {0: "level", 2: 1, 3: "x"}]))
    assert got.reason.startswith("senml_")
