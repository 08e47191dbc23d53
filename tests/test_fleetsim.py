"""tools/fleetsim without a broker: MQTT packets, scenario values, one device's messages and ledger, the
report's gap rule, batch provisioning and the CLI's refusals."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from fleet.errors import FleetError
from protocols import up, up_status
from protocols.commands import Ping, Rebirth
from protocols.config import Config
from protocols.errors import ProtocolError
from protocols.messages import decode, decode_up, encode
from tools.fleetsim import device as simdevice
from tools.fleetsim import items, report
from tools.fleetsim import mqttwire as wire
from tools.fleetsim import session as simsession
from tools.fleetsim.context import Context, Settings
from tools.fleetsim.scenario import AIR_DENSITY, DRAG_COEFF, QUANTITIES, Variation, Weather, load

T0 = 1_800_000_000.0  # the simulated clock's start (Unix seconds)


# ---- MQTT packets ----

def test_connect_packet_carries_will_and_credentials():
    packet = wire.connect("c", 60, "u", "p", ("t", b"x", 1, True))
    # clean session 0x02, will 0x04, will QoS 1 0x08, will retain 0x20, password 0x40, username 0x80
    assert packet == bytes.fromhex("1019" "00044d515454" "04" "ee" "003c" "000163" "000174" "000178" "000175"
                                   "000170")


@pytest.mark.parametrize("n, encoded", [(0, "00"), (127, "7f"), (128, "8001"), (16383, "ff7f"), (16384, "808001"),
                                        (268_435_455, "ffffff7f")])
def test_remaining_length(n, encoded):
    assert wire.varint(n).hex() == encoded


def test_reader_cuts_packets_wherever_the_bytes_break():
    stream = (wire.publish(b"cmd/city/d1/ping", bytes(300), 1, 7) + b"\x40\x02\x00\x09" + b"\x90\x03\x00\x01\x01"
              + wire.publish(b"a/b", b"xy", 0))
    whole = wire.Reader().feed(stream)
    reader = wire.Reader()
    pieces = [p for i in range(len(stream)) for p in reader.feed(stream[i:i + 1])]
    assert pieces == whole
    assert [kind for kind, _flags, _body in whole] == [wire.PUBLISH, wire.PUBACK, wire.SUBACK, wire.PUBLISH]
    assert wire.parse_publish(whole[0][1], whole[0][2]) == ("cmd/city/d1/ping", bytes(300), 1, 7)
    assert wire.parse_publish(whole[3][1], whole[3][2]) == ("a/b", b"xy", 0, 0)


# ---- scenario values ----

def test_values_follow_the_emulator_scenarios():
    rnd = random.Random(1)
    plain = Variation()  # the scenario itself: no offset, scale 1, no noise
    rain = Weather(load("rainstorm"))
    assert rain.values("water-level", 720, plain, rnd) == [("level", 350, None)]  # 35 cm at the peak, in mm
    assert rain.values("water-level", 420, plain, rnd) == [("level", 185, None)]  # halfway up 2..35 cm
    lift = Weather(load("manhole-lift"))
    assert lift.values("manhole-tilt", 100, plain, rnd) == [("tilt", 75.0, None), ("accel", 9.81, "m/s2")]
    storm = Weather(load("typhoon"))
    (_, wind, _), (_, gust, unit), (_, force, _) = storm.values("wind-load", 900, plain, rnd)
    assert wind == 40.0 and 31.0 <= gust <= 49.0 and unit == "m/s"
    assert force == pytest.approx(0.5 * AIR_DENSITY * DRAG_COEFF * QUANTITIES["area_m2"][0] * gust * gust, rel=1e-3)
    assert storm.battery_mv(900) == 3900 and storm.rssi(900) == -95 and storm.battery_mv(1800) == 3950  # looped
    assert Weather(load("typhoon")).quantity("level_cm", 5) == 0.0  # no series: the emulator's default


@pytest.mark.parametrize("kind", ["water-level", "manhole-tilt", "wind-load"])
def test_every_kind_packs_into_telemetry_the_fleet_reads(kind):
    from protocols.senml_pack import PackBuilder

    rnd = random.Random(3)
    weather = Weather(load("typhoon"))
    values = weather.values(kind, 870, Variation(rnd), rnd)
    builder = PackBuilder(4)
    for name, value, unit in values:
        builder.add(name, value, int(T0), unit)
    message = decode_up("telemetry", up.telemetry(2, 9, builder.pack(900)))
    records = message.records(T0)
    assert [(r.name, r.value, r.time, r.update) for r in records] == [(n, v, T0, 900) for n, v, _u in values]


def test_unknown_scenario_is_refused():
    with pytest.raises(Exception, match="no scenario"):
        load("monsoon")


# ---- one device, on a fake connection ----

class FakeConn:
    """Stands in for the socket: keeps what the device writes."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.transport = object()

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        self.sent.append(wire.DISCONNECT_PACKET)

    def abort(self) -> None:
        self.transport = None

    def published(self) -> list[tuple[str, bytes, int, int, int]]:
        """(topic, payload, pid, dup, retain) of each PUBLISH written, then forget them."""
        out = []
        for kind, flags, body in wire.Reader().feed(b"".join(self.sent)):
            if kind == wire.PUBLISH:
                topic, payload, _qos, pid = wire.parse_publish(flags, body)
                out.append((topic, payload, pid, flags >> 3 & 1, flags & 1))
        self.sent.clear()
        return out


