"""Hundreds of simulated devices (`fleet-sim`) against the fleet's own generated Mosquitto and `fleet ingest`:
what was stored equals what the simulator says it sent.

Each test provisions the devices with `fleet-sim provision` (registry, credentials, passwd and ACL),
starts Mosquitto on the generated config (`fleet.broker.run_broker`), runs the ingest and the simulator as
the commands a person types, and reads the store afterwards. The simulator's devices lose their link
(their backlog arrives later, their health during the outage is a gap, their full outbox drops records:
gaps), resend acknowledged messages, reorder and send garbage.
"""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from fleet.broker import run_broker, write_broker_files
from fleet.home import private_dir
from fleet.registry import open_registry
from fleet.store import open_store
from tests.brokerproc import free_port
from tools.fleetsim import report
from tools.fleetsim.provision import provision

pytestmark = [pytest.mark.hil, pytest.mark.slow]

BIN = Path(sys.executable).parent
SIM = ["--scenario", "rainstorm", "--speed", "60", "--health-s", "4", "--outage-share", "0.2", "--outage-s", "6",
       "--misbehave-share", "0.2", "--misbehave-p", "0.2", "--outbox-max", "4", "--seed", "7"]


class Fleet:
    """A fleet home with `count` simulated devices and its running Mosquitto."""

    def __init__(self, root: Path, count: int) -> None:
        self.home = private_dir(root / "home")
        self.port = free_port()
        write_broker_files(open_registry(self.home), home=self.home, port=self.port)
        self.devices_file = Path(provision(self.home, count, "mixed", reload=False)["devices_file"])
        self.db = root / "fleet.db"
        self.store_url = "sqlite:///%s" % self.db
        self.broker = run_broker(self.home / "broker")
        self.log = self.home / "broker" / "mosquitto.log"

    def stop(self) -> None:
        self.broker.kill()
        self.broker.wait(timeout=10)

    def seen(self) -> dict[tuple[str, int], set[int]]:
        """(device, boot) -> the sequence numbers the store holds."""
        out: dict[tuple[str, int], set[int]] = defaultdict(set)
        with sqlite3.connect(self.db) as db:
            for device, boot, seq in db.execute("SELECT device, boot, seq FROM seen"):
                out[(device, int(boot))].add(int(seq))
        return out

    def seen_count(self) -> int:
        if not self.db.exists():
            return 0
        with sqlite3.connect(self.db) as db:
            try:
                return int(db.execute("SELECT COUNT(*) FROM seen").fetchone()[0])
            except sqlite3.OperationalError:  # the ingest has not made the schema yet
                return 0


class Command:
    """A `fleet ...` or `fleet-sim ...` command in a subprocess; its stderr lines collected."""

    def __init__(self, fleet: Fleet, *words: str) -> None:
        self.proc = subprocess.Popen([str(BIN / words[0]), *words[1:]], env=dict(os.environ, FLEET_HOME=str(fleet.home)),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip())
            self._new.put(line)

    def expect(self, text: str, timeout: float = 20.0) -> str:
        """The next stderr line containing `text`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                break
            if text in line:
                return line
        raise AssertionError("no line with %r within %.0f s; it said:\n%s" % (text, timeout, "\n".join(self.lines[-30:])))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def totals(self) -> dict[str, int]:
        """The counters of the ingest's last "totals: received N, stored N, ..." line (logged on SIGTERM)."""
        for line in reversed(self.lines):
            if "totals:" in line:
                pairs = (part.strip().rsplit(" ", 1) for part in line.split("totals:", 1)[1].split(","))
                return {name: int(value) for name, value in pairs}
        raise AssertionError("no totals line from the ingest:\n%s" % "\n".join(self.lines[-20:]))


