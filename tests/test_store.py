"""The fleet store (fleet/store) against both backends: SQLite in tmp_path and the machine's PostgreSQL.

PostgreSQL: 127.0.0.1:5432, user postgres, trust auth. One database per test session (dropped at the end),
one schema per test. A server that is not reachable FAILS the PostgreSQL tests; it never skips them.
Inputs are built with the real protocol classes and go through encode/decode as on the wire.
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from fleet.errors import FleetError
from fleet.store import Batch, BatchResult, FleetAlarm, Gap, Inbound, Quarantined, Reading, Store, open_store
from fleet.store.model import HISTORICAL_AFTER_S
from protocols.ack import OK, Ack
from protocols.event import ALARM, CLEARED, RAISED, WARNING, Event
from protocols.health import Health
from protocols.messages import decode, encode
from protocols.ota import DOWNLOADING, OtaProgress
from protocols.senml_pack import PackBuilder
from protocols.state import WATCHDOG, State
from protocols.telemetry import Telemetry

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
T0 = 1_760_000_000.0  # a receipt time (2025), far above 2**28: absolute


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL for this test session, dropped afterwards."""
    import psycopg

    try:
        admin = psycopg.connect(PG_SERVER + "/postgres", autocommit=True, connect_timeout=5)
    except psycopg.Error as error:
        pytest.fail("PostgreSQL is not reachable at %s/postgres as user postgres (%s): start the server "
                    "(trust auth for postgres on 127.0.0.1) to run the PostgreSQL store tests"
                    % (PG_SERVER, str(error).strip().splitlines()[0]), pytrace=False)
    name = "cityfleet_test_%d_%s" % (os.getpid(), secrets.token_hex(4))
    admin.execute('CREATE DATABASE "%s"' % name)
    try:
        yield "%s/%s" % (PG_SERVER, name)
    finally:
        admin.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """URL of an empty store of each backend (PostgreSQL: a schema of its own in the session database)."""
    if request.param == "sqlite":
        return "sqlite:///%s" % (tmp_path / "fleet.db")
    import psycopg

    database = request.getfixturevalue("pg_database")
    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA %s" % schema)
    return database + "?options=-csearch_path%3D" + schema


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store(store_url) as opened:
        yield opened


# ---------------------------------------------------------------- messages as the ingest makes them
def inbound(device: str, message: Any, received: float = T0) -> Inbound:
    """The Inbound of `message` after a trip over the wire (encode -> decode), readings resolved."""
    decoded: Any = decode("dt/city/%s/%s" % (device, message.KIND), encode(message))
    item = Inbound(device, message.KIND, decoded.boot, decoded.seq, received, decoded)
    if message.KIND == "telemetry":
        for record in decoded.records(received):
            item.readings.append(Reading(device, record.name, float(record.time), record.value, record.unit,
                                         decoded.boot, decoded.seq, received,
                                         record.time < received - HISTORICAL_AFTER_S))
            if record.update is not None:
                item.ut[record.name] = int(record.update)
    return item


def telemetry(device: str, boot: int, seq: int, readings: list[tuple[str, float, int]] | None = None,
              received: float = T0, ut: int | None = None) -> Inbound:
    """Telemetry of (name, value, time) readings; time < 2**28 is relative to `received`."""
    builder = PackBuilder()
    for name, value, at in readings or [("level", 10.0 + seq, 0)]:
        builder.add(name, value, at)
    return inbound(device, Telemetry(boot, seq, builder.pack(ut)), received)


def birth(device: str, boot: int, seq: int, received: float = T0) -> Inbound:
    return inbound(device, State(boot, seq, True, "1.4.2", 3, WATCHDOG, "water"), received)


def will(device: str, boot: int, seq: int, received: float = T0) -> Inbound:
    return inbound(device, State(boot, seq, False), received)


def event(device: str, seq: int, state: int, since: float = -30, alarm: str = "flood", boot: int = 1,
          received: float = T0) -> Inbound:
    value, threshold = (280, 270) if state == RAISED else (110, 120)
    return inbound(device, Event(boot, seq, alarm, state, ALARM, value, threshold, since), received)