@pytest.fixture
def make_device():
    loop = asyncio.new_event_loop()

    def make(kind="water-level", **settings):
        ctx = Context(Settings(**{"scenario": "rainstorm", **settings}), loop, T0, loop.time(), 5)
        dev = simdevice.SimDevice(ctx, {"id": "sim-x-1", "kind": kind, "username": "sim-x-1", "password": "pw"})
        return dev

    yield make
    loop.close()


def online(dev) -> FakeConn:
    conn = FakeConn()
    dev.conn = conn
    dev.state = simsession.ONLINE
    dev.next_send = -1e9
    return conn


def test_birth_and_telemetry_are_the_agent_bytes(make_device):
    dev = make_device()
    conn = online(dev)
    dev.birth()
    dev.tick()
    (topic1, birth, pid1, _d, retain1), (topic2, pack, pid2, _d2, retain2) = conn.published()
    assert topic1 == "dt/city/sim-x-1/state" and retain1 == 1
    assert birth == up_status.state(1, 0, True, "sim-1.0", 0, 1, "water")
    assert topic2 == "dt/city/sim-x-1/telemetry" and retain2 == 0
    telemetry = decode(topic2, pack)
    assert (telemetry.boot, telemetry.seq) == (1, 1)
    (record,) = telemetry.records(T0)
    assert record.name == "level" and record.unit == "mm" and record.update == 900  # ut after a birth
    dev.tick()
    assert decode_up("telemetry", conn.published()[0][1]).records(T0)[0].update is None
    dev.on_puback(pid1)
    dev.on_puback(pid2)
    entry = dev.ledger.boot(1).to_json()
    assert entry["acked"] == [[0, 1]] and entry["births"] == [0] and entry["readings"] == 1
    assert entry["telemetry"] == 1  # the second pack is still in flight


def test_offline_a_full_outbox_drops_the_oldest_health_is_skipped_and_an_ack_is_kept(make_device):
    dev = make_device(outbox_max=3)
    dev.tick()  # seq 0
    dev.tick()  # seq 1
    dev.tick()  # seq 2
    dev.health()  # due while offline: skipped, no seq used (agent/app.py health)
    dev.on_command("cmd/city/sim-x-1/ping", encode(Ping(7, 1234)))  # seq 3: into the outbox; 0 is dropped
    assert [item[2] for item in dev.outbox] == [1, 2, 3]
    assert dev.ledger.boot(1).lost.pairs() == [[0, 0]]
    conn = online(dev)
    dev.pump()
    sent = [decode(t, p) for t, p, *_ in conn.published()]
    assert [(type(m).__name__, m.seq) for m in sent] == [("Telemetry", 1), ("Telemetry", 2), ("Ack", 3)]


