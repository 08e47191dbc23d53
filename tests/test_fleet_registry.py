"""The device registry: schema, uniqueness, no hashes out, atomic writes under kills, concurrent writers,
and `fleet devices` / `fleet device show` as a person runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.credentials import device_credential
from fleet.errors import FleetError
from fleet.registry import TinyRegistry, new_record, open_registry

ROOT = Path(__file__).resolve().parents[1]
FLEET = [sys.executable, "-m", "fleet.cli.main"]


def device(device_id: str, kind: str = "manhole-tilt", **extra) -> dict:
    return {"id": device_id, "kind": kind, "site": "Main St 1", **extra}


def fleet(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(FLEET + list(args), capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "FLEET_HOME": str(home)}, stdin=subprocess.DEVNULL)


def test_add_fills_defaults_and_update_and_history_change_the_record(tmp_path):
    reg = TinyRegistry(tmp_path / "registry.json")
    added = reg.add(device("mh-1", uid="u1", lat=52.5, lon=13.4, calibration={"baseline": [0, 0, 1]}))
    assert added["state"] == "provisioning" and added["config_version"] == 0 and added["credential"] is None
    assert [h["action"] for h in added["history"]] == ["registered"]
    assert added["created"].endswith("Z") and added["created"] == added["updated"]
    reg.update("mh-1", state="active", firmware="1.4.2", config_version=3)
    reg.append_history("mh-1", "flashed", {"files": 2})
    got = reg.get("mh-1")
    assert (got["state"], got["firmware"], got["config_version"]) == ("active", "1.4.2", 3)
    assert got["history"][-1]["action"] == "flashed" and got["history"][-1]["detail"] == {"files": 2}
    assert got["calibration"] == {"baseline": [0, 0, 1]}


def test_find_filters_and_sorts(tmp_path):
    reg = TinyRegistry(tmp_path / "registry.json")
    reg.add(device("wl-2", "water-level"))
    reg.add(device("wl-1", "water-level", site="Bridge"))
    reg.add(device("mh-1"))
    reg.update("wl-1", state="active")
    assert [r["id"] for r in reg.all()] == ["mh-1", "wl-1", "wl-2"]
    assert [r["id"] for r in reg.find(kind="water-level")] == ["wl-1", "wl-2"]
    assert [r["id"] for r in reg.find(kind="water-level", state="active", site="Bridge")] == ["wl-1"]
    assert reg.find(site="nowhere") == []


def test_credential_hash_never_leaves_except_through_password_entries(tmp_path):
    reg = TinyRegistry(tmp_path / "registry.json")
    secret, cred = device_credential("mh-1")
    reg.add(device("mh-1", credential=cred))
    reg.add(device("mh-2", credential=device_credential("mh-2")[1]))
    for record in [reg.get("mh-1"), *reg.all(), *reg.find(kind="manhole-tilt")]:
        assert record["credential"] == {"username": record["id"]}
        assert cred["hash"] not in json.dumps(record) and secret not in json.dumps(record)
    assert reg.password_entries()[0] == ("mh-1", "mh-1", cred["hash"])
    reg.update("mh-2", state="retired")
    assert [e[0] for e in reg.password_entries()] == ["mh-1"]
    assert secret not in (tmp_path / "registry.json").read_text()  # only the hash is kept


@pytest.mark.parametrize("record, message", [
    (device("mh-1", kind="lamp"), "unknown kind 'lamp'"),
    (device("MH 1"), "bad device id 'MH 1'"),
    (device("mh-1", colour="red"), "unknown device field(s) colour"),
    (device("mh-1", state="broken"), "unknown state 'broken'"),
    (device("mh-1", site=""), "needs a site"),
    (device("mh-1", lat="north"), "lat must be a number"),
    (device("mh-1", credential={"username": "fleet-ops", "hash": None}), "reserved"),
    (device("mh-1", credential={"username": "mh-1", "hash": "plaintext"}), "not a Mosquitto $7$ hash"),
])
def test_bad_records_are_refused_with_the_field_named(tmp_path, record, message):
    reg = TinyRegistry(tmp_path / "registry.json")
    with pytest.raises(FleetError) as error:
        reg.add(record)
    assert message in str(error.value)
    assert reg.all() == []


def test_duplicate_id_and_a_board_or_username_in_use_are_refused(tmp_path):
    reg = TinyRegistry(tmp_path / "registry.json")
    reg.add(device("mh-1", uid="board-a", credential=device_credential("mh-1")[1]))
    with pytest.raises(FleetError, match="device id 'mh-1' is already in the registry"):
        reg.add(device("mh-1", "water-level"))
    with pytest.raises(FleetError, match="board board-a is already registered as device 'mh-1'"):
        reg.add(device("mh-2", uid="board-a"))
    with pytest.raises(FleetError, match="MQTT username 'mh-1' already belongs to device 'mh-1'"):
        reg.add(device("mh-3", credential=device_credential("mh-1")[1]))
    reg.update("mh-1", state="retired")
    reg.add(device("mh-2", uid="board-a"))  # a retired device's board may be provisioned again
    with pytest.raises(FleetError, match="already in the registry \\(state retired\\)"):
        reg.add(device("mh-1"))  # ids are never reused: old telemetry names them
    with pytest.raises(FleetError, match="no device 'nope'"):
        reg.update("nope", state="active")
    with pytest.raises(FleetError, match="cannot be changed"):
        reg.update("mh-2", id="mh-9")


def test_add_many_registers_a_batch_like_add_does(tmp_path):
    reg = TinyRegistry(tmp_path / "registry.json")
    secret, cred = device_credential("wl-1")
    added = reg.add_many([device("wl-1", "water-level", credential=cred), device("mh-1", uid="board-a")])
    assert [r["id"] for r in added] == ["wl-1", "mh-1"]
    assert added[0]["credential"] == {"username": "wl-1"} and cred["hash"] not in json.dumps(added)
    assert [r["id"] for r in reg.all()] == ["mh-1", "wl-1"]
    assert all(r["state"] == "provisioning" and [h["action"] for h in r["history"]] == ["registered"]
               for r in reg.all())
    assert reg.password_entries() == [("wl-1", "wl-1", cred["hash"])]
    assert reg.add_many([]) == [] and len(reg.all()) == 2


@pytest.mark.parametrize("batch, message", [
    ([device("mh-2"), device("mh-3"), device("mh-2", "wind-load")],
     "device id 'mh-2' appears twice in the batch (record 3 of 3); nothing was added"),
    ([device("mh-2", uid="board-b"), device("mh-3", uid="board-b")],
     "board board-b is given to both 'mh-2' and 'mh-3' in the batch (record 2 of 2)"),
    ([device("mh-2", credential=device_credential("x-1")[1]), device("mh-3", credential=device_credential("x-1")[1])],
     "MQTT username 'x-1' is given to both 'mh-2' and 'mh-3' in the batch (record 2 of 2)"),
    ([device("mh-2"), device("mh-1")], "device id 'mh-1' is already in the registry (state provisioning); "
                                       "choose another id (record 2 of 2); nothing was added"),
    ([device("mh-2", uid="board-a")], "board board-a is already registered as device 'mh-1'"),
    ([device("mh-2"), device("mh-3", credential=device_credential("mh-1")[1])],
     "MQTT username 'mh-1' already belongs to device 'mh-1'; use another (record 2 of 2)"),
    ([device("mh-2"), device("mh-3", kind="lamp")], "unknown kind 'lamp'; use one of"),
])
def test_add_many_refuses_the_whole_batch_at_its_first_clash(tmp_path, batch, message):
    path = tmp_path / "registry.json"
    reg = TinyRegistry(path)
    reg.add(device("mh-1", uid="board-a", credential=device_credential("mh-1")[1]))
    before = path.read_bytes()
    with pytest.raises(FleetError) as error:
        reg.add_many(batch)
    assert message in str(error.value) and str(error.value).endswith("nothing was added")
    assert path.read_bytes() == before  # all or nothing: not one record of the batch was written
    assert [r["id"] for r in reg.all()] == ["mh-1"]


def test_add_many_lets_a_batch_reuse_what_a_retired_device_held(tmp_path):
    reg = TinyRegistry(tmp_path / "registry.json")
    reg.add(device("mh-1", uid="board-a", credential=device_credential("mh-1")[1]))
    reg.update("mh-1", state="retired")
    reg.add_many([device("mh-2", uid="board-a"), device("mh-3", credential=device_credential("mh-1")[1]),
                  device("mh-4", uid="board-c", state="retired"), device("mh-5", uid="board-c")])
    assert [r["id"] for r in reg.all()] == ["mh-1", "mh-2", "mh-3", "mh-4", "mh-5"]


def test_reads_see_every_write_by_another_instance_or_process(tmp_path):
    path = tmp_path / "registry.json"
    reader = TinyRegistry(path)
    assert reader.all() == []
    TinyRegistry(path).add(device("mh-1", firmware="1.0.0"))
    assert reader.get("mh-1")["firmware"] == "1.0.0"
    # Same size, written at once: a cache keyed on (mtime, size) alone could miss this one.
    TinyRegistry(path).update("mh-1", firmware="1.0.1")
    assert reader.get("mh-1")["firmware"] == "1.0.1"
    code = "from fleet.registry import TinyRegistry; import sys; TinyRegistry(sys.argv[1]).update('mh-1', firmware='2.0.0')"
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, check=True)
    assert reader.get("mh-1")["firmware"] == "2.0.0"
    assert [r["firmware"] for r in reader.find(kind="manhole-tilt")] == ["2.0.0"]
    path.unlink()
    assert reader.all() == []


def test_what_a_read_returns_is_the_callers_to_change(tmp_path):
    reg = TinyRegistry(tmp_path / "registry.json")
    reg.add(device("mh-1", calibration={"baseline": [0, 0, 1]}))
    for record in (reg.get("mh-1"), reg.all()[0], reg.find(site="Main St 1")[0]):
        record["calibration"]["baseline"].append(9)
        record["history"].clear()
        record["state"] = "retired"
    again = reg.get("mh-1")
    assert again["calibration"] == {"baseline": [0, 0, 1]} and again["state"] == "provisioning"
    assert len(again["history"]) == 1 and reg.all()[0] == again


def test_corrupt_registry_is_one_clear_error_naming_the_file(tmp_path):
    path = tmp_path / "registry.json"
    TinyRegistry(path).add(device("mh-1"))
    path.write_text(path.read_text()[:40])
    with pytest.raises(FleetError) as error:
        TinyRegistry(path).all()
    assert str(path) in str(error.value) and "restore it from a backup" in str(error.value)
    path.write_text("[1, 2]")
    with pytest.raises(FleetError, match="not a TinyDB file"):
        TinyRegistry(path).get("mh-1")
    result = fleet(tmp_path, "devices")
    assert result.returncode == 3 and result.stderr.startswith("fleet: the registry %s" % path)
    assert len(result.stderr.strip().splitlines()) == 1


# A writer that rewrites a large registry as fast as it can; prints "go" once it is writing.
WRITER = """
import sys
from fleet.registry import TinyRegistry
reg = TinyRegistry(sys.argv[1])
print("go", flush=True)
i = 0
while True:
    i += 1
    reg.append_history("d%03d" % (i % 300), "tick", {"n": i, "pad": "x" * 200})