def count_readings(store: Store, device: str) -> int:
    return len(store.readings(device))


# ---------------------------------------------------------------- dedupe, gaps, readings
def test_duplicates_dropped_within_and_across_batches(store: Store) -> None:
    first = store.ingest(Batch([telemetry("wl1", 1, 1), telemetry("wl1", 1, 2), telemetry("wl1", 1, 2)]))
    assert (first.stored, first.duplicates, first.readings) == (2, 1, 2)
    again = store.ingest(Batch([telemetry("wl1", 1, 2), telemetry("wl1", 1, 3), telemetry("wl1", 2, 2)]))
    assert (again.stored, again.duplicates, again.readings) == (2, 1, 2)  # seq 2 of boot 2 is new
    assert [(r.boot, r.seq) for r in store.readings("wl1")] == [(1, 1), (1, 2), (2, 2), (1, 3)]  # time, seq
    # a duplicate changes nothing, not even last_seen
    store.ingest(Batch([telemetry("wl1", 1, 1, received=T0 + 500)]))
    assert store.status("wl1")[0].last_seen == T0
    assert store.ingest(Batch()) == BatchResult(0, 0, 0, 0)


def test_gaps_from_the_seen_keys(store: Store) -> None:
    batch = [telemetry("wl1", 7, seq) for seq in (1, 2, 5, 6, 9)]
    batch += [telemetry("wl1", 8, seq) for seq in (100, 102)] + [telemetry("mh1", 1, s) for s in (1, 2, 3)]
    store.ingest(Batch(batch))
    assert store.gaps() == [Gap("wl1", 7, 3, 4), Gap("wl1", 7, 7, 8), Gap("wl1", 8, 101, 101)]
    assert store.gaps("mh1") == []
    # the backlog arrives (out of order): the gaps close
    store.ingest(Batch([telemetry("wl1", 7, 4), telemetry("wl1", 7, 3), telemetry("wl1", 8, 101)]))
    assert store.gaps("wl1") == [Gap("wl1", 7, 7, 8)]


def test_the_will_reserved_before_a_birth_is_not_a_gap(store: Store) -> None:
    # Session 1: birth 2 (will reserved as 1, never sent: clean disconnect); session 2 reserves 5 for its
    # will and sends birth 6; the telemetry 4 really went missing.
    store.ingest(Batch([birth("wl1", 3, 2), telemetry("wl1", 3, 3), birth("wl1", 3, 6), telemetry("wl1", 3, 7)]))
    assert store.gaps("wl1") == [Gap("wl1", 3, 4, 4)]
    # a number lost just before a will is a gap: only a birth's predecessor is the reserved will
    store.ingest(Batch([will("wl1", 3, 9)]))
    assert store.gaps("wl1") == [Gap("wl1", 3, 4, 4), Gap("wl1", 3, 8, 8)]


def test_historical_readings_stored_at_their_own_time(store: Store) -> None:
    old = telemetry("wl1", 1, 1, [("level", 40, -3600), ("level", 41, -1800)], ut=900)
    now = telemetry("wl1", 1, 2, [("level", 55, 0), ("wind", 3.5, int(T0) - 10)])
    store.ingest(Batch([now, old]))  # arrival order is not time order
    rows = store.readings("wl1")
    assert [(r.name, r.time, r.value, r.historical) for r in rows] == [
        ("level", T0 - 3600, 40, True), ("level", T0 - 1800, 41, True),
        ("wind", T0 - 10, 3.5, False), ("level", T0, 55, False)]
    assert rows[0].unit == "mm" and rows[2].unit == "m/s" and rows[0].received == T0
    assert [r.value for r in store.readings("wl1", since=T0 - 1800, until=T0)] == [41, 3.5]
    assert [r.value for r in store.readings("wl1", name="level", limit=2)] == [41, 55]
    assert store.status("wl1")[0].ut == {"level": 900}


