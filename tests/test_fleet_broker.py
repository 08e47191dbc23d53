"""Mosquitto's files from the registry; a real mosquitto runs them: our hashes let the right secret in
and nothing else; `fleet broker config` and `fleet device retire` as a person runs them.

The ACL itself (who may publish and read what) is proven in hil_tests/test_fleet_broker_acl.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from fleet.broker import ops_secret, reload_broker, run_broker, write_broker_files
from fleet.credentials import device_credential
from fleet.errors import FleetError
from fleet.home import set_fleet_name
from fleet.registry import open_registry
from tests.brokerproc import free_port

ROOT = Path(__file__).resolve().parents[1]


def fleet(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleet.cli.main", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "FLEET_HOME": str(home)}, stdin=subprocess.DEVNULL,
                          check=False)


def registry_with_devices(home: Path) -> tuple[object, dict[str, str]]:
    """d-a active and d-b provisioning with credentials, d-c retired, d-d without a credential."""
    reg = open_registry(home)
    secrets = {}
    for device_id, state in (("d-a", "active"), ("d-b", "provisioning"), ("d-c", "active")):
        secrets[device_id], cred = device_credential(device_id)
        reg.add({"id": device_id, "kind": "water-level", "site": "x", "credential": cred, "state": state})
    reg.update("d-c", state="retired")
    reg.add({"id": "d-d", "kind": "wind-load", "site": "y"})
    return reg, secrets


def connect(port: int, user: str | None, password: str | None, timeout: float = 10.0):
    """The broker's answer to a CONNECT (a paho ReasonCode); the network loop runs here, no thread."""
    answers: list = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    if user is not None:
        client.username_pw_set(user, password)
    client.on_connect = lambda c, u, flags, reason, props: answers.append(reason)
    client.connect("127.0.0.1", port)
    deadline = time.monotonic() + timeout
    try:
        while not answers:
            assert time.monotonic() < deadline, "no CONNACK within %.0f s" % timeout
            client.loop(timeout=0.05)
        return answers[0]
    finally:
        client.disconnect()


def test_files_hold_every_live_credential_and_a_per_device_acl(tmp_path):
    reg, _ = registry_with_devices(tmp_path)
    files = write_broker_files(reg, home=tmp_path)
    assert files.folder == tmp_path / "broker" and (files.port, files.bind, files.devices) == (1883, "127.0.0.1", 2)
    users = [line.split(":", 1)[0] for line in files.passwd.read_text().splitlines()]
    assert users == ["fleet-ops", "d-a", "d-b"]
    assert all(line.split(":", 1)[1].startswith("$7$101$") for line in files.passwd.read_text().splitlines())
    acl = files.acl.read_text()
    assert acl.split("\n\n")[1:] == [
        "user fleet-ops\ntopic read dt/city/#\ntopic write cmd/city/#",
        "user d-a\ntopic write dt/city/d-a/#\ntopic read cmd/city/d-a/#",
        "user d-b\ntopic write dt/city/d-b/#\ntopic read cmd/city/d-b/#\n",
    ]
    conf = files.conf.read_text().splitlines()
    for line in ("listener 1883 127.0.0.1", "allow_anonymous false", "password_file %s" % files.passwd,
                 "acl_file %s" % files.acl, "pid_file %s" % files.pid_file, "persistence true",
                 "persistence_location %s/" % files.folder, "max_queued_messages 1000000", "max_queued_bytes 268435456",
                 "max_inflight_messages 20", "max_connections -1"):
        assert line in conf
    assert any("open-files limit" in line for line in conf)
    assert "[Service]\nLimitNOFILE=65536\n" in files.dropin.read_text()
    modes = {p.name: p.stat().st_mode & 0o777 for p in (files.passwd, files.acl, files.conf)}
    assert modes == {"passwd": 0o600, "acl": 0o640, "mosquitto.conf": 0o640}
    assert (tmp_path / "ops.secret").stat().st_mode & 0o777 == 0o600


