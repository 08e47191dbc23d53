"""OTA campaigns over 1,000 simulated devices (`fleet-sim`), with waves and an abort threshold.

The site, as an operator builds it: a fleet home with the fleet's own generated Mosquitto (`fleet broker
config`, `fleet.broker.run_broker`), a release key (`fleet.ota.keys.keygen`), the emulator bundle 1.0.0
that trusts it and that every device runs, and two releases made from it with `make_release`, each with
one module changed (1.1.0: agent/health_report, 1.2.0: agent/reporter). The devices are registered with
`fleet-sim provision --board emulator` and run by `fleet-sim run --bundle` (tools/fleetsim/ota.py: take
the offer, restart into update mode, pull and check, restart on trial, confirm or roll back).

1. A healthy campaign: `fleet ota rollout 1.1.0 --waves 1%,10%,50%,100%` with a 5 % abort threshold;
   5 % of the devices lose their link once mid-download and resume. It must finish, and `fleet ota status
   --json` must be exact: every device done, each device's state and reason the outcome the simulator
   says it reported, the fleet's bytes served at least what the devices took.
2. A campaign that aborts: release 1.2.0 on devices that run 1.1.0, 20 % of which roll back (CRASHED)
   and 2 % run out of flash, threshold 5 % once 5 devices tried. It must abort during the first wave that
   crosses it; no device of a later wave may have received an offer (the simulator counts every offer a
   device saw), and every device with an outcome must show the one the simulator reported.

Reference, measured in the same run: the transfer floor, i.e. the same pulls (the envelope and the changed
file, every device at once, windows of 8 chunks) answered by the fleet's own `OtaServer`, from clients
that only pull: no offers, restarts, checks, reports or waves. The campaign's time is given as a multiple
of it; so are the bytes served against sending every device the whole release.

    python -m tools.bench_ota [N]          # N devices (default 1000)
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

N = 1000
WAVES = "1%,10%,50%,100%"
BIN = Path(sys.executable).parent
CHANGED = {"1.1.0": "agent/health_report", "1.2.0": "agent/reporter"}  # the module each release changes
BOOT_S = 0.5  # each simulated restart (fleet-sim --ota-boot-s)
CUT_S = 3.0  # how long a link cut mid-download stays down (fleet-sim --ota-cut-s)
SIM = ["--rate", "0.05", "--health-s", "60", "--ota-boot-s", str(BOOT_S), "--drain-timeout", "40"]
TIMEOUT_S = 900.0


# ---- the site ----------------------------------------------------------------------------------------

def variant(base: Path, out: Path, version: str, module: str) -> Path:
    """A copy of bundle `base` as `version` with `module` recompiled from its source plus one line (so its
    bytes differ), its manifest.json rewritten to match."""
    import firmware.build as build

    shutil.copytree(base, out)
    source = out / "changed.py"
    source.write_text((build.REPO / (module + ".py")).read_text() + "\n_RELEASE = %r\n" % version)
    build._compile(source, module + ".py", out / (module + ".mpy"), build.BOARDS["emulator"]["arch"])
    source.unlink()
    doc = json.loads((out / build.MANIFEST).read_text())
    for entry in doc["files"]:
        entry.update(size=(out / entry["path"]).stat().st_size, sha256=build.sha256_file(out / entry["path"]))
    doc["version"] = version
    (out / build.MANIFEST).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return out


class Site:
    """A fleet home with `count` simulated devices, their broker, and releases 1.1.0 and 1.2.0."""

    def __init__(self, root: Path, count: int) -> None:
        from firmware.build import build_bundle
        from fleet.broker import run_broker, write_broker_files
        from fleet.home import private_dir
        from fleet.ota.keys import keygen, load_public_key
        from fleet.ota.release import make_release
        from fleet.registry import open_registry
        from tests.brokerproc import free_port
        from tools.fleetsim.provision import provision

        self.root = root
        self.home = private_dir(root / "home")
        self.port = free_port()
        write_broker_files(open_registry(self.home), home=self.home, port=self.port)
        key, pub = keygen(root / "keys", "fleet")
        self.bundles = {"1.0.0": root / "bundle-1.0.0"}
        build_bundle("emulator", "1.0.0", self.bundles["1.0.0"], [load_public_key(pub)])
        self.releases: dict[str, Path] = {}
        for version, module in CHANGED.items():
            self.bundles[version] = variant(self.bundles["1.0.0"], root / ("bundle-" + version), version, module)
            info = make_release(self.bundles[version], key, home=self.home)
            self.releases[version] = self.home / "releases" / info["dir"]
        self.devices_file = Path(provision(self.home, count, "water-level", reload=False,
                                           board="emulator")["devices_file"])
        self.count = count
        self.env = dict(os.environ, FLEET_HOME=str(self.home), FLEET_BROKER="mqtt://127.0.0.1:%d" % self.port)
        self.broker = run_broker(self.home / "broker")
        self.procs: list[subprocess.Popen] = []

    def sim(self, bundle: str, *options: str) -> SimRun:
        """`fleet-sim run` of every device, running `bundle`, until `SimRun.finish()`."""
        run = SimRun(self, bundle, options)
        self.procs.append(run.proc)
        return run

    def rollout(self, version: str, *options: str) -> tuple[int, str, str, float]:
        """`fleet ota rollout VERSION OPTIONS`: (exit code, stdout, stderr, wall seconds)."""
        started = time.monotonic()
        done = subprocess.run([str(BIN / "fleet"), "ota", "rollout", version, *options], env=self.env,
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        return done.returncode, done.stdout, done.stderr, time.monotonic() - started

    def status(self, campaign: str) -> dict[str, Any]:
        """`fleet ota status CAMPAIGN --json`."""
        done = subprocess.run([str(BIN / "fleet"), "ota", "status", campaign, "--json"], env=self.env,
                              capture_output=True, text=True, timeout=60, check=False)
        if done.returncode:
            raise RuntimeError("fleet ota status failed: %s" % done.stderr.strip())
        return json.loads(done.stdout)

    def stop(self) -> None:
        """Kill what is still running: the simulator, the broker."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        self.broker.kill()
        self.broker.wait(timeout=10)