def test_text_and_boolean_values_keep_their_type(store: Store) -> None:
    pack = [{0: "door", 4: True}, {0: "mode", 3: "service\x00x"}, {0: "level", 2: 12.5, 6: -5}]
    store.ingest(Batch([inbound("wl1", Telemetry(1, 1, pack))]))
    values = {r.name: r.value for r in store.readings("wl1")}
    assert values["door"] is True and values["level"] == 12.5
    assert values["mode"] == "service\ufffdx"  # NUL made storable (PostgreSQL text refuses it)


def test_summary_per_interval(store: Store) -> None:
    base = int(T0) // 600 * 600  # a 10-minute boundary
    readings = [("level", v, base + t) for v, t in ((10, 0), (20, 100), (30, 599), (5, 600), (7, 1199))]
    store.ingest(Batch([telemetry("wl1", 1, 1, readings + [("tilt", 1.0, base + 5)])]))
    rows = [(r.name, r.start, r.count, r.min, r.max, r.mean) for r in store.summary("wl1", 600)]
    assert rows == [("level", base, 3, 10, 30, 20), ("tilt", base, 1, 1, 1, 1), ("level", base + 600, 2, 5, 7, 6)]
    window = store.summary("wl1", 600, since=base + 100, until=base + 1199)  # until is exclusive
    assert [(r.name, r.count, r.mean) for r in window] == [("level", 2, 25), ("level", 1, 5)]


# ---------------------------------------------------------------- alarms and feed
def test_alarm_open_close_ack_and_feed(store: Store) -> None:
    store.ingest(Batch([event("wl1", 1, RAISED, since=-30)]))
    store.ingest(Batch([event("wl1", 2, RAISED, since=-5, received=T0 + 60)],
                       fleet_alarms=[FleetAlarm("wl1", "flood", 1, ALARM, 281.0, 270.0, T0 - 20, T0)]))
    active = store.alarms(active=True)
    assert sorted((a.source, a.raised_at, a.raise_value, a.boot) for a in active) == [
        ("device", T0 - 30, 280, 1), ("fleet", T0 - 20, 281, None)]  # the resent raise kept the open one
    assert [a.source for a in store.open_fleet_alarms()] == ["fleet"]
    device_alarm = next(a for a in active if a.source == "device")

    store.ingest(Batch([event("wl1", 3, CLEARED, since=-10, received=T0 + 600), event("mh1", 1, CLEARED)]))
    closed = next(a for a in store.alarms(device="wl1") if a.id == device_alarm.id)
    assert (closed.cleared_at, closed.clear_value) == (T0 + 590, 110)
    assert [a.source for a in store.alarms(active=True)] == ["fleet"]
    assert store.alarms(device="mh1") == []  # a clear without an open alarm: only a feed item

    acked = store.ack_alarm(device_alarm.id, "ana", "pump started", at=T0 + 700)
    assert (acked.acked_by, acked.acked_at, acked.note) == ("ana", T0 + 700, "pump started")
    with pytest.raises(FleetError, match="no alarm with id 999"):
        store.ack_alarm(999, "ana")

    store.ingest(Batch(fleet_alarms=[FleetAlarm("wl1", "flood", 0, ALARM, 100.0, 120.0, T0 + 800, T0 + 830)]))
    assert store.alarms(active=True) == [] and store.open_fleet_alarms() == []
    feed = store.feed()
    assert [(f.kind, f.device) for f in feed] == [("alarm", "wl1"), ("alarm", "wl1"), ("clear", "wl1"),
                                                  ("clear", "mh1"), ("ack", "wl1"), ("clear", "wl1")]
    assert [f.id for f in store.feed(after_id=feed[3].id, limit=1)] == [feed[4].id]


def test_levels_and_sources_are_separate_alarms(store: Store) -> None:
    warn = inbound("wl1", Event(1, 1, "flood_warn", RAISED, WARNING, 160, 150, int(T0) - 100))  # absolute
    store.ingest(Batch([warn, event("wl1", 2, RAISED, since=-60)]))
    assert sorted((a.alarm, a.level, a.raised_at) for a in store.alarms(active=True)) == [
        ("flood", ALARM, T0 - 60), ("flood_warn", WARNING, T0 - 100)]