def test_a_lost_connection_requeues_the_outbox_in_order(make_device):
    dev = make_device()
    conn = online(dev)
    dev.will = (1, 40)
    for _ in range(3):
        dev.tick()
    dev.tick()
    assert sorted(item[2] for item in dev.inflight.values()) == [0, 1, 2, 3]  # the window of 4
    dev.health()
    dev.birth()
    dev.on_lost(conn)  # the connection died on its own: the outbox resends, the health not acknowledged
    # is appended to it (agent/app.py publish_now); the birth is sent again on the next session
    assert [item[2] for item in dev.outbox] == [0, 1, 2, 3, 4]
    assert dev.outbox[-1][0] == items.OUTBOX and dev.outbox[-1][3] == items.HEALTH
    assert dev.ledger.boot(1).uncertain == [[5, "state"], [40, "state"]]
    assert dev.state == simsession.OFFLINE and not dev.inflight


def test_reordering_sends_a_record_before_the_one_ahead_of_it(make_device):
    dev = make_device()
    for _ in range(3):
        dev.tick()
    dev.reorder = True
    conn = online(dev)
    dev.pump()
    assert [decode_up("telemetry", p).seq for _t, p, *_ in conn.published()] == [1, 0, 2]
    assert dev.ledger.reordered == 1


def test_a_planned_cut_publishes_the_will_and_a_clean_end_does_not(make_device):
    dev = make_device()
    conn = online(dev)
    dev.will = (1, 0)
    dev.state = simsession.OUTAGE
    dev.planned = "abort"
    dev.on_lost(conn)
    conn = online(dev)
    dev.will = (1, 5)
    dev.stop()
    dev.on_lost(conn)
    boot = dev.ledger.boot(1)
    assert boot.wills == [0] and boot.reserved == [5] and boot.uncertain == []


def test_commands_are_acknowledged_like_the_agent(make_device):
    dev = make_device()
    conn = online(dev)
    dev.on_command("cmd/city/sim-x-1/ping", encode(Ping(7, 1234)))
    dev.on_command("cmd/city/sim-x-1/config", encode(Config(8, 3, heartbeat=600)))
    dev.on_command("cmd/city/sim-x-1/ota", b"\xa0")  # unreadable: no cid, no ack
    dev.on_command("cmd/city/sim-x-1/rebirth", encode(Rebirth(82)))
    sent = conn.published()
    acks = [decode(t, p) for t, p, *_ in sent if t.endswith("/ack")]
    assert [(a.cid, a.status, a.config, a.result) for a in acks] == [(7, 0, 0, 1234), (8, 0, 3, None),
                                                                     (82, 0, 3, None)]
    assert any(t.endswith("/state") for t, *_ in sent)  # the rebirth's birth
    assert dev.ledger.commands == 3 and dev.ctx.stats.errors == {"bad_command": 1}


def test_misbehaviour_resends_with_dup_and_counts_it(make_device):
    dev = make_device(misbehave_p=1.0)
    dev.misbehaves = True
    conn = online(dev)
    dev.ctx.rnd = random.Random(0)
    dev._store(items.TELEMETRY, dev.next_seq(), up.telemetry(1, 0, [{0: "level", 2: 3, 6: int(T0)}]), 1)
    dev.pump()
    (_t, payload, pid, dup, _r), = conn.published()
    dev.on_puback(pid)

    class First:  # always the duplicate, always the first recent message
        def random(self) -> float:
            return 0.1

        def choice(self, items):
            return items[0]

    dev.ctx.rnd = First()
    dev.misbehave()
    (_t, again, pid2, dup2, _r), = conn.published()
    assert (again, dup, dup2) == (payload, 0, 1)
    dev.on_puback(pid2)
    assert dev.ledger.duplicates == 1 and dev.ledger.boot(1).acked.pairs() == [[0, 0]]


def test_every_kind_of_garbage_is_refused_by_the_fleet_reader():
    class Pick:
        def __init__(self, n: int) -> None:
            self.n = n

        def randrange(self, _top: int) -> int:
            return self.n

    reasons = []
    for n in range(5):
        kind, payload = simdevice.garbage(Pick(n), 3)  # type: ignore[arg-type]
        with pytest.raises(ProtocolError) as error:
            decode_up(items.TOPIC_KINDS[kind], payload)
        reasons.append(error.value.reason)
    assert reasons == ["bad_cbor", "too_large", "bad_field", "missing_field", "bad_type"]


# ---- the report ----

def test_ranges_merge_in_any_order():
    r = report.Ranges()
    for n in (0, 1, 2, 5, 4, 9, 3, 7):
        assert r.add(n)
    assert not r.add(4)
    assert r.pairs() == [[0, 5], [7, 7], [9, 9]] and len(r) == 8 and 7 in r and 8 not in r


