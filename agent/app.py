"""The agent: wires board, sensor, reporter, outbox, link, uplink and commands into one asyncio program.

Tasks: the sampler (adaptive schedule; woken at once by the LIS3DH activity interrupt), the link (keeps
the MQTT session up: birth on every connect, will = offline with this boot id), the uplink (drains the
outbox), commands, health every `HEALTH_S`, and the watchdog feeder, which feeds the hardware watchdog
only while the sampler makes progress, so a hung agent is reset by the hardware.
Files on flash: /device.json (identity, from provisioning), /data/* (config, alarms, sequence, outbox).
"""

import asyncio
import gc
import os
import sys
import time

from agent import transient
from agent.commands import Commands
from agent.config import AgentConfig
from agent.errors import AgentError, SensorFault
from agent.link import Link
from agent.outbox import Outbox
from agent.reporter import Reporter
from agent.scheduler import Scheduler
from agent.sensing import make_sensor
from agent.sequence import Sequence
from agent.uplink import Uplink
from protocols import topics, up

DATA = "/data"
HEALTH_S = 300
WDT_MS = 30000
HEAP_CHECK_MS = 10000
#: Bytes kept in one block for the code a config change or a command loads (agent/transient.py).
ROOM = 6144
#: Sampler this late past its planned wake-up means the agent is stuck: stop feeding the watchdog.
STALL_MS = 20000
RESET_CODES = {"power_on": 1, "hard": 2, "wdt": 3, "deepsleep": 4, "soft": 5}
KIND_NAMES = {"manhole-tilt": "manhole", "water-level": "water", "wind-load": "billboard"}


def epoch():
    """Seconds since 1970 (the unix and ESP32 ports of MicroPython 1.2x count from 1970)."""
    return int(time.time())


