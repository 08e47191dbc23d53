"""`fleet health --json` over 10,000 devices, as cron runs it: wall time of the whole command.

The fleet home holds a 10,000-device registry (`TinyRegistry.add_many`, each with a credential hash) and
a store filled through `Store.ingest` with what a day of a city fleet leaves: per device a birth, 8
telemetry packs of 3 readings, 4 health reports; and a share of devices that went offline (a will),
silent for two days (stale), low on battery, rebooted 3 times today, or with a sequence gap; a few
registered devices never seen and a few seen but unregistered. The store is SQLite (the default) and
PostgreSQL (`--store`).

Reference, measured in the same run: the same command on an empty fleet home and store, i.e. starting
Python and the CLI, opening the store and the registry (the floor of any `fleet` command). The aim of
issue 8 is under 1 s for 10,000 devices on this 2-core machine.

    python -m tools.bench_health [N]        # N devices (default 10000)
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
AIM_S = 1.0
RUNS = 3
BATCH = 1000
HOUR = 3600.0


def device_messages(device: str, index: int, now: float) -> list[Any]:
    """The Inbounds one device left in the store; `index` picks its trouble, if any."""
    from fleet.store.model import Inbound, Reading
    from protocols.health import Health
    from protocols.state import State
    from protocols.telemetry import Telemetry

    end = now - 60 - index % 300  # its last message, a minute or a few ago
    if index % 40 == 1:
        end -= 2 * 24 * HOUR  # stale: silent for two days
    boots = [1, 2, 3] if index % 100 == 4 else [1]  # three boots today: degraded (resets)
    out, seq = [], 0
    for boot in boots:
        seq += 1
        out.append(Inbound(device, "state", boot, seq, end - 6 * HOUR + boot, State(boot, seq, True, "1.4.2", 3, 1, "water")))
    boot = boots[-1]
    for pack in range(8):
        seq += 2 if index % 25 == 3 and pack == 4 else 1  # a lost pack: a gap
        at = end - (8 - pack) * 900.0
        readings = [Reading(device, name, at, float(pack + n), unit, boot, seq, at)
                    for n, (name, unit) in enumerate((("level", "mm"), ("rate", "mm/h"), ("temp", "Cel")))]
        out.append(Inbound(device, "telemetry", boot, seq, at, Telemetry(boot, seq, [{0: "level", 2: 1.0}]),
                           readings, {"level": 900, "rate": 900}))
    battery = 3300 if index % 30 == 2 else 3800
    for report in range(4):
        seq += 1
        health = Health(boot, seq, 3600 * (report + 1), heap_min=30000, battery=battery, outbox=report % 2)
        out.append(Inbound(device, "health", boot, seq, end - (3 - report) * 300.0, health))
    if index % 50 == 0:
        seq += 1
        out.append(Inbound(device, "state", boot, seq, end, State(boot, seq, False)))  # offline
    return out


def fill(home: Path, store_url: str, n: int, now: float) -> dict[str, int]:
    """Registry of n devices in `home`, their history in the store; counts of what was written."""
    from fleet.registry import open_registry
    from fleet.store import Batch, open_store
    from tools.bench_registry import records

    registry = records(n)
    open_registry(home).add_many(registry)
    seen = [r["id"] for r in registry if int(r["id"][4:]) % 200 != 7]  # every 200th: never seen
    seen += ["ghost-%03d" % i for i in range(n // 200)]  # talking, but not in the registry
    messages = [m for index, device in enumerate(seen) for m in device_messages(device, index, now)]
    readings = 0
    with open_store(store_url) as store:
        for start in range(0, len(messages), BATCH):
            readings += store.ingest(Batch(messages[start:start + BATCH])).readings
    return {"registered": n, "seen": len(seen), "messages": len(messages), "readings": readings}


def health_wall(home: Path, store_url: str) -> tuple[float, dict[str, Any]]:
    """Median wall seconds of `fleet health --json` over RUNS runs, and its last output."""
    fleet = str(Path(sys.executable).with_name("fleet"))
    env = dict(os.environ, FLEET_HOME=str(home))
    times, out = [], {}
    for _ in range(RUNS):
        started = time.perf_counter()
        done = subprocess.run([fleet, "health", "--json", "--store", store_url], env=env, capture_output=True,
                              text=True, timeout=300)
        times.append(time.perf_counter() - started)
        if done.returncode not in (0, 1):  # 1: some device is critical, as in any real fleet
            raise RuntimeError("fleet health failed: %s" % done.stderr.strip())
        out = json.loads(done.stdout)
    return statistics.median(times), out


def measure(root: Path, label: str, store_url: str, empty_url: str, n: int) -> dict[str, Any]:
    """Fill a home and the store at `store_url`, then time `fleet health` there and on an empty fleet."""
    home, empty = root / ("home-" + label), root / ("empty-" + label)
    home.mkdir()
    empty.mkdir()
    started = time.perf_counter()
    counts = fill(home, store_url, n, time.time())
    fill_s = time.perf_counter() - started
    seconds, report = health_wall(home, store_url)
    reference, _ = health_wall(empty, empty_url)
    return {**counts, "fill_s": fill_s, "health_s": seconds, "reference_s": reference,
            "rows": len(report["devices"]), "counts": report["counts"], "critical": report["critical"]}


def run(n: int = 10_000) -> dict[str, Any]:
    """`make bench` entry: SQLite and PostgreSQL stores, each against an empty fleet."""
    import psycopg

    result: dict[str, Any] = {"lines": []}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        result["sqlite"] = measure(root, "sqlite", "sqlite:///%s/fleet.db" % root, "sqlite:///%s/empty.db" % root, n)
        names = ["cityfleet_bench_health_%d_%s" % (os.getpid(), secrets.token_hex(3)) for _ in range(2)]
        with psycopg.connect(PG_SERVER + "/postgres", autocommit=True) as admin:
            for name in names:
                admin.execute('CREATE DATABASE "%s"' % name)
            try:
                result["postgresql"] = measure(root, "postgresql", "%s/%s" % (PG_SERVER, names[0]),
                                               "%s/%s" % (PG_SERVER, names[1]), n)
            finally:
                for name in names:
                    admin.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
    for label, f in (("SQLite", result["sqlite"]), ("PostgreSQL", result["postgresql"])):
        if f["rows"] != f["seen"] + f["registered"] // 200:
            raise RuntimeError("%s: fleet health showed %d devices, expected %d"
                               % (label, f["rows"], f["seen"] + f["registered"] // 200))
        result["lines"].append(
            "%s: fleet health --json over %d devices (%d readings, %d messages): %.2f s = %.1f x the same "
            "command on an empty fleet (%.2f s); aim < %.0f s: %s" % (
                label, f["rows"], f["readings"], f["messages"], f["health_s"], f["health_s"] / f["reference_s"],
                f["reference_s"], AIM_S, "met" if f["health_s"] < AIM_S else "NOT met"))
        result["lines"].append("  states %s, %d critical" % (
            ", ".join("%d %s" % (count, state) for state, count in f["counts"].items()), f["critical"]))
    return result


if __name__ == "__main__":
    for line in run(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)["lines"]:
        print(line)
