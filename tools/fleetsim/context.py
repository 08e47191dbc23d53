"""A simulation run's settings, and what the devices of one process share while it runs."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from protocols.senml_pack import PackBuilder
from tools.fleetsim.firmware import Catalogue
from tools.fleetsim.scenario import Weather, load


@dataclass
class Settings:
    """Everything a run is given (picklable: each process of `--procs` gets a copy)."""

    host: str = "127.0.0.1"
    port: int = 1883
    fleet: str = "city"
    duration: float = 60.0  # seconds of sampling; then the outboxes drain and everyone disconnects
    scenario: str = "quiet-day"
    speed: float = 1.0  # scenario seconds per wall second
    rate: float = 0.1  # telemetry packs a second, per device
    jitter: float = 0.2  # each sampling period is drawn from period * (1 +- jitter)
    health_s: float = 300.0  # agent/app.py HEALTH_S
    heartbeat: int = 900  # SenML ut on the first pack after each birth (agent/defaults.py HEARTBEAT_S)
    keepalive: int = 60  # agent/startup.py
    window: int = 4  # outbox records in flight (agent/uplink.py)
    drain_rate: float = 20.0  # outbox messages a second per device after an outage (agent/uplink.py)
    outbox_max: int = 1000  # records an outbox keeps; the oldest are dropped beyond (a gap)
    outage_share: float = 0.0  # share of devices that lose their link once
    outage_s: float = 30.0
    misbehave_share: float = 0.0  # share of devices that send duplicates, reorder and garbage
    misbehave_p: float = 0.1  # chance per sample of one misbehaviour, on such a device
    connect_concurrency: int = 200  # connection attempts in progress at once, per process
    drain_timeout: float = 60.0  # after `duration`, how long to wait for outboxes to empty
    firmware: str = "sim-1.0"  # the version a device runs without a bundle
    seed: int = 1
    bundle: str | None = None  # the `fleet build` bundle every device runs at the start (its files, trust list)
    ota_boot_s: float = 1.0  # a restart of an update, from the reset to the next connection attempt
    ota_rollback_share: float = 0.0  # share of devices whose new release crashes on trial (rolled back)
    ota_fail_share: float = 0.0  # share of devices with no flash to spare (failed NO_SPACE)
    ota_cut_share: float = 0.0  # share of devices that lose their link once mid-download, then resume
    ota_cut_s: float = 3.0  # how long that link stays down


@dataclass
class Stats:
    """Counters of one process."""

    publishes: int = 0  # PUBLISH packets written, resends included
    connected: int = 0  # sessions up right now
    connected_peak: int = 0
    max_lag_s: float = 0.0  # the latest a sample ran after its planned time
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, code: str) -> None:
        """Count one failure by kind (connect timeouts, refusals...)."""
        self.errors[code] = self.errors.get(code, 0) + 1


class Context:
    """Shared by the devices of one process: loop, settings, the weather, one pack builder, one random
    source, counters, the limit on connection attempts in progress and the firmware they run."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop, start_wall: float,
                 start_loop: float, seed: int) -> None:
        self.settings = settings
        self.loop = loop
        self.weather = Weather(load(settings.scenario))
        self.catalogue = Catalogue.for_settings(settings)
        self.builder = PackBuilder(4)  # filled and emptied within one synchronous call: one is enough
        self.rnd = random.Random(seed)
        self.stats = Stats()
        self.connecting = asyncio.Semaphore(settings.connect_concurrency)
        self.start_wall = start_wall  # time.time() of the run's start
        self.start_loop = start_loop  # loop.time() of the same moment
        self.stopping = False
        self.devices: list[Any] = []
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coro` as a task that is kept until it ends; a failure is counted, not lost."""
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            self.stats.error("task_%s" % type(error).__name__)
            if self.stats.errors["task_%s" % type(error).__name__] == 1:  # the first of each kind, in full
                import traceback

                traceback.print_exception(error)

    def wall(self) -> float:
        """Unix time now (from the loop's clock, so the two never disagree within a run)."""
        return self.start_wall + (self.loop.time() - self.start_loop)

    def scenario_time(self) -> float:
        """Scenario seconds since the run started."""
        return (self.loop.time() - self.start_loop) * self.settings.speed
