"""Store throughput: readings/s through `Store.ingest` in batches, for SQLite and PostgreSQL.

Each figure has its reference measured in the same run: the same rows bulk-inserted into a bare table of
the same database (SQLite executemany, PostgreSQL COPY), the floor of what that database takes. The store
does more per message (dedupe key, device status, indexes), so the ratio says what that costs.

    python -m tools.bench_store [N]          # N readings (default 100000), batches of 1000 messages
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
T0 = 1_760_000_000.0


def make_batches(n: int, batch: int = 1000, per_message: int = 1, devices: int = 50) -> list[Any]:
    """Batches of telemetry Inbounds from `devices` devices, `per_message` readings each, n readings in all."""
    from fleet.store.model import Batch, Inbound, Reading
    from protocols.telemetry import Telemetry

    messages = []
    for index in range(n // per_message):
        device, seq = "dev-%03d" % (index % devices), index // devices
        received = T0 + index * 0.01
        pack = [{0: "level", 2: float(i), 6: -i} for i in range(per_message)]
        readings = [Reading(device, "level", received - i, float(i), "mm", 1, seq, received) for i in range(per_message)]
        messages.append(Inbound(device, "telemetry", 1, seq, received, Telemetry(1, seq, pack), readings,
                                {"level": 900}))
    return [Batch(messages[start:start + batch]) for start in range(0, len(messages), batch)]


def measure(store_url: str, n: int = 100_000, batch: int = 1000, per_message: int = 1) -> dict[str, float]:
    """Ingest n readings into the (empty) store at `store_url`; rows/s fresh and messages/s on a replay
    (every message a duplicate, as after an ingest restart)."""
    from fleet.store import open_store

    batches = make_batches(n, batch, per_message)
    with open_store(store_url) as store:
        started = time.perf_counter()
        stored = sum(store.ingest(b).readings for b in batches)
        fresh = time.perf_counter() - started
        started = time.perf_counter()
        duplicates = sum(store.ingest(b).duplicates for b in batches)
        replay = time.perf_counter() - started
    if stored != n or duplicates != n // per_message:
        raise RuntimeError("stored %d of %d readings, %d duplicates on replay" % (stored, n, duplicates))
    return {"readings": n, "rows_per_s": n / fresh, "replay_msgs_per_s": duplicates / replay, "seconds": fresh}


def reference_sqlite(path: Path, n: int) -> float:
    """Rows/s of the same readings bulk-inserted (executemany, one transaction per 1000) into a bare table."""
    import sqlite3

    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE bare (device TEXT, name TEXT, time REAL, v REAL, unit TEXT, boot INTEGER, "
               "seq INTEGER, received REAL)")
    rows = [("dev-%03d" % (i % 50), "level", T0 + i, float(i), "mm", 1, i, T0 + i) for i in range(n)]
    started = time.perf_counter()
    for start in range(0, n, 1000):
        db.execute("BEGIN")
        db.executemany("INSERT INTO bare VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows[start:start + 1000])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return n / elapsed


def reference_postgres(url: str, n: int) -> float:
    """Rows/s of the same readings COPYed (one transaction per 1000) into a bare table."""
    import psycopg

    rows = [("dev-%03d" % (i % 50), "level", T0 + i, float(i), "mm", 1, i, T0 + i) for i in range(n)]
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE bare (device TEXT, name TEXT, time DOUBLE PRECISION, v DOUBLE PRECISION, "
                   "unit TEXT, boot BIGINT, seq BIGINT, received DOUBLE PRECISION)")
        started = time.perf_counter()
        for start in range(0, n, 1000):
            with db.transaction(), db.cursor() as cursor, cursor.copy("COPY bare FROM STDIN") as copy:
                for row in rows[start:start + 1000]:
                    copy.write_row(row)
        return n / (time.perf_counter() - started)


def run(n: int = 100_000) -> dict[str, Any]:
    """`make bench` entry: both backends, each against its reference."""
    import psycopg

    result: dict[str, Any] = {"lines": []}
    with tempfile.TemporaryDirectory() as folder:
        sqlite = measure("sqlite:///%s/fleet.db" % folder, n)
        sqlite["reference_rows_per_s"] = reference_sqlite(Path(folder) / "bare.db", n)
    result["sqlite"] = sqlite
    name = "cityfleet_bench_%d_%s" % (os.getpid(), secrets.token_hex(3))
    with psycopg.connect(PG_SERVER + "/postgres", autocommit=True) as admin:
        admin.execute('CREATE DATABASE "%s"' % name)
        try:
            postgres = measure("%s/%s" % (PG_SERVER, name), n)
            postgres["reference_rows_per_s"] = reference_postgres("%s/%s" % (PG_SERVER, name), n)
        finally:
            admin.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
    result["postgresql"] = postgres
    for label, figures in (("SQLite", sqlite), ("PostgreSQL", postgres)):
        result["lines"].append(
            "%s store: %d readings in batches of 1000: %.0f rows/s = %.2f x bare bulk insert (%.0f rows/s); "
            "replay of duplicates %.0f msgs/s" % (label, n, figures["rows_per_s"],
                                                  figures["rows_per_s"] / figures["reference_rows_per_s"],
                                                  figures["reference_rows_per_s"], figures["replay_msgs_per_s"]))
    return result


if __name__ == "__main__":
    for line in run(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)["lines"]:
        print(line)
