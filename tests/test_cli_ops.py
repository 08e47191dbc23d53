"""The operations centre's read side as a script and a person use it: `fleet health`, `fleet alarms`,
`fleet alarm ack`, `fleet readings`, `fleet summary`, against a real SQLite store filled through
`Store.ingest` with real protocol messages (encoded by the protocols classes, decoded by the ingest's own
decoder)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleet.cli.main import main
from fleet.ingest.decode import decode
from fleet.registry import open_registry
from fleet.store import Batch, FleetAlarm, Inbound, open_store
from protocols.event import Event
from protocols.health import Health
from protocols.messages import encode
from protocols.state import State
from protocols.telemetry import Telemetry

FLEET = "city"


@dataclass
class Fleet:
    home: Path
    url: str
    now: float


def msg(device: str, message: Any, received: float) -> Inbound:
    """A protocol message through the wire: encoded, then decoded as the ingest does."""
    got = decode("dt/%s/%s/%s" % (FLEET, device, message.KIND), encode(message), received, FLEET)
    assert isinstance(got, Inbound), got
    return got


def birth(device: str, boot: int, seq: int, received: float) -> Inbound:
    return msg(device, State(boot, seq, True, "1.4.2", 0, 1, "water"), received)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def make_fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, troubled: bool = True) -> Fleet:
    home = tmp_path / "home"
    monkeypatch.setenv("FLEET_HOME", str(home))
    monkeypatch.delenv("FLEET_STORE", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich fits tables to the terminal: wide enough for whole lines
    registry = open_registry(home)
    now = float(int(time.time()))
    messages: list[Inbound] = []
    registry.add({"id": "wl-1", "kind": "water-level", "site": "Quay 3", "state": "active"})
    t = int(now)
    messages += [
        birth("wl-1", 12, 100, now - 700),
        msg("wl-1", Telemetry(12, 101, [{0: "level", 2: 412, 6: t - 600, 7: 900}]), now - 600),
        # a backfill of three readings from an hour ago, arriving late: stored at their own time
        msg("wl-1", Telemetry(12, 102, [{-2: "level", -3: t - 3600, 2: 100}, {2: 200, 6: 60}, {2: 300, 6: 120}]),
            now - 550),
        msg("wl-1", Event(12, 103, "flood", 1, 2, 280, 270, -95), now - 500),
        msg("wl-1", Event(12, 104, "flood", 0, 2, 230, 240, -5), now - 100),
        msg("wl-1", Health(12, 105, 600, battery=3900, heap_min=30000, outbox=0), now - 60),
    ]
    if troubled:
        registry.add({"id": "mh-1", "kind": "manhole-tilt", "site": "Mill St", "state": "active"})
        registry.add({"id": "ww-1", "kind": "wind-load", "site": "Ring Rd", "state": "active"})
        registry.add({"id": "wl-3", "kind": "water-level", "site": "Canal", "state": "active"})
        registry.add({"id": "wl-2", "kind": "water-level", "site": "Dock", "state": "pending-selftest"})
        registry.add({"id": "rt-1", "kind": "water-level", "site": "Old", "state": "retired"})
        messages += [
            birth("mh-1", 3, 10, now - 900),
            msg("mh-1", State(3, 9, False), now - 100),  # the will of its current boot
            birth("ww-1", 1, 1, now - 4 * 3600),
            msg("ww-1", Telemetry(1, 2, [{0: "load", 2: 120, 6: t - 4 * 3600, 7: 60}]), now - 4 * 3600),
            birth("wl-3", 7, 1, now - 300),
            msg("wl-3", Health(7, 2, 300, battery=3300), now - 30),
            birth("xx-9", 1, 1, now - 10),  # on the broker, not in the registry
            birth("rt-1", 1, 1, now - 20),
        ]
    url = "sqlite:///%s" % (tmp_path / "fleet.db")
    with open_store(url) as store:
        result = store.ingest(Batch(messages=messages, fleet_alarms=[
            FleetAlarm("wl-1", "flood_warn", 1, 1, 160, 150, now - 400, now - 390)]))
        assert result.stored == len(messages)
    return Fleet(home, url, now)


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    return make_fleet(tmp_path, monkeypatch)


# ---- fleet health ----

def test_health_json_lists_every_device_with_state_and_reason_and_exits_1_on_critical(fleet, capsys):
    code, out, err = run(capsys, "health", "--json", "--store", fleet.url)
    doc = json.loads(out)
    devices = {d["id"]: d for d in doc["devices"]}
    assert {i: d["state"] for i, d in devices.items()} == {
        "wl-1": "healthy", "mh-1": "offline", "ww-1": "stale", "wl-3": "degraded", "wl-2": "never seen",
        "xx-9": "healthy"}  # rt-1 is retired: not part of the fleet
    assert {i for i, d in devices.items() if d["critical"]} == {"mh-1", "ww-1"}
    assert [r["code"] for r in devices["wl-3"]["reasons"]] == ["low_battery"]
    assert [r["code"] for r in devices["xx-9"]["reasons"]] == ["unregistered"] and not devices["xx-9"]["registered"]
    assert devices["ww-1"]["heartbeat"] == 60 and devices["wl-1"]["heartbeat"] == 900
    assert devices["mh-1"]["boot"] == 3 and devices["wl-1"]["last_seen"] == fleet.now - 60
    assert doc["critical"] == 2 and doc["counts"]["healthy"] == 2
    assert code == 1
    assert err == "fleet: 2 critical devices: mh-1 (offline), ww-1 (stale)\n"


def test_health_table_for_people_shows_reasons(fleet, capsys):
    code, out, err = run(capsys, "health", "--store", fleet.url)
    assert code == 1 and err.count("\n") == 1
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "offline" in lines["mh-1"] and "last will of boot 3" in lines["mh-1"]
    assert "stale" in lines["ww-1"] and "heartbeat 60 s" in lines["ww-1"]
    assert "battery 3300 mV" in lines["wl-3"]
    assert "rt-1" not in lines
    assert "6 devices" in out


def test_health_exits_0_when_nothing_is_critical(tmp_path, monkeypatch, capsys):
    calm = make_fleet(tmp_path, monkeypatch, troubled=False)
    code, out, err = run(capsys, "health", "--json", "--store", calm.url)
    assert (code, err) == (0, "")
    assert [(d["id"], d["state"]) for d in json.loads(out)["devices"]] == [("wl-1", "healthy")]


def test_console_script_reads_the_store_from_fleet_store(fleet):
    fleet_bin = Path(sys.executable).parent / "fleet"
    env = {**os.environ, "FLEET_HOME": str(fleet.home), "FLEET_STORE": fleet.url}
    done = subprocess.run([str(fleet_bin), "health", "--json"], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert {d["id"] for d in json.loads(done.stdout)["devices"]} >= {"wl-1", "mh-1"}


def test_a_bad_store_url_is_one_line(fleet, capsys):
    code, out, err = run(capsys, "health", "--store", "mysql://x")
    assert code == 3 and err.startswith("fleet: ") and err.count("\n") == 1 and out == ""


# ---- fleet alarms / fleet alarm ack ----

def test_alarms_json_carries_device_and_fleet_alarms(fleet, capsys):
    code, out, _ = run(capsys, "alarms", "--json", "--store", fleet.url)
    assert code == 0
    rows = json.loads(out)
    assert [(r["alarm"], r["source"], r["active"]) for r in rows] == [
        ("flood_warn", "fleet", True), ("flood", "device", False)]  # newest first
    flood = rows[1]
    assert (flood["raised_at"], flood["raise_value"], flood["threshold"]) == (fleet.now - 595, 280, 270)
    assert (flood["cleared_at"], flood["clear_value"], flood["boot"]) == (fleet.now - 105, 230, 12)

    code, out, _ = run(capsys, "alarms", "--active", "--json", "--store", fleet.url)
    assert [r["alarm"] for r in json.loads(out)] == ["flood_warn"]
    code, out, _ = run(capsys, "alarms", "--device", "mh-1", "--json", "--store", fleet.url)
    assert json.loads(out) == []
    code, out, _ = run(capsys, "alarms", "--store", fleet.url)
    assert "flood_warn" in out and "active" in out and "fleet" in out


def test_alarm_ack_records_who_and_the_note(fleet, capsys):
    _, out, _ = run(capsys, "alarms", "--active", "--json", "--store", fleet.url)
    alarm_id = json.loads(out)[0]["id"]
    code, out, err = run(capsys, "alarm", "ack", str(alarm_id), "--by", "dana", "--note", "crew sent",
                         "--store", fleet.url)
    assert (code, err) == (0, "")
    assert out == "alarm %d (wl-1 flood_warn, active) acknowledged by dana: crew sent\n" % alarm_id
    _, out, _ = run(capsys, "alarms", "--json", "--store", fleet.url)
    acked = [r for r in json.loads(out) if r["id"] == alarm_id][0]
    assert (acked["acked_by"], acked["note"]) == ("dana", "crew sent")
    assert abs(acked["acked_at"] - time.time()) < 60


def test_ack_of_an_unknown_alarm_is_one_line_and_exit_3(fleet, capsys):
    code, out, err = run(capsys, "alarm", "ack", "999", "--by", "dana", "--store", fleet.url)
    assert code == 3 and out == ""
    assert err.startswith("fleet: ") and err.count("\n") == 1 and "999" in err


# ---- fleet readings / fleet summary ----

def test_readings_json_are_ordered_by_measurement_time_with_backfill_marked(fleet, capsys):
    code, out, _ = run(capsys, "readings", "wl-1", "--format", "json", "--store", fleet.url)
    assert code == 0
    rows = json.loads(out)
    assert [(r["time"], r["value"], r["historical"]) for r in rows] == [
        (fleet.now - 3600, 100, True), (fleet.now - 3540, 200, True), (fleet.now - 3480, 300, True),
        (fleet.now - 600, 412, False)]
    assert {(r["name"], r["boot"]) for r in rows} == {("level", 12)}
    assert rows[0]["iso"].endswith("Z") and rows[0]["seq"] == 102


def test_readings_since_relative_and_iso_and_name_filter(fleet, capsys):
    _, out, _ = run(capsys, "readings", "wl-1", "--since", "30m", "--format", "json", "--store", fleet.url)
    assert [r["value"] for r in json.loads(out)] == [412]
    from fleet.cli.readings import iso

    _, out, _ = run(capsys, "readings", "wl-1", "--since", iso(fleet.now - 3600), "--until",
                    iso(fleet.now - 3480), "--format", "json", "--store", fleet.url)
    assert [r["value"] for r in json.loads(out)] == [100, 200]  # until is exclusive
    _, out, _ = run(capsys, "readings", "wl-1", "--name", "rise", "--format", "json", "--store", fleet.url)
    assert json.loads(out) == []


def test_readings_csv_and_table(fleet, capsys):
    _, out, _ = run(capsys, "readings", "wl-1", "--format", "csv", "--store", fleet.url)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["value"] for r in rows] == ["100.0", "200.0", "300.0", "412.0"]
    assert rows[0]["historical"] == "true" and float(rows[3]["time"]) == fleet.now - 600
    _, out, _ = run(capsys, "readings", "wl-1", "--limit", "1", "--store", fleet.url)
    assert "412" in out and "level" in out and "100" not in out


@pytest.mark.parametrize("argv", [
    ("readings", "wl-1", "--since", "yesterday"),
    ("readings", "wl-1", "--until", "2025-13-01"),
    ("readings", "wl-1", "--since", "1h", "--until", "2h"),
    ("summary", "wl-1", "--interval", "0m"),
    ("summary", "wl-1", "--since", "-3h"),
])
def test_bad_times_are_one_line_usage_errors(fleet, capsys, argv):
    code, out, err = run(capsys, *argv, "--store", fleet.url)
    assert code == 2 and out == ""
    assert err.startswith("fleet: ") and err.count("\n") == 1


def test_readings_of_an_unknown_device_say_so(fleet, capsys):
    code, out, err = run(capsys, "readings", "nope-1", "--store", fleet.url)
    assert code == 3 and err.startswith("fleet: no device 'nope-1'") and err.count("\n") == 1
    code, out, err = run(capsys, "readings", "wl-2", "--store", fleet.url)  # registered, never seen
    assert (code, err) == (0, "") and "no readings of wl-2" in out


def test_summary_gives_min_max_mean_per_interval(fleet, capsys):
    times = [fleet.now - 3600, fleet.now - 3540, fleet.now - 3480, fleet.now - 600]
    values = [100.0, 200.0, 300.0, 412.0]
    day: dict[float, list[float]] = {}
    for t, v in zip(times, values, strict=True):
        day.setdefault(t - t % 86400, []).append(v)
    code, out, _ = run(capsys, "summary", "wl-1", "--interval", "1d", "--format", "json", "--store", fleet.url)
    assert code == 0
    assert [(r["start"], r["name"], r["count"], r["min"], r["max"], r["mean"]) for r in json.loads(out)] == [
        (start, "level", len(vs), min(vs), max(vs), sum(vs) / len(vs)) for start, vs in sorted(day.items())]

    code, out, _ = run(capsys, "summary", "wl-1", "--interval", "10s", "--since", "2h", "--format", "csv",
                       "--store", fleet.url)
    got = [(float(r["start"]), int(r["count"]), float(r["min"]), float(r["max"]), float(r["mean"]))
           for r in csv.DictReader(io.StringIO(out))]
    assert got == [(t - t % 10, 1, v, v, v) for t, v in zip(times, values, strict=True)]
    code, out, _ = run(capsys, "summary", "wl-1", "--interval", "1d", "--name", "rise", "--store", fleet.url)
    assert (code, out) == (0, "no numeric readings of wl-1 in that range\n")