class SimRun:
    """A `fleet-sim run` in a subprocess: started, connected (its stderr says so), then ended by SIGTERM."""

    def __init__(self, site: Site, bundle: str, options: tuple[str, ...]) -> None:
        self.report_path = site.root / ("sent-%s-%d.json" % (bundle, time.monotonic_ns()))
        self.proc = subprocess.Popen(
            [str(BIN / "fleet-sim"), "run", "--devices", str(site.devices_file), "--duration", "3600",
             "--bundle", str(site.bundles[bundle]), "--report", str(self.report_path), *SIM, *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)
            self.lines.put(line)

    def connected(self, timeout: float = 120.0) -> float:
        """Wait for every device to be connected; the seconds it took (the simulator's figure)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if "devices connected in" in line:
                return float(line.split(" in ")[1].split()[0])
        raise RuntimeError("fleet-sim did not connect its devices within %.0f s:\n%s" % (timeout, "".join(self.err)))

    def finish(self, timeout: float = 120.0) -> dict[str, Any]:
        """SIGTERM (sampling ends, updates settle, everyone disconnects), then its report."""
        from tools.fleetsim import report

        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise RuntimeError("fleet-sim failed (%d):\n%s\n%s" % (self.proc.returncode, out, "".join(self.err)))
        return report.load(self.report_path)


# ---- what is checked -----------------------------------------------------------------------------------

def outcome(sent: dict[str, Any], row: dict[str, Any]) -> tuple[str, str | None]:
    """(state, reason) the simulator says the device of status row `row` reported for the campaign's cid;
    ("pending", None) when it reported none."""
    found = (sent["devices"][row["device"]].get("ota") or {}).get("outcome")
    return (found["state"], found["reason"]) if found and found["cid"] == row["cid"] else ("pending", None)


def mismatches(status: dict[str, Any], sent: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """Devices among `rows` whose state and reason in the status differ from the outcome the simulator
    says it reported."""
    return ["%s: status %s/%s, simulator %s/%s" % (row["device"], row["state"], row["reason"], *outcome(sent, row))
            for row in rows if (row["state"], row["reason"]) != outcome(sent, row)]


def overtaken(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows an abort closed before the device's own outcome came: failed CANCELLED (its download was under
    way as far as the rollout knew) or staged (installed on trial). The device carries on: its outcome
    comes after the rollout stopped listening, so the status can differ from the simulator there."""
    return [row for row in rows if row["state"] == "staged" or (row["state"], row["reason"]) == ("failed", "CANCELLED")]


def wave_seconds(status: dict[str, Any]) -> list[float]:
    """Per wave: from its first offer to its last outcome."""
    waves: dict[int, list[dict[str, Any]]] = {}
    for row in status["devices"]:
        if row["offered_at"] is not None and row["ended_at"] is not None:
            waves.setdefault(row["wave"], []).append(row)
    return [round(max(r["ended_at"] for r in rows) - min(r["offered_at"] for r in rows), 2)
            for _wave, rows in sorted(waves.items())]


def devices_waiting(rows: list[dict[str, Any]], sent: dict[str, Any]) -> float:
    """The least time the waves take for the simulated devices' own sake: in each wave the agent's second
    before its reset and two restarts, and a cut link's time down when a device of the wave has one."""
    from tools.fleetsim.ota import REBOOT_WAIT_S

    cut = {name for name, entry in sent["devices"].items() if (entry.get("ota") or {}).get("cuts")}
    waves = {row["wave"] for row in rows}
    return sum(REBOOT_WAIT_S + 2 * BOOT_S + (CUT_S if any(row["device"] in cut for row in rows if row["wave"] == wave)
                                             else 0.0) for wave in waves)


def release_bytes(folder: Path, changed: str) -> tuple[int, int]:
    """(envelope + the changed file compressed, envelope + every file compressed) of a stored release."""
    from fleet.ota.server import Release

    release = Release(folder)
    envelope = len(release.stored[0])
    index = [e[0] for e in release.manifest.files].index(changed + ".mpy") + 1
    return envelope + len(release.stored[index]), sum(len(data) for data in release.stored)


def healthy(site: Site) -> dict[str, Any]:
    """Campaign 1 (module docstring): figures, and what was checked."""
    run = site.sim("1.0.0", "--ota-cut-share", "0.05", "--ota-cut-s", str(CUT_S), "--seed", "3")
    connect_s = run.connected()
    code, out, err, seconds = site.rollout("1.1.0", "--waves", WAVES, "--max-failures", "5%", "--min-devices", "10",
                                           "--timeout", "10m")
    sent = run.finish()
    if code != 0:
        raise RuntimeError("the healthy campaign did not finish (exit %d):\n%s\n%s" % (code, out[-2000:], err))
    status = site.status("c1")
    rows = status["devices"]
    totals = sent["totals"]
    wrong = mismatches(status, sent, rows)
    counts = status["campaign"]["counts"]
    simulated = Counter(entry["ota"]["outcome"]["state"] for entry in sent["devices"].values()
                        if entry.get("ota", {}).get("outcome"))
    exact = (not wrong and counts["done"] == site.count == simulated["done"] == totals["ota_done"]
             and status["campaign"]["state"] == "done")
    if not exact:
        raise RuntimeError("campaign c1 status is not exact: counts %s, simulator %s; %s"
                           % (counts, dict(simulated), "; ".join(wrong[:5])))
    served = sum(row["sent"] or 0 for row in rows)
    one, whole = release_bytes(site.releases["1.1.0"], CHANGED["1.1.0"])
    if totals["ota_received"] != site.count * one or served < totals["ota_received"]:
        raise RuntimeError("bytes: devices took %d (expected %d x %d), the fleet served %d"
                           % (totals["ota_received"], site.count, one, served))
    return {"seconds": seconds, "connect_s": connect_s, "waves_s": wave_seconds(status), "counts": counts,
            "waiting_s": devices_waiting(rows, sent), "rss": sent["processes"][0],
            "served": served, "received": totals["ota_received"], "per_device": one, "whole_release": whole,
            "pulls": totals["ota_pulls"], "cuts": totals["ota_cuts"], "exact": exact,
            "restarts": sum(entry["ota"]["restarts"] for entry in sent["devices"].values() if entry.get("ota"))}


def aborting(site: Site) -> dict[str, Any]:
    """Campaign 2 (module docstring): figures, and what was checked."""
    run = site.sim("1.1.0", "--ota-rollback-share", "0.2", "--ota-fail-share", "0.02", "--seed", "5")
    run.connected()
    code, out, err, seconds = site.rollout("1.2.0", "--waves", WAVES, "--max-failures", "5%", "--min-devices", "5",
                                           "--timeout", "10m")
    sent = run.finish()
    if code != 1 or "aborted" not in err:
        raise RuntimeError("campaign c2 did not abort (exit %d):\n%s\n%s" % (code, out[-2000:], err))
    status = site.status("c2")
    info = status["campaign"]
    rows = status["devices"]
    last = info["wave"]  # 1-based: the wave it aborted in
    later = [row for row in rows if row["wave"] > last]
    offered_later = [row["device"] for row in later if (sent["devices"][row["device"]].get("ota") or {}).get("offers")]
    if offered_later or any(row["state"] != "pending" for row in later) or info["state"] != "aborted":
        raise RuntimeError("after the abort in wave %d, %d later device(s) got an offer: %s"
                           % (last, len(offered_later), offered_later[:5]))
    closed = overtaken(rows)
    wrong = mismatches(status, sent, [row for row in rows if row not in closed])
    if wrong:
        raise RuntimeError("campaign c2 status differs from the simulator: %s" % "; ".join(wrong[:5]))
    after = Counter("%s %s/%s" % (row["state"], *outcome(sent, row)) for row in closed)
    return {"seconds": seconds, "wave": last, "waves": info["waves"], "tried": info["tried"],
            "failures": info["failures"], "counts": info["counts"], "reason": info["reason"],
            "later": len(later), "overtaken": dict(after), "exact": len(rows) - len(closed)}


# ---- the reference: the same pulls, nothing else ---------------------------------------------------------

class Puller:
    """A client that only pulls files [(index, total)] of update `cid`, window after window (the device
    half of tools/fleetsim/connection.Connection)."""

    def __init__(self, spec: dict[str, Any], fleet: str, cid: int, files: list[tuple[int, int]],
                 done: asyncio.Future[None]) -> None:
        self.id, self.cid, self.files, self.done = spec["id"], cid, list(files), done
        self.spec = spec
        self.pull_topic = ("dt/%s/%s/pull" % (fleet, self.id)).encode()
        self.filter = "cmd/%s/%s/+" % (fleet, self.id)
        self.conn: Any = None
        self.seq = self.pid = self.offset = self.end = 0
        self.received = 0

    def start(self) -> None:
        from tools.fleetsim import mqttwire as wire

        self.conn.write(wire.subscribe(1, self.filter, 1))
        self._pull()

    def _pull(self) -> None:
        from protocols import up_status
        from protocols.ota import CHUNK, WINDOW
        from tools.fleetsim import mqttwire as wire

        index, total = self.files[0]
        count = min(WINDOW, (total - self.offset + CHUNK - 1) // CHUNK)
        self.end = min(total, self.offset + count * CHUNK)
        self.seq += 1
        self.pid = self.pid % 0xFFFF + 1
        self.conn.write(wire.publish(self.pull_topic, up_status.pull(1, self.seq, self.cid, index, self.offset, count),
                                     1, self.pid))

    def on_puback(self, pid: int) -> None:
        pass

    def on_command(self, topic: str, payload: bytes) -> None:
        from protocols.messages import decode_down

        chunk = decode_down("chunk", payload)
        if (chunk.index, chunk.offset) != (self.files[0][0], self.offset):
            return
        self.offset += len(chunk.data)
        self.received += len(chunk.data)
        if self.offset < self.end:
            return
        if self.offset >= self.files[0][1]:
            self.files.pop(0)
            self.offset = 0
            if not self.files:
                self.done.set_result(None)
                return
        self._pull()

    def on_lost(self, conn: Any) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError("%s lost its connection" % self.id))


async def _pull_all(site: Site, specs: list[dict[str, Any]], files: list[tuple[int, int]]) -> tuple[float, int]:
    from tools.fleetsim import mqttwire as wire
    from tools.fleetsim.connection import Connection

    loop = asyncio.get_running_loop()
    pullers, limit = [], asyncio.Semaphore(200)

    async def connect(puller: Puller) -> None:
        async with limit:
            connack: asyncio.Future[int] = loop.create_future()
            conn = Connection(puller, wire.connect("ref-" + puller.id, 60, puller.spec["username"],
                                                   puller.spec["password"]), connack)
            await loop.create_connection(lambda: conn, "127.0.0.1", site.port)
            if await connack != 0:
                raise RuntimeError("the broker refused %s" % puller.id)
            puller.conn = conn

    for n, spec in enumerate(specs):
        pullers.append(Puller(spec, "city", 1000 + n, files, loop.create_future()))
    await asyncio.gather(*(connect(p) for p in pullers))
    started = time.perf_counter()
    for puller in pullers:
        puller.start()
    await asyncio.wait_for(asyncio.gather(*(p.done for p in pullers)), TIMEOUT_S)
    seconds = time.perf_counter() - started
    for puller in pullers:
        puller.conn.close()
    return seconds, sum(p.received for p in pullers)


def floor(site: Site, version: str) -> tuple[float, int]:
    """Seconds for every device to pull the envelope and the changed file of `version` at once from the
    fleet's OtaServer, and the bytes they took."""
    from fleet.broker import ops_secret
    from fleet.broker_address import BrokerAddress
    from fleet.ota.server import OtaServer, Release
    from tools.fleetsim.provision import load_devices

    release = Release(site.releases[version])
    changed = [e[0] for e in release.manifest.files].index(CHANGED[version] + ".mpy") + 1
    files = [(0, len(release.stored[0])), (changed, len(release.stored[changed]))]
    specs = load_devices(site.devices_file)["devices"]
    server = OtaServer("city", BrokerAddress("127.0.0.1", site.port), ops_secret(site.home), release)
    server.start()
    try:
        for n, spec in enumerate(specs):
            server.serve(spec["id"], 1000 + n)
        return asyncio.run(_pull_all(site, specs, files))
    finally:
        server.stop()


# ---- make bench ------------------------------------------------------------------------------------------

def run(n: int = N) -> dict[str, Any]:
    """`make bench` entry (module docstring)."""
    from tools.fleetsim.runner import raise_open_files

    raise_open_files()
    with tempfile.TemporaryDirectory(prefix="bench-ota-") as folder:
        site = Site(Path(folder), n)
        try:
            reference_s, reference_bytes = floor(site, "1.1.0")
            ok = healthy(site)
            bad = aborting(site)
        finally:
            site.stop()
    lines = [
        "healthy campaign, %d simulated devices in waves %s (5 %% lose their link mid-download and resume): "
        "done in %.1f s = %.1f x the transfer floor (the same pulls, every device at once, from the fleet's "
        "OtaServer: %.2f s); waves %s s" % (n, WAVES, ok["seconds"], ok["seconds"] / reference_s, reference_s,
                                          "/".join("%.1f" % w for w in ok["waves_s"])),
        "  of which the devices' own waiting (per wave the agent's second before its reset, two restarts of "
        "%.1f s, and %.0f s down where a link is cut) is %.1f s; the rest, %.1f s, is the fleet and the transfer"
        % (BOOT_S, CUT_S, ok["waiting_s"], ok["seconds"] - ok["waiting_s"]),
        "  fleet-sim: %.0f MB with %d devices connected, %.0f MB at its peak during the campaign (%.1f KB a device "
        "more)" % (ok["rss"]["rss_connected_mb"], n, ok["rss"]["rss_peak_mb"],
                   (ok["rss"]["rss_peak_mb"] - ok["rss"]["rss_connected_mb"]) * 1024 / n),
        "  status exact: %d of %d done, each device's state = the outcome the simulator reported; %d restarts, "
        "%d pulls, %d links cut and resumed" % (ok["counts"]["done"], n, ok["restarts"], ok["pulls"], ok["cuts"]),
        "  bytes: served %d, taken %d (%d a device: envelope + one module = %.1f %% of the whole release, %d); "
        "served/taken %.3f (above 1: chunks lost with the cut links)"
        % (ok["served"], ok["received"], ok["per_device"], 100.0 * ok["per_device"] / ok["whole_release"],
           ok["whole_release"], ok["served"] / max(ok["received"], 1)),
        "aborting campaign (20 %% roll back CRASHED, 2 %% NO_SPACE; max 5 %% once 5 tried): aborted in wave %d "
        "of %d after %.1f s = %.1f x the floor (%s); %d devices of later waves: none offered" % (
            bad["wave"], bad["waves"], bad["seconds"], bad["seconds"] / reference_s, bad["reason"], bad["later"]),
        "  status = simulator for %d of %d devices; closed by the abort before their outcome came (status -> "
        "what the device reported after the rollout stopped listening): %s" % (
            bad["exact"], n, ", ".join("%d %s" % (k, v) for v, k in sorted(bad["overtaken"].items())) or "none"),
        "  reference: transfer floor %.2f s for %d bytes (%.0f KB/s through the broker and OtaServer)"
        % (reference_s, reference_bytes, reference_bytes / reference_s / 1024),
    ]
    return {"devices": n, "reference_s": reference_s, "reference_bytes": reference_bytes, "healthy": ok,
            "aborting": bad, "lines": lines}


if __name__ == "__main__":
    for line in run(int(sys.argv[1]) if len(sys.argv) > 1 else N)["lines"]:
        print(line)
