"""The store's tables, written once for both SQLite and PostgreSQL (types filled in per dialect).

Design notes:
- `seen` is the dedupe table, one row per stored device message keyed (device, boot, seq); gaps are
  derived from it (window function LAG) rather than tracked by the ingest.
- A reading's value lives in one of three columns (number, text, flag) so numbers stay numbers for
  summaries; historical marks a backfilled reading (time < received - 120 s).
- JSON (ut, health, reasons, result) is kept as TEXT: PostgreSQL's jsonb refuses \\u0000, device text may
  carry it.
- At most one open alarm per (device, alarm, source): a partial unique index, in both dialects.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

TYPES = {
    "sqlite": {"REAL": "REAL", "INT": "INTEGER", "BLOB": "BLOB",
               "ID": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgresql": {"REAL": "DOUBLE PRECISION", "INT": "BIGINT", "BLOB": "BYTEA",
                   "ID": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"},
}

TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen (
    device TEXT NOT NULL, boot {INT} NOT NULL, seq {INT} NOT NULL, kind TEXT NOT NULL,
    received {REAL} NOT NULL, PRIMARY KEY (device, boot, seq));
CREATE TABLE IF NOT EXISTS readings (
    device TEXT NOT NULL, name TEXT NOT NULL, time {REAL} NOT NULL,
    vnum {REAL}, vtext TEXT, vflag {INT}, unit TEXT,
    boot {INT} NOT NULL, seq {INT} NOT NULL, received {REAL} NOT NULL, historical {INT} NOT NULL);
CREATE INDEX IF NOT EXISTS readings_device_time ON readings (device, time);
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY, first_seen {REAL}, last_seen {REAL}, boot {INT}, online {INT},
    offline_at {REAL}, firmware TEXT, config_version {INT}, reset_cause {INT}, sensor TEXT,
    ut TEXT NOT NULL, health TEXT, health_at {REAL}, health_boot {INT});
CREATE TABLE IF NOT EXISTS health (
    id {ID}, device TEXT NOT NULL, boot {INT} NOT NULL, seq {INT} NOT NULL, received {REAL} NOT NULL,
    outbox {INT}, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS health_device_boot ON health (device, boot, seq);
CREATE TABLE IF NOT EXISTS births (
    device TEXT NOT NULL, boot {INT} NOT NULL, seq {INT} NOT NULL, received {REAL} NOT NULL,
    firmware TEXT, config {INT}, reset_cause {INT});
CREATE INDEX IF NOT EXISTS births_device_received ON births (device, received);
CREATE INDEX IF NOT EXISTS births_device_boot ON births (device, boot, seq);
CREATE TABLE IF NOT EXISTS alarms (
    id {ID}, device TEXT NOT NULL, alarm TEXT NOT NULL, level {INT} NOT NULL, source TEXT NOT NULL,
    raised_at {REAL} NOT NULL, raise_value {REAL} NOT NULL, threshold {REAL} NOT NULL,
    cleared_at {REAL}, clear_value {REAL}, acked_by TEXT, acked_at {REAL}, note TEXT, boot {INT});
CREATE UNIQUE INDEX IF NOT EXISTS alarms_one_open ON alarms (device, alarm, source) WHERE cleared_at IS NULL;
CREATE INDEX IF NOT EXISTS alarms_device ON alarms (device, raised_at);
CREATE TABLE IF NOT EXISTS feed (
    id {ID}, time {REAL} NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    id {ID}, received {REAL} NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,
    size {INT} NOT NULL, payload {BLOB} NOT NULL);
CREATE TABLE IF NOT EXISTS acks (
    id {ID}, device TEXT NOT NULL, boot {INT} NOT NULL, seq {INT} NOT NULL, cid {INT} NOT NULL,
    status {INT} NOT NULL, reasons TEXT, config {INT}, result TEXT, received {REAL} NOT NULL);
CREATE INDEX IF NOT EXISTS acks_device_cid ON acks (device, cid);
CREATE TABLE IF NOT EXISTS ota (
    id {ID}, device TEXT NOT NULL, boot {INT} NOT NULL, seq {INT} NOT NULL, cid {INT} NOT NULL,
    state {INT} NOT NULL, percent {INT}, reason TEXT, target TEXT, received {REAL} NOT NULL);
CREATE INDEX IF NOT EXISTS ota_device_cid ON ota (device, cid);
"""

#: Column order of a readings row as the writer produces it (COPY and INSERT use the same order).
READING_COLUMNS = ("device", "name", "time", "vnum", "vtext", "vflag", "unit", "boot", "seq", "received",
                   "historical")
SEEN_COLUMNS = ("device", "boot", "seq", "kind", "received")
DEVICE_COLUMNS = ("device", "first_seen", "last_seen", "boot", "online", "offline_at", "firmware",
                  "config_version", "reset_cause", "sensor", "ut", "health", "health_at", "health_boot")


def statements(dialect: str) -> list[str]:
    """The CREATE statements of the schema for `dialect` ("sqlite" or "postgresql"), one per item."""
    text = TABLES.format(**TYPES[dialect])
    return [part.strip() for part in text.split(";") if part.strip()]
