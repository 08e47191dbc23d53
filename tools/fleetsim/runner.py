"""Runs simulated devices against a broker: one asyncio process, or `procs` processes each with a share.

One process: every device is a `SimDevice` with a callback-driven connection; one scheduler (a heap of
next sample times) calls their `tick()`, one sweeper sends PINGREQs to connections idle for half a
keepalive. The run: connect everyone (at most `connect_concurrency` attempts at once; a line on stderr
says when all are), sample for `duration` seconds (from when all are connected) with outages started at
random times in the first 80 % of it, then stop sampling, wait for the outboxes to drain and the updates
under way to settle (`drain_timeout`), DISCONNECT everyone and return the report. SIGTERM or SIGINT ends
the sampling early; the drain (at most `drain_timeout`), the goodbyes and the report follow as usual
(with `--procs`, the parent passes the signal on).
"""

from __future__ import annotations

import asyncio
import heapq
import multiprocessing
import random
import resource
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tools.fleetsim import report
from tools.fleetsim.context import Context, Settings
from tools.fleetsim.device import SimDevice
from tools.fleetsim.mqttwire import PINGREQ_PACKET
from tools.fleetsim.ota import behaviour

YIELD_EVERY = 256  # samples between two yields to the loop, so PUBACKs are read while the heap is busy
CONNECT_ALL_S = 120.0  # sampling starts when everyone is connected, or after this long


def rss_mb() -> float:
    """This process's resident memory, MB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def raise_open_files() -> int:
    """Raise the open-files limit to the hard limit (one descriptor per device); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def run(settings: Settings, specs: list[dict[str, Any]], procs: int = 1) -> dict[str, Any]:
    """Run the devices of `specs` and return the report (tools/fleetsim/report.py)."""
    if procs <= 1:
        raise_open_files()
        return report.merge([asyncio.run(run_share(settings, specs, time.time() + 0.2))])
    # every process imports and connects its share (about 2500 a second) before sampling starts together
    start = time.time() + 2.0 + 0.3 * procs + len(specs) / 2500.0
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="fleetsim-") as tmp:
        paths = [Path(tmp) / ("%d.json" % k) for k in range(procs)]
        children = [spawn.Process(target=_child, args=(settings, specs[k::procs], start, k, str(paths[k])),
                                  name="fleet-sim-%d" % k) for k in range(procs)]
        for child in children:
            child.start()

        def forward(signum: int, frame: Any) -> None:
            for child in children:
                if child.is_alive():
                    child.terminate()

        previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            for child in children:
                child.join()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        failed = [child.name for child in children if child.exitcode != 0]
        if failed:
            raise RuntimeError("simulator process(es) %s failed; see their output above" % ", ".join(failed))
        return report.merge([report.load(path) for path in paths])


def _child(settings: Settings, specs: list[dict[str, Any]], start: float, index: int, path: str) -> None:
    raise_open_files()
    report.write(asyncio.run(run_share(settings, specs, start, index)), path)


async def run_share(settings: Settings, specs: list[dict[str, Any]], start_wall: float,
                    index: int = 0) -> dict[str, Any]:
    """Run these devices in this process; sampling starts at Unix time `start_wall`. The partial report."""
    loop = asyncio.get_running_loop()
    rss_before = rss_mb()
    began = loop.time()
    # Connect everyone first (a fleet at work is connected; a thundering reconnect is another test), then
    # sample from `start_wall`, or at once when connecting took longer.
    connected: dict[str, float] = {}
    ctx = Context(settings, loop, time.time(), began, settings.seed * 7919 + index)
    choose = random.Random(settings.seed * 104729 + index)
    updates = random.Random(settings.seed * 15485863 + index)  # its own draws: runs without OTA stay the same
    devices = [SimDevice(ctx, spec, misbehaves=choose.random() < settings.misbehave_share,
                         behaviour=behaviour(updates, settings)) for spec in specs]
    ctx.devices = devices
    stop = asyncio.Event()  # SIGTERM or SIGINT: sampling ends now (the handlers go with the loop)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stopper = ctx.spawn(stop.wait())
    for device in devices:
        ctx.spawn(device.connect())
    watcher = ctx.spawn(_watch_connected(ctx, len(devices), began, rss_before, connected))
    await asyncio.wait([watcher, stopper], timeout=CONNECT_ALL_S, return_when=asyncio.FIRST_COMPLETED)
    start_wall = max(start_wall, time.time())
    ctx.start_wall, ctx.start_loop = start_wall, loop.time() + (start_wall - time.time())
    start_loop = ctx.start_loop
    for device in devices:
        device.restart_clock()
    end = start_loop + settings.duration
    first, last = 0.1 * settings.duration, max(0.1 * settings.duration, 0.8 * settings.duration - settings.outage_s)
    for device in devices:
        if choose.random() < settings.outage_share:
            loop.call_at(start_loop + choose.uniform(first, last), _start_outage, ctx, device)
    sweeper = ctx.spawn(_keepalive(ctx))
    memory = {"peak": rss_mb()}
    meter = ctx.spawn(_watch_memory(memory))
    await asyncio.sleep(max(0.0, start_loop - loop.time()))
    published = ctx.stats.publishes
    sampler = ctx.spawn(_sample(ctx, devices, choose, end))
    await asyncio.wait([sampler, stopper], return_when=asyncio.FIRST_COMPLETED)
    sampler.cancel()
    stopper.cancel()
    sampled = ctx.stats.publishes - published
    sampling_s = max(1e-3, loop.time() - start_loop)
    ctx.stopping = True
    drained = await _drain(ctx, devices, settings.drain_timeout)
    watcher.cancel()
    sweeper.cancel()
    meter.cancel()
    for device in devices:
        device.stop()
    await _closed(ctx, devices)
    stats = ctx.stats
    process: dict[str, Any] = {"index": index, "devices": len(devices), "connect_s": connected.get("seconds"),
               "rss_before_mb": round(rss_before, 1), "rss_connected_mb": connected.get("rss"),
               "kb_per_device": connected.get("kb_per_device"), "publishes": stats.publishes,
               "messages_s": round(sampled / sampling_s, 1), "max_lag_s": round(stats.max_lag_s, 3),
               "drained": drained, "errors": stats.errors,
               "rss_peak_mb": round(memory["peak"], 1)}
    devices_json = {device.id: device.ledger.to_json() for device in devices}
    totals: dict[str, Any] = dict(report.totals(devices_json))
    totals.update(publishes=stats.publishes, messages_s=process["messages_s"], connected=stats.connected_peak,
                  rss_mb=round(rss_mb(), 1), max_lag_s=process["max_lag_s"])
    return {"fleet": settings.fleet, "broker": "%s:%d" % (settings.host, settings.port),
            "scenario": settings.scenario, "settings": asdict(settings), "started": start_wall,
            "ended": time.time(), "totals": totals, "process": process, "devices": devices_json}


