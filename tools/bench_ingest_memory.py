"""`fleet ingest`'s memory while 10,000 simulated devices stay connected (issue 8: it must be flat).

The fleet's own Mosquitto (generated config) with 10,000 devices registered by `fleet-sim provision`;
`fleet ingest` on a SQLite store; `fleet-sim run` keeps every device connected for DURATION_S sending a
pack every 10 s each (about 1,000 messages a second, with health every minute). The ingest's resident
set (VmRSS) is read every few seconds. What is reported: its RSS after the warm-up against its RSS in the
last minute, as a ratio and as a slope in KB per minute over the rest of the run, and the ingest's own
totals (received, stored, duplicates...).

The warm-up is three minutes. Measured with tracemalloc, allocator statistics and SQLite's memory counter
over a 15-minute run of this setup: Python objects, memory in use and SQLite's caches are flat from the
start, but when the ingest falls behind for a moment (a health round, other load on the machine) it holds
a burst of messages, and the C allocator keeps the freed memory afterwards; RSS steps up with the largest
burst so far and levels off after about three minutes (then flat to the end: -180 KB/min).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEVICES = int(os.environ.get("BENCH_INGEST_MEMORY_DEVICES", "10000"))
DURATION_S = float(os.environ.get("BENCH_INGEST_MEMORY_S", "600"))
WARM_UP_S = 180.0
SAMPLE_EVERY_S = 5.0
BIN = Path(sys.executable).parent


def _rss_kb(pid: int) -> int:
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def _wait_line(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError("no %r in %s within %.0f s" % (text, path, timeout))


def _slope_kb_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time."""
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    return 0.0 if var == 0 else 60 * sum((t - mean_t) * (r - mean_r) for t, r in samples) / var


def run() -> dict:
    from fleet.broker import run_broker, write_broker_files
    from fleet.home import private_dir
    from fleet.registry import open_registry
    from tests.brokerproc import free_port
    from tools.fleetsim.provision import provision

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        home = private_dir(root / "home")
        port = free_port()
        write_broker_files(open_registry(home), home=home, port=port)
        devices_file = provision(home, DEVICES, "mixed", reload=False)["devices_file"]
        broker = run_broker(home / "broker")
        env = dict(os.environ, FLEET_HOME=str(home))
        store_url = "sqlite:///%s" % (root / "fleet.db")
        log = root / "ingest.log"
        procs: list[subprocess.Popen] = []
        try:
            with log.open("wb") as out:
                ingest = subprocess.Popen([str(BIN / "fleet"), "ingest", "--broker", "mqtt://127.0.0.1:%d" % port,
                                           "--store", store_url], env=env, stdout=out, stderr=subprocess.STDOUT)
            procs.append(ingest)
            _wait_line(log, "subscribed to", 60)
            sim = subprocess.Popen([str(BIN / "fleet-sim"), "run", "--devices", str(devices_file), "--duration",
                                    str(DURATION_S), "--rate", "0.1", "--health-s", "60", "--scenario", "quiet-day"],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append(sim)
            started = time.monotonic()
            samples: list[tuple[float, int]] = []
            while sim.poll() is None and time.monotonic() - started < DURATION_S:
                samples.append((time.monotonic() - started, _rss_kb(ingest.pid)))
                time.sleep(SAMPLE_EVERY_S)
            sim_out, _ = sim.communicate(timeout=DURATION_S + 300)
            if sim.returncode != 0:
                raise RuntimeError("fleet-sim failed: %s" % sim_out[-2000:])
            ingest.send_signal(signal.SIGTERM)
            ingest.wait(timeout=60)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            broker.kill()
            broker.wait(timeout=10)
        totals = next((line for line in log.read_text(errors="replace").splitlines() if "totals:" in line), "")
    after = [(t, r) for t, r in samples if t >= WARM_UP_S]
    if len(after) < 2:
        raise RuntimeError("the run was too short to judge: %d samples after the warm-up" % len(after))
    first = after[0][1]
    last_minute = [r for t, r in after if t >= after[-1][0] - 60]
    last = sum(last_minute) / len(last_minute)
    slope = _slope_kb_per_min(after)
    sim_line = sim_out.strip().splitlines()[-1] if sim_out.strip() else ""
    return {
        "devices": DEVICES, "duration_s": DURATION_S, "rss_after_warm_up_kb": first, "rss_last_minute_kb": last,
        "ratio_last_to_warm": last / first, "slope_kb_per_min": slope, "rss_max_kb": max(r for _, r in samples),
        "ingest_totals": totals, "fleet_sim": sim_line,
        "lines": [
            "%d devices connected for %.0f s, about %.0f messages/s: ingest RSS %d KB after the warm-up (3 min), "
            "%.0f KB in the last minute (x%.3f), slope %+.1f KB/min after the warm-up, peak %d KB"
            % (DEVICES, DURATION_S, DEVICES * 0.1, first, last, last / first, slope, max(r for _, r in samples)),
            "ingest %s" % totals.strip(),
            "fleet-sim: %s" % sim_line,
        ],
    }


if __name__ == "__main__":
    for line in run()["lines"]:
        print(line)