# ---------------------------------------------------------------- status
def test_status_birth_will_health_ack_ota(store: Store) -> None:
    assert store.status() == []
    store.ingest(Batch([birth("wl1", 4, 10, received=T0 - 7200), birth("wl1", 5, 20, received=T0)]))
    health = [inbound("wl1", Health(5, 21 + i, 60 * i, outbox=i, battery=3700, errors={"i2c": 2}),
                      received=T0 + i) for i in range(6)]
    store.ingest(Batch([*health, inbound("wl1", Health(4, 19, 5, outbox=99), received=T0 + 7)]))
    store.ingest(Batch([will("wl1", 4, 9, received=T0 + 10)]))  # a late will of the old session
    status = store.status("wl1", now=T0 + 20)[0]
    assert (status.online, status.boot, status.firmware, status.config_version, status.reset_cause,
            status.sensor, status.offline_at) == (True, 5, "1.4.2", 3, WATCHDOG, "water", None)
    assert status.births_24h == 2 and store.status("wl1", now=T0 + 80000)[0].births_24h == 1
    assert status.outbox_trend == [2, 3, 4, 5]  # the boot-4 health (outbox 99) is not of this boot
    assert status.health == {"uptime": 5, "outbox": 99}  # the last one to arrive
    assert (status.first_seen, status.last_seen, status.health_at) == (T0 - 7200, T0 + 10, T0 + 7)

    ack = inbound("wl1", Ack(5, 30, 77, OK, config=4, result=12345), received=T0 + 30)
    ota = inbound("wl1", OtaProgress(5, 31, 80, DOWNLOADING, percent=42, target="1.5.0"))
    store.ingest(Batch([ack, ota, will("wl1", 5, 19, received=T0 + 40)]))
    status = store.status()[0]
    assert (status.online, status.offline_at, status.config_version) == (False, T0 + 40, 4)
    assert store.acks("wl1", 77) == [{"device": "wl1", "boot": 5, "seq": 30, "cid": 77, "status": OK,
                                      "reasons": None, "config": 4, "result": 12345, "received": T0 + 30}]
    assert [(o["cid"], o["percent"], o["target"]) for o in store.ota("wl1")] == [(80, 42, "1.5.0")]
    assert [f.kind for f in store.feed()] == ["online", "online", "offline"]
    store.ingest(Batch([birth("wl1", 6, 40, received=T0 + 50)]))
    assert (store.status()[0].online, store.status()[0].outbox_trend) == (True, [])


def test_status_gives_the_previous_health_of_the_boot_of_the_last(store: Store) -> None:
    def health(boot: int, seq: int, count: int, outbox: int | None = None) -> Inbound:
        report = Health(boot, seq, 60 * seq, outbox=outbox, errors={"echo_timeout": count}, fault="echo_timeout")
        return inbound("wl1", report, received=T0 + seq)

    boot4 = {"uptime": 120, "outbox": 0, "errors": {"echo_timeout": 1}, "fault": "echo_timeout"}
    store.ingest(Batch([birth("wl1", 4, 1), health(4, 2, 1, outbox=0), health(4, 3, 2, outbox=0)]))
    assert store.status()[0].previous_health == boot4
    store.ingest(Batch([birth("wl1", 5, 1, received=T0 + 10)]))
    status = store.status()[0]  # boot 5 has no health yet: the last is boot 4's, and so is the one before
    assert ((status.health or {})["uptime"], status.previous_health, status.outbox_trend) == (180, boot4, [])
    store.ingest(Batch([health(5, 2, 1, outbox=1)]))
    assert store.status()[0].previous_health is None  # the first of boot 5: boot 4's do not count
    # one without an outbox depth: the previous report all the same, not part of the outbox trend
    store.ingest(Batch([health(5, 3, 3), health(5, 4, 3, outbox=2)]))
    for status in (store.status()[0], store.status("wl1")[0]):
        assert status.previous_health == {"uptime": 180, "errors": {"echo_timeout": 3}, "fault": "echo_timeout"}
        assert (status.health or {})["uptime"] == 240 and status.outbox_trend == [1, 2]