def test_rewrites_keep_the_listener_and_unchanged_input_gives_the_same_bytes(tmp_path):
    reg, _ = registry_with_devices(tmp_path)
    first = write_broker_files(reg, home=tmp_path, port=18830, bind="0.0.0.0")
    before = {p: p.read_bytes() for p in (first.passwd, first.acl, first.conf, first.dropin)}
    secret = ops_secret(tmp_path)
    again = write_broker_files(reg, home=tmp_path)  # as provision and retire call it: no listener given
    assert (again.port, again.bind) == (18830, "0.0.0.0")
    assert {p: p.read_bytes() for p in before} == before
    assert ops_secret(tmp_path) == secret
    assert not list(first.folder.glob(".*.tmp"))


def test_the_fleet_name_from_fleet_json_is_in_every_topic(tmp_path):
    reg, _ = registry_with_devices(tmp_path)
    set_fleet_name("north-1", tmp_path)
    acl = write_broker_files(reg, home=tmp_path).acl.read_text()
    assert "topic write dt/north-1/d-a/#" in acl and "city" not in acl
    with pytest.raises(FleetError, match="bad fleet name"):
        set_fleet_name("North/1", tmp_path)
    (tmp_path / "fleet.json").write_text('{"fleet": "a b"}')
    with pytest.raises(FleetError, match="bad fleet name 'a b' in %s" % (tmp_path / "fleet.json")):
        write_broker_files(reg, home=tmp_path)


def test_a_real_mosquitto_lets_in_exactly_the_right_secrets_and_reloads_on_sighup(tmp_path):
    reg, secrets = registry_with_devices(tmp_path)
    files = write_broker_files(reg, home=tmp_path, port=free_port())
    assert not reload_broker(files.folder)  # nothing runs yet
    proc = run_broker(files.folder)
    try:
        assert not connect(files.port, "d-a", secrets["d-a"]).is_failure
        assert not connect(files.port, "fleet-ops", ops_secret(tmp_path)).is_failure
        assert connect(files.port, "d-a", secrets["d-b"]).is_failure
        assert connect(files.port, "d-c", secrets["d-c"]).is_failure  # retired
        assert connect(files.port, "nobody", "x").is_failure
        assert connect(files.port, None, None).is_failure  # anonymous
        assert reload_broker(files.folder)
        assert not connect(files.port, "d-b", secrets["d-b"]).is_failure  # still up after SIGHUP
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert not reload_broker(files.folder)  # a pid file left by a dead broker names no mosquitto


def test_fleet_broker_config_and_retire_as_a_person_types_them(tmp_path):
    _, _secrets = registry_with_devices(tmp_path)
    port = free_port()
    result = fleet(tmp_path, "broker", "config", "--port", str(port), "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["port"] == port and out["reloaded"] is False and Path(out["conf"]).exists()
    text = fleet(tmp_path, "broker", "config")
    assert "wrote broker files for 2 device(s)" in text.stdout and "127.0.0.1:%d" % port in text.stdout
    assert "Example:" in fleet(tmp_path, "broker", "config", "--help").stdout

    refused = fleet(tmp_path, "device", "retire", "d-a")  # no terminal to confirm on
    assert refused.returncode == 3 and refused.stderr == "fleet: retiring d-a needs confirmation: add --yes\n"
    assert open_registry(tmp_path).get("d-a")["state"] == "active"
    retired = fleet(tmp_path, "device", "retire", "d-a", "--yes")
    assert retired.returncode == 0, retired.stderr
    assert "retired d-a" in retired.stdout and "no running broker" in retired.stdout
    record = open_registry(tmp_path).get("d-a")
    assert record["state"] == "retired" and record["history"][-1]["action"] == "retired"
    passwd = (tmp_path / "broker" / "passwd").read_text()
    assert "d-a:" not in passwd and "d-b:" in passwd
    assert "listener %d 127.0.0.1" % port in (tmp_path / "broker" / "mosquitto.conf").read_text()
    unknown = fleet(tmp_path, "device", "retire", "zz", "--yes")
    assert unknown.returncode == 3 and unknown.stderr.startswith("fleet: no device 'zz'")