class Agent:
    """One sensor node's agent."""

    def __init__(self, board, ident, data=DATA):
        self.board = board
        self.id = ident
        _mkdir(data)
        self.sequence = Sequence(data + "/seq")
        self.config = AgentConfig(ident.kind, data + "/config.json")
        self.config_faults = self.config.load()
        _mkdir(data + "/outbox")
        self.outbox = Outbox(data + "/outbox")
        self.reporter = Reporter(self.config, self.outbox, self.sequence, data + "/alarms")
        self.sensor = make_sensor(ident.kind, board, ident.calibration)
        self.scheduler = Scheduler(self.sensor.interval_ms(True), self.sensor.interval_ms(False))
        self._slow_from_config()
        self.commands = Commands(self)
        self.firmware = ident.firmware
        self.reset_cause = RESET_CODES.get(board.reset_cause(), 0)
        self.started = time.ticks_ms()
        self.progress = self.started
        gc.collect()
        self.heap_min = gc.mem_free()
        self._heap_checked = self.started
        self.errors = {}
        self.fault = None
        self.link = Link(board, ident.host, ident.port, ident.client_id, keepalive=60, user=ident.user,
                         password=ident.password, will=self._will, on_connect=self._on_connect,
                         on_message=self.commands.offer)
        self.uplink = Uplink(self.link, self.outbox, ident.fleet, ident.device)

    def _topic(self, kind):
        return str(topics.up(self.id.fleet, self.id.device, kind))

    def _count(self, code):
        self.errors[code] = self.errors.get(code, 0) + 1

    def _will(self):
        # Reserved at every connect, so the will is unique and carries this boot id (SPEC "State").
        return (self._topic("state"), up.state(self.sequence.boot, self.sequence.next(), False), 1, True)

    async def _on_connect(self, client):
        await self.birth(client)
        await client.subscribe("cmd/%s/%s/+" % (self.id.fleet, self.id.device), 1)  # SPEC.md "Topics"
        self.uplink.wake.set()

    async def birth(self, client):
        """Publish the retained birth: firmware, config version, boot id, reset cause."""
        birth = up.state(self.sequence.boot, self.sequence.next(), True, self.firmware, self.config.version,
                         self.reset_cause, KIND_NAMES.get(self.id.kind))
        pid = await client.publish(self._topic("state"), birth, 1, True)
        await client.wait_ack(pid)
        self.reporter.send_ut = True

    async def publish_now(self, kind, payload):
        """Publish a live message (ack, health) when a session is up; such messages are not stored."""
        client = self.link.client
        if client is None:
            return False
        try:
            pid = await client.publish(self._topic(kind), payload, 1)
            return await client.wait_ack(pid)
        except AgentError:
            self._count("publish")
            return False

    def _slow_from_config(self):
        # The quiet-day period is the config's (key 4) for the kind's main measurement, but never longer
        # than the sensor's own: the wind sensor's 3-second gust needs samples every few seconds.
        seconds = self.config.sample_s(self.reporter.measures[0])
        if seconds:
            self.scheduler.slow_ms = min(int(seconds * 1000), self.sensor.interval_ms(False))

    def apply_config(self, doc):
        """Apply a config document from the fleet; return the reasons for what was refused."""
        reasons = self.config.apply(doc)
        self._slow_from_config()
        self.reporter.reload()
        self.sensor.set_thresholds(self.reporter.near_thresholds())
        return reasons

    async def rebirth(self):
        """Resend the birth, the current values and a health report."""
        client = self.link.client
        if client is not None:
            await self.birth(client)
        self.reporter.force(epoch())
        self.uplink.wake.set()
        await self.publish_now("health", self.health_message())

    async def reboot(self):
        """Reboot on the fleet's command, after the ack had time to leave."""
        self.outbox.sync()
        await asyncio.sleep(1)
        self.board.reset()

    def sample_once(self):
        """Read the sensor once and report; a sensor fault is recorded, never raised."""
        now_ms = time.ticks_ms()
        try:
            self.sensor.sample(now_ms)
        except SensorFault as fault:
            self.fault = fault.code
            self._count(fault.code)
            return False
        values = self.sensor.values()
        if not values:
            return True  # no reading yet (a ranger's first frame, a filter filling): keep sampling fast
        if values:
            if self.reporter.sample(values, epoch()):
                self.uplink.wake.set()
            elif self.outbox.count:
                self.uplink.wake.set()
        return self.sensor.moving()

    async def sampler(self):
        """Sample on the adaptive schedule; an accelerometer interrupt wakes it at once."""
        flag = getattr(self.sensor, "flag", None)
        while True:
            busy = self.sample_once()
            period = self.scheduler.done(time.ticks_ms(), busy)
            # Alive means: back from this sleep within STALL_MS of its planned end.
            self.progress = time.ticks_add(time.ticks_ms(), period)
            await _sleep_or_flag(period, flag)
            self._heap_check()

    def _heap_check(self):
        # MicroPython collects only when an allocation fails, so free heap without a collection counts
        # garbage. Collect every HEAP_CHECK_MS: the low-water mark then tracks live data (the real peak)
        # and the heap never fills with garbage between reports.
        now = time.ticks_ms()
        if time.ticks_diff(now, self._heap_checked) < HEAP_CHECK_MS:
            return
        self._heap_checked = now
        gc.collect()
        free = gc.mem_free()
        if free < self.heap_min:
            self.heap_min = free

    async def health(self):
        """Publish health every HEALTH_S seconds (and once soon after boot)."""
        await asyncio.sleep(10)
        while True:
            await self.publish_now("health", self.health_message())
            await asyncio.sleep(HEALTH_S)

    def health_message(self):
        """The health report of this moment, encoded (agent/health_report.py, loaded for the call)."""
        return transient.call(_health, self)

    async def watchdog(self):
        """Feed the hardware watchdog only while the sampler makes progress."""
        wdt = self.board.watchdog(WDT_MS)
        while True:
            if time.ticks_diff(time.ticks_ms(), self.progress) < STALL_MS:
                wdt.feed()
            await asyncio.sleep_ms(WDT_MS // 4)

    async def run(self):
        """Start every task and run forever."""
        try:
            self.sensor.setup()
        except SensorFault as fault:
            self.fault = fault.code
            self._count(fault.code)
        self.sensor.set_thresholds(self.reporter.near_thresholds())
        transient.hold(ROOM)
        tasks = [self.sampler, self.link.run, self.uplink.run, self.commands.run, self.health]
        background = [asyncio.create_task(self._guard(t)) for t in tasks]
        background += [asyncio.create_task(t) for t in self.board.background()]
        await self.watchdog()

    async def _guard(self, task):
        # A task that fails is counted, printed and restarted; if it keeps failing the sampler's
        # progress stops being fed to the watchdog only when the sampler itself is the one failing.
        while True:
            try:
                await task()
            except Exception as error:  # noqa: BLE001 - the agent must outlive any one bug
                self._count("task")
                print("agent: task failed:")
                sys.print_exception(error)
                await asyncio.sleep(5)


async def _sleep_or_flag(ms, flag):
    if flag is None:
        await asyncio.sleep_ms(ms)
        return
    try:
        await asyncio.wait_for_ms(flag.wait(), ms)
    except asyncio.TimeoutError:
        pass


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass  # exists


def _health(agent):
    from agent import health_report

    return health_report.encode(agent)


def _identity():
    from agent import identity

    return identity.load()


def _intern():
    # Load once, while the heap is young, what commands and reports load later: the names they intern
    # stay (MicroPython never frees qstrs), so a later load never needs a new qstr pool, a large block
    # that a fragmented heap may no longer have.
    from agent import config_apply, config_check, defaults, health_report  # noqa: F401
    from protocols import cbor_lite  # noqa: F401


def main(board):
    """Entry point from main.py: load the identity and run the agent."""
    transient.call(_intern)
    ident = transient.call(_identity)
    asyncio.run(Agent(board, ident).run())