def test_a_reconnect_is_not_a_reset(store: Store) -> None:
    store.ingest(Batch([birth("wl1", 4, 2, received=T0), birth("wl1", 4, 9, received=T0 + 60),
                        birth("wl1", 5, 2, received=T0 + 120)]))
    assert store.status("wl1", now=T0 + 200)[0].births_24h == 2  # two boots, three births


def test_will_of_a_dropped_session_of_the_same_boot(store: Store) -> None:
    # boot 3: session 1 (will 9, birth 10), reconnect: session 2 (will 11, birth 12)
    store.ingest(Batch([birth("wl1", 3, 10), birth("wl1", 3, 12, received=T0 + 100)]))
    store.ingest(Batch([will("wl1", 3, 9, received=T0 + 150)]))  # session 1's will, after session 2's birth
    assert store.status()[0].online is True
    store.ingest(Batch([will("wl1", 3, 11, received=T0 + 200)]))  # session 2's own will
    assert (store.status()[0].online, store.status()[0].offline_at) == (False, T0 + 200)
    # in one batch, in arrival order: session 3's birth (14), then its own will (13, reserved before 14)
    store.ingest(Batch([birth("wl1", 3, 14, received=T0 + 300), will("wl1", 3, 13, received=T0 + 301)]))
    assert store.status()[0].online is False
    store.ingest(Batch([birth("wl1", 3, 16, received=T0 + 400), will("wl1", 3, 13, received=T0 + 401)]))
    assert store.status()[0].online is True  # a duplicate will changes nothing


def test_health_keys_are_the_contract_names(store: Store) -> None:
    full = Health(1, 1, 86400, heap_free=61440, heap_min=48200, flash_free=1200000, battery=3700, rssi=-71,
                  outbox=0, dropped=0, errors={"i2c": 2}, fault="echo_timeout", reconnects=1, link_up=3600)
    store.ingest(Batch([inbound("wl1", full)]))
    assert store.status()[0].health == {
        "uptime": 86400, "heap": 61440, "heap_low": 48200, "flash": 1200000, "battery": 3700, "rssi": -71,
        "outbox": 0, "dropped": 0, "errors": {"i2c": 2}, "fault": "echo_timeout", "reconnects": 1,
        "link_up": 3600}


# ---------------------------------------------------------------- quarantine
def test_quarantine_payload_capped(store: Store) -> None:
    big = bytes(range(256)) * 20
    result = store.ingest(Batch([telemetry("wl1", 1, 1)], quarantined=[
        Quarantined(T0, "dt/city/bad1/telemetry", "too_large", "5120 bytes", big),
        Quarantined(T0 + 1, "dt/city/bad1/\x00oops", "bad_topic", "nul in topic", b"\xff")]))
    assert (result.stored, result.quarantined) == (1, 2)
    assert store.quarantine_count() == 2
    latest, first = store.quarantine()
    assert first[2:] == ("dt/city/bad1/telemetry", "too_large", "5120 bytes", 5120)
    assert store.quarantine_payload(first[0]) == big[:1024]
    assert latest[2] == "dt/city/bad1/\ufffdoops" and latest[5] == 1
    assert [(f.kind, f.device) for f in store.feed()] == [("quarantine", "bad1"), ("quarantine", "bad1")]
    assert [d.device for d in store.status()] == ["wl1"]  # quarantined messages do not make a device seen


# ---------------------------------------------------------------- transactions
def test_exception_inside_ingest_leaves_nothing(store: Store) -> None:
    good = [birth("wl1", 1, 1), telemetry("wl1", 1, 2), event("wl1", 3, RAISED)]
    broken = Inbound("wl1", "bogus", 1, 4, T0, object())
    with pytest.raises(ValueError, match="unknown message kind"):
        store.ingest(Batch([*good, broken], quarantined=[Quarantined(T0, "dt/city/x/y", "bad_cbor", "", b"")]))
    assert (store.readings("wl1"), store.alarms(), store.status(), store.feed(), store.gaps()) == ([], [], [], [], [])
    assert store.quarantine_count() == 0
    # the store is usable afterwards and the keys were not claimed
    result = store.ingest(Batch(good))
    assert (result.stored, result.duplicates) == (3, 0)
    assert len(store.alarms(active=True)) == 1 and count_readings(store, "wl1") == 1