"""

# A writer that stops for good between writing the temporary file and renaming it, like a crash there.
STALLED_WRITER = """
import os, sys, time
import fleet.home
from fleet.registry import TinyRegistry
real_fsync = os.fsync
def fsync_then_hang(fd):
    real_fsync(fd)
    print("in-write", flush=True)
    time.sleep(600)
fleet.home.os.fsync = fsync_then_hang
TinyRegistry(sys.argv[1]).add({"id": "late", "kind": "wind-load", "site": "x"})
"""


def _start(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def _fill(path: Path, count: int) -> None:
    with TinyRegistry(path)._write() as table:  # one transaction: the test's set-up, not under test
        table.insert_multiple(new_record(device("d%03d" % i, uid="b%d" % i)) for i in range(count))


def test_killing_a_writer_at_any_moment_leaves_a_readable_registry(tmp_path):
    path = tmp_path / "registry.json"
    _fill(path, 300)
    for delay in (0.05, 0.11, 0.23, 0.31, 0.47, 0.6):
        proc = _start(WRITER, str(path))
        assert proc.stdout is not None and proc.stdout.readline() == "go\n"
        time.sleep(delay)  # a varied moment inside the loop: which write it hits is the point
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        reg = TinyRegistry(path)
        assert len(reg.all()) == 300
    ticks = sum(len(r["history"]) - 1 for r in TinyRegistry(path).all())
    assert ticks > 0, "the writer never completed a write: the kills proved nothing"


def test_a_crash_between_temp_file_and_rename_keeps_the_old_registry_and_cleans_up(tmp_path):
    path = tmp_path / "registry.json"
    reg = TinyRegistry(path)
    reg.add(device("mh-1"))
    before = path.read_bytes()
    proc = _start(STALLED_WRITER, str(path))
    assert proc.stdout is not None and proc.stdout.readline() == "in-write\n"
    proc.kill()
    proc.wait(timeout=10)
    assert path.read_bytes() == before
    leftovers = list(tmp_path.glob(".registry.json.*.tmp"))
    assert len(leftovers) == 1  # the dead writer's complete but never renamed file
    assert [r["id"] for r in TinyRegistry(path).all()] == ["mh-1"]
    TinyRegistry(path).add(device("mh-2"))  # the next writer holds the lock: the leftover is garbage
    assert not list(tmp_path.glob(".registry.json.*.tmp"))


CONCURRENT_WRITER = """
import sys
from fleet.registry import TinyRegistry
reg = TinyRegistry(sys.argv[1])
n = int(sys.argv[2])
for i in range(25):
    reg.add({"id": "p%d-%02d" % (n, i), "kind": "water-level", "site": "s%d" % n, "uid": "u%d-%d" % (n, i)})
    if i % 5 == 0:
        reg.append_history("shared", "touch", "p%d" % n)