def _start_outage(ctx: Context, device: SimDevice) -> None:
    ctx.spawn(device.outage(ctx.settings.outage_s))


async def _watch_connected(ctx: Context, count: int, began: float, rss_before: float,
                           out: dict[str, float]) -> None:
    """Note when every device is connected (the first time), and the memory per device then."""
    while ctx.stats.connected < count:
        await asyncio.sleep(0.1)
    out["seconds"] = round(ctx.loop.time() - began, 2)
    rss = rss_mb()
    out["rss"] = round(rss, 1)
    out["kb_per_device"] = round((rss - rss_before) * 1024 / max(count, 1), 2)
    print("fleet-sim: %d devices connected in %.2f s" % (count, out["seconds"]), file=sys.stderr, flush=True)


async def _watch_memory(out: dict[str, float]) -> None:
    """The highest resident memory seen while the devices run (sampled every second), in out["peak"]."""
    while True:
        await asyncio.sleep(1.0)
        out["peak"] = max(out["peak"], rss_mb())


async def _keepalive(ctx: Context) -> None:
    """PINGREQ on every connection that sent nothing for half a keepalive (3.1.2.10)."""
    half = ctx.settings.keepalive / 2.0
    while True:
        await asyncio.sleep(min(5.0, half / 2))
        now = ctx.loop.time()
        for device in ctx.devices:
            conn = device.conn
            if conn is not None and now - device.last_tx > half:
                conn.write(PINGREQ_PACKET)
                device.last_tx = now


async def _sample(ctx: Context, devices: list[SimDevice], rnd: random.Random, end: float) -> None:
    """Call each device's tick() every 1/rate seconds (+- jitter) until `end` (loop time)."""
    loop = ctx.loop
    settings = ctx.settings
    if not devices or settings.rate <= 0:
        await asyncio.sleep(max(0.0, end - loop.time()))
        return
    period = 1.0 / settings.rate
    jitter = settings.jitter
    heap = [(ctx.start_loop + rnd.uniform(0, period), i) for i in range(len(devices))]
    heapq.heapify(heap)
    stats = ctx.stats
    while True:
        now = loop.time()
        if now >= end:
            return
        done = 0
        while heap[0][0] <= now:
            due, i = heap[0]
            if now - due > stats.max_lag_s:
                stats.max_lag_s = now - due
            devices[i].tick()
            heapq.heapreplace(heap, (due + period * (1.0 + rnd.uniform(-jitter, jitter)), i))
            done += 1
            if done >= YIELD_EVERY:
                await asyncio.sleep(0)
                done = 0
                now = loop.time()
                if now >= end:
                    return
        await asyncio.sleep(max(0.0, min(heap[0][0], end) - loop.time()))


async def _drain(ctx: Context, devices: list[SimDevice], timeout: float) -> bool:
    """Wait until every device sent everything (outages over, outboxes empty); False after `timeout`."""
    deadline = ctx.loop.time() + timeout
    while ctx.loop.time() < deadline:
        if all(device.idle() for device in devices):
            return True
        await asyncio.sleep(0.1)
    return False


async def _closed(ctx: Context, devices: list[SimDevice], timeout: float = 25.0) -> None:
    """Wait for every connection to close and every attempt under way to end (they write the ledger)."""
    deadline = ctx.loop.time() + timeout
    while (ctx.tasks or any(device.conn is not None for device in devices)) and ctx.loop.time() < deadline:
        await asyncio.sleep(0.05)