def boot_entry(**fields):
    entry = {"acked": [], "births": [], "wills": [], "lost": [], "reserved": [], "uncertain": [], "readings": 0,
             "telemetry": 0}
    entry.update(fields)
    return entry


def test_expected_gaps_follow_what_the_device_never_published():
    # 0 will (published at the outage), 1 birth, 2-3 telemetry, 4 health during the outage, 5 a failed
    # attempt's will, 6 the will of the session that ended cleanly, 7 birth, 8-9 telemetry
    entry = boot_entry(acked=[[1, 3], [7, 9]], births=[1, 7], wills=[0], lost=[[4, 4]], reserved=[5, 6])
    assert report.expected_gaps(entry) == [(4, 5)]
    unsure = boot_entry(acked=[[0, 3], [5, 6]], births=[0], uncertain=[[4, "telemetry"]])
    assert report.expected_gaps(unsure) == [(4, 4)]
    assert report.expected_gaps(unsure, stored={0, 1, 2, 3, 4, 5, 6}) == []
    assert report.expected_gaps(boot_entry(lost=[[9, 9]])) == []


def test_reports_of_several_processes_merge():
    def part(name, readings, publishes):
        dev = report.DeviceLedger("water-level")
        dev.boot(1).readings = readings
        dev.boot(1).acked.add(0)
        devices = {name: dev.to_json()}
        totals = report.totals(devices)
        totals.update(publishes=publishes, messages_s=10.0, connected=1, rss_mb=5.0, max_lag_s=0.5)
        return {"fleet": "city", "totals": totals, "process": {"index": 0}, "devices": devices}

    merged = report.merge([part("b", 3, 7), part("a", 4, 9)])
    assert list(merged["devices"]) == ["a", "b"]
    assert merged["totals"]["readings"] == 7 and merged["totals"]["acked"] == 2
    assert merged["totals"]["publishes"] == 16 and merged["totals"]["messages_s"] == 20.0


# ---- provisioning and the CLI ----

def test_provision_registers_a_batch_with_working_credentials(tmp_path):
    from fleet.broker import write_broker_files
    from fleet.credentials import verify_secret
    from fleet.registry import open_registry
    from tools.fleetsim.provision import provision

    home = tmp_path / "home"
    home.mkdir()
    write_broker_files(open_registry(home), home=home, port=18999)
    figures = provision(home, 7, "mixed", reload=False)
    doc = json.loads(Path(figures["devices_file"]).read_text())
    assert doc["broker"] == {"host": "127.0.0.1", "port": 18999} and doc["fleet"] == "city"
    records = open_registry(home).all()
    assert [(r["id"], r["kind"], r["state"]) for r in records[:3]] == [
        ("sim-mh-00002", "manhole-tilt", "active"), ("sim-mh-00005", "manhole-tilt", "active"),
        ("sim-wd-00003", "wind-load", "active")]
    hashes = {device: hashed for device, _user, hashed in open_registry(home).password_entries()}
    assert all(verify_secret(d["password"], hashes[d["id"]]) for d in doc["devices"])
    broker = home / "broker"
    assert len((broker / "passwd").read_text().splitlines()) == 8  # fleet-ops and the seven
    assert "topic write dt/city/sim-wl-00007/#" in (broker / "acl").read_text()
    with pytest.raises(FleetError, match="registered already"):
        provision(home, 3, "water-level", reload=False)
    provision(home, 3, "water-level", first=8, reload=False)
    assert len(json.loads(Path(figures["devices_file"]).read_text())["devices"]) == 10


def test_cli_refuses_both_rates(tmp_path, capsys):
    from tools.fleetsim.cli import main

    path = tmp_path / "devices.json"
    path.write_text(json.dumps({"fleet": "city", "broker": {"host": "127.0.0.1", "port": 1}, "devices": []}))
    assert main(["run", "--devices", str(path), "--rate", "1", "--total-rate", "5"]) == 1
    assert "fleet-sim: give --rate (per device) or --total-rate" in capsys.readouterr().err
    assert main(["run", "--devices", str(tmp_path / "missing.json")]) == 1
    assert "no devices file" in capsys.readouterr().err