@pytest.fixture
def fleet_factory(tmp_path):
    """make(count) -> Fleet; make.command(fleet, "fleet", ...) -> Command; make.sim(fleet, ...) -> Popen.
    Everything started is killed afterwards."""
    made: list[Fleet] = []
    procs: list[subprocess.Popen] = []

    def make(count: int) -> Fleet:
        fleet = Fleet(tmp_path, count)
        made.append(fleet)
        return fleet

    def command(fleet: Fleet, *words: str) -> Command:
        cmd = Command(fleet, *words)
        procs.append(cmd.proc)
        return cmd

    def sim(fleet: Fleet, *words: str) -> subprocess.Popen:
        proc = subprocess.Popen([str(BIN / "fleet-sim"), "run", "--devices", str(fleet.devices_file), *words],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        return proc

    make.command = command  # type: ignore[attr-defined]
    make.sim = sim  # type: ignore[attr-defined]
    yield make
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    for fleet in made:
        fleet.stop()


def finish(sim: subprocess.Popen, path: Path, timeout: float = 120.0) -> dict[str, Any]:
    """Wait for the simulator and read its report."""
    out, _ = sim.communicate(timeout=timeout)
    assert sim.returncode == 0, "fleet-sim failed:\n%s" % out
    return report.load(path)


def expected_messages(sent: dict[str, Any]) -> int:
    """Distinct messages the store must hold: every acknowledged one and every will the broker published."""
    return sum(len(report.published(boot)) for entry in sent["devices"].values() for boot in entry["boots"].values())


def wait_stored(fleet: Fleet, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while fleet.seen_count() < count:
        if time.monotonic() > deadline:
            raise AssertionError("the store holds %d of %d messages after %.0f s" % (fleet.seen_count(), count, timeout))
        time.sleep(0.2)


def check_store(fleet: Fleet, sent: dict[str, Any]) -> dict[str, int]:
    """Stored == sent: per device and boot the same sequence numbers, the same readings, once each; the gaps
    the simulator knows it left; the garbage quarantined. Returns the counts checked."""
    totals = sent["totals"]
    # Exactness needs every connection to have ended on purpose (nothing in flight left unsure).
    assert totals["uncertain"] == 0 and totals["garbage_unsure"] == 0, sent["processes"]
    seen = fleet.seen()
    assert {device for device, _boot in seen} <= set(sent["devices"])
    with open_store(fleet.store_url) as store:
        stored_gaps: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
        for gap in store.gaps():
            stored_gaps[(gap.device, gap.boot)].append((gap.first, gap.last))
        gaps = 0
        for device, entry in sent["devices"].items():
            readings = store.readings(device)
            assert len(readings) == sum(boot["readings"] for boot in entry["boots"].values()), device
            keys = [(r.boot, r.seq, r.name, r.time) for r in readings]
            assert len(keys) == len(set(keys)), "%s: a reading stored twice" % device
            for boot_id, boot in entry["boots"].items():
                key = (device, int(boot_id))
                assert seen[key] == report.published(boot), "%s boot %s: stored and sent differ in %s" % (
                    device, boot_id, sorted(seen[key] ^ report.published(boot))[:10])
                assert stored_gaps.get(key, []) == report.expected_gaps(boot), key
                gaps += len(stored_gaps.get(key, []))
        quarantined = store.quarantine_count()
        reasons = {entry[3] for entry in store.quarantine(limit=10_000)}
    assert quarantined == totals["garbage"]
    return {"gaps": gaps, "quarantined": quarantined, "reasons": len(reasons)}


def test_hundreds_of_devices_stored_exactly_once(fleet_factory):
    fleet = fleet_factory(300)
    ingest = fleet_factory.command(fleet, "fleet", "ingest", "--broker", "mqtt://127.0.0.1:%d" % fleet.port,
                                   "--store", fleet.store_url)
    ingest.expect("subscribed to dt/city/+/+")
    path = fleet.home / "sent.json"
    sim = fleet_factory.sim(fleet, "--duration", "30", "--rate", "1", "--report", str(path), *SIM)
    sent = finish(sim, path)
    totals = sent["totals"]
    assert totals["connected"] == 300 and totals["outages"] >= 30 and totals["wills"] == totals["outages"]
    assert totals["garbage"] > 0 and totals["duplicates"] > 0 and totals["reordered"] > 0 and totals["lost"] > 0
    wait_stored(fleet, expected_messages(sent))
    assert ingest.stop() == 0
    counted = check_store(fleet, sent)
    assert counted["gaps"] > 0 and counted["quarantined"] > 0 and counted["reasons"] == 5
    ingested = ingest.totals()
    assert ingested["readings"] == totals["readings"] and ingested["duplicates"] >= totals["duplicates"]
    with open_store(fleet.store_url) as store:
        offline = [item for item in store.feed(limit=100_000) if item.kind == "offline"]
        assert len(offline) == totals["wills"]  # every outage's will marked its device offline once
        assert all(status.online for status in store.status())  # ...and each came back


def test_shared_subscription_workers_lose_nothing_when_one_is_killed(fleet_factory):
    fleet = fleet_factory(200)
    url = "mqtt://127.0.0.1:%d" % fleet.port

    def worker(n: int) -> Command:
        return fleet_factory.command(fleet, "fleet", "ingest", "--broker", url, "--store", fleet.store_url,
                                     "--shared", "hil", "--worker", str(n))

    first, second = worker(0), worker(1)
    first.expect("subscribed to $share/hil/dt/city/+/+")
    second.expect("subscribed to $share/hil/dt/city/+/+")
    deadline = time.monotonic() + 20  # its own session; logged just before or after the subscription
    while not any("client id fleet-ingest-city-hil-1" in line for line in second.lines):
        assert time.monotonic() < deadline, second.lines
        time.sleep(0.05)
    path = fleet.home / "sent.json"
    sim = fleet_factory.sim(fleet, "--duration", "20", "--rate", "2", "--report", str(path), *SIM)
    wait_stored(fleet, 1500)
    assert second.stop(signal.SIGKILL) == -signal.SIGKILL  # mid-stream, with messages in flight to it
    before = fleet.seen_count()
    wait_stored(fleet, before + 1500)  # worker 0 goes on alone meanwhile
    again = worker(1)
    again.expect("connected to %s (session resumed)" % url)  # its share waited in its session
    sent = finish(sim, path)
    wait_stored(fleet, expected_messages(sent))
    assert first.stop() == 0 and again.stop() == 0
    check_store(fleet, sent)
    one, two = first.totals(), again.totals()
    assert one["received"] > 0 and two["received"] > 0


def test_an_ota_campaign_over_simulated_devices_is_exact_and_an_abort_offers_no_later_wave(tmp_path):
    from tools.bench_ota import Site, mismatches, overtaken

    fast = ["--ota-boot-s", "0.2", "--ota-cut-s", "1"]
    site = Site(tmp_path, 50)  # releases 1.1.0 and 1.2.0 of the emulator bundle 1.0.0, one module each
    try:
        run = site.sim("1.0.0", "--ota-cut-share", "0.1", "--seed", "3", *fast)
        run.connected()
        code, out, err, _ = site.rollout("1.1.0", "--waves", "10%,50%,100%", "--max-failures", "5%",
                                         "--timeout", "2m")
        sent = run.finish()
        assert code == 0, out + err
        status = site.status("c1")
        assert status["campaign"]["state"] == "done" and status["campaign"]["sizes"] == [5, 25, 50]
        assert status["campaign"]["counts"]["done"] == 50 == sent["totals"]["ota_done"]
        assert mismatches(status, sent, status["devices"]) == []  # each device as the simulator reported
        totals = sent["totals"]
        assert totals["ota_cuts"] > 0 and totals["ota_failed"] == totals["ota_rolled_back"] == 0
        served = sum(row["sent"] for row in status["devices"])
        assert served > totals["ota_received"]  # the cut links lost chunks the fleet sent; none taken twice
        assert {entry["ota"]["firmware"] for entry in sent["devices"].values()} == {"1.1.0"}

        run = site.sim("1.1.0", "--ota-rollback-share", "0.3", "--seed", "5", *fast)
        run.connected()
        code, out, err, _ = site.rollout("1.2.0", "--waves", "10%,50%,100%", "--max-failures", "5%",
                                         "--min-devices", "2", "--timeout", "2m")
        sent = run.finish()
        assert code == 1 and "campaign c2 aborted" in err, out + err
        status = site.status("c2")
        info = status["campaign"]
        assert info["state"] == "aborted" and info["wave"] < 3 and info["counts"]["rolled_back"] >= 1
        later = [row for row in status["devices"] if row["wave"] > info["wave"]]
        assert later and all(row["state"] == "pending" for row in later)
        assert all(not sent["devices"][row["device"]].get("ota") for row in later)  # not one offer reached them
        # a device the abort closed as staged or cancelled carries on; its outcome came after the rollout
        closed = overtaken(status["devices"])
        assert mismatches(status, sent, [row for row in status["devices"] if row not in closed]) == []
        rolled = [row for row in status["devices"] if row["state"] == "rolled_back"]
        assert all(row["reason"] == "CRASHED" for row in rolled)
        assert all(sent["devices"][row["device"]]["ota"]["firmware"] == "1.1.0" for row in rolled)
    finally:
        site.stop()