def test_reopen_keeps_data(store_url: str) -> None:
    with open_store(store_url) as first:
        first.ingest(Batch([telemetry("wl1", 1, 1)]))
    with open_store(store_url) as second:  # schema creation is idempotent
        assert count_readings(second, "wl1") == 1
        assert second.ingest(Batch([telemetry("wl1", 1, 1)])).duplicates == 1


def test_sqlite_readers_never_see_half_a_batch(tmp_path: Any) -> None:
    url = "sqlite:///%s" % (tmp_path / "fleet.db")
    writer, reader = open_store(url), open_store(url)
    batches, size, seen = 40, 100, []
    done = threading.Event()
    failure: list[BaseException] = []

    def write() -> None:
        try:
            for b in range(batches):
                writer.ingest(Batch([telemetry("wl1", 1, b * size + i) for i in range(size)]))
        except BaseException as error:  # reported by the main thread
            failure.append(error)
        finally:
            done.set()

    thread = threading.Thread(target=write)
    thread.start()
    while not done.is_set():
        seen.append(count_readings(reader, "wl1"))
    thread.join(timeout=30)
    assert not failure
    assert all(count % size == 0 for count in seen) and seen == sorted(seen)
    assert count_readings(reader, "wl1") == batches * size
    writer.close()
    reader.close()


def test_sqlite_open_transactions_do_not_block(tmp_path: Any) -> None:
    path = tmp_path / "fleet.db"
    store = open_store("sqlite:///%s" % path)
    store.ingest(Batch([telemetry("wl1", 1, 1)]))
    other = sqlite3.connect(str(path), isolation_level=None, timeout=0.1)
    other.execute("BEGIN IMMEDIATE")  # another writer mid-transaction
    other.execute("INSERT INTO readings (device, name, time, boot, seq, received, historical) "
                  "VALUES ('wl1', 'level', 1, 1, 99, 1, 0)")
    assert count_readings(store, "wl1") == 1  # read at once, without the uncommitted row
    other.execute("ROLLBACK")
    other.execute("BEGIN")
    assert other.execute("SELECT COUNT(*) FROM readings").fetchone() == (1,)  # a reader's snapshot
    store.ingest(Batch([telemetry("wl1", 1, 2)]))  # the writer does not wait for the reader
    assert other.execute("SELECT COUNT(*) FROM readings").fetchone() == (1,)
    other.execute("COMMIT")
    assert other.execute("SELECT COUNT(*) FROM readings").fetchone() == (2,)
    assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    other.close()
    store.close()


# ---------------------------------------------------------------- URLs
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("url", [
    "mysql://localhost/fleet", "sqlite://relative.db", "sqlite:///no/such/folder/fleet.db", "fleet.db",
    "postgresql://postgres:s3cret@127.0.0.1:CLOSED/fleet"])  # the port is found at run time (xdist ids)
def test_bad_url_is_one_line_fleet_error(url: str) -> None:
    with pytest.raises(FleetError) as caught:
        open_store(url.replace("CLOSED", str(_closed_port())))
    message = str(caught.value)
    assert "\n" not in message and "s3cret" not in message
    assert ("postgresql://user@host:port" in message or "absolute path" in message
            or "does not exist" in message or "cannot open store postgres@127.0.0.1" in message)


def test_default_url_is_the_fleet_home(tmp_path: Any) -> None:
    with open_store(None, home=tmp_path) as store:
        store.ingest(Batch([telemetry("wl1", 1, 1)]))
        assert store.url == "sqlite:///%s" % (tmp_path / "fleet.db")
    assert (tmp_path / "fleet.db").is_file()