"""


def test_concurrent_processes_lose_no_writes(tmp_path):
    path = tmp_path / "registry.json"
    TinyRegistry(path).add(device("shared"))
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_WRITER, str(path), str(n)], cwd=ROOT)
             for n in range(8)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 8
    reg = TinyRegistry(path)
    ids = {r["id"] for r in reg.all()}
    assert ids == {"shared"} | {"p%d-%02d" % (n, i) for n in range(8) for i in range(25)}
    assert len(reg.get("shared")["history"]) == 1 + 8 * 5
    assert len(reg.find(site="s3")) == 25


def test_open_registry_lives_in_fleet_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    open_registry().add(device("mh-1"))
    assert (tmp_path / "home" / "registry.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "home").stat().st_mode & 0o777 == 0o700
    assert open_registry(tmp_path / "home").get("mh-1")["id"] == "mh-1"


def test_devices_and_device_show_as_a_person_types_them(tmp_path):
    reg = open_registry(tmp_path)
    _, cred = device_credential("wl-1")
    reg.add(device("wl-1", "water-level", credential=cred, firmware="1.4.2"))
    reg.add(device("mh-1"))
    listed = fleet(tmp_path, "devices", "--kind", "water-level")
    assert listed.returncode == 0, listed.stderr
    assert "wl-1" in listed.stdout and "mh-1" not in listed.stdout and "1.4.2" in listed.stdout
    as_json = fleet(tmp_path, "devices", "--json")
    assert [r["id"] for r in json.loads(as_json.stdout)] == ["mh-1", "wl-1"]
    shown = fleet(tmp_path, "device", "show", "wl-1", "--json")
    assert json.loads(shown.stdout)["credential"] == {"username": "wl-1"}
    text = fleet(tmp_path, "device", "show", "wl-1")
    assert "registered" in text.stdout and "water-level" in text.stdout
    for output in (listed.stdout, as_json.stdout, shown.stdout, text.stdout):
        assert cred["hash"] not in output and "$7$" not in output
    unknown = fleet(tmp_path, "device", "show", "zz-9")
    assert unknown.returncode == 3
    assert unknown.stderr == "fleet: no device 'zz-9' in the registry; `fleet devices` lists them\n"
    assert "Example:" in fleet(tmp_path, "devices", "--help").stdout
    assert "Example:" in fleet(tmp_path, "device", "show", "--help").stdout
    assert "Example:" in fleet(tmp_path, "device", "retire", "--help").stdout
