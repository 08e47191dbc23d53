"""The agent: wires board, sensor, reporter, outbox, link, uplink and commands into one asyncio program.

Tasks: the sampler (adaptive schedule; woken at once by the LIS3DH activity interrupt), the link (keeps
the MQTT session up: birth on every connect, will = offline with this boot id), the uplink (drains the
outbox), commands, health every `HEALTH_S`, and the watchdog feeder, which feeds the hardware watchdog
only while the sampler makes progress, so a hung agent is reset by the hardware.
Files on flash: /device.json (identity, from provisioning), /data/* (config, alarms, sequence, outbox).
"""

import asyncio
import gc
import sys
import time

# Every module the running agent keeps is imported here, before any per-call load: one first imported
# inside agent.transient.call() would be dropped from sys.modules with the call's own modules.
from agent import (  # noqa: F401
    alarm,
    commands,
    config,
    filters,
    link,
    outbox,
    reporter,
    scheduler,
    sequence,
    transient,
    uplink,
)
from agent.errors import AgentError, SensorFault
from agent.sensing import make_sensor
from protocols import topics

DATA = "/data"
HEALTH_S = 300
WDT_MS = 30000
HEAP_CHECK_MS = 10000
#: Blocks of 1 KB kept for the code a config change or a command loads (agent/transient.py).
ROOM = 6
#: Sampler this late past its planned wake-up means the agent is stuck: stop feeding the watchdog.
STALL_MS = 20000
#: What each new session starts with: will, birth, subscription (loaded per connect: agent/transient.py).
_CONNECTED = "agent.connected"


def epoch():
    """Seconds since 1970 (the unix and ESP32 ports of MicroPython 1.2x count from 1970)."""
    return int(time.time())


class Agent:
    """One sensor node's agent."""

    # Given by agent/startup.py build(); declared for the type checker only (no heap: nothing is stored).
    sequence: sequence.Sequence
    config: config.AgentConfig
    config_faults: list
    outbox: outbox.Outbox
    reporter: reporter.Reporter
    scheduler: scheduler.Scheduler
    commands: commands.Commands
    link: link.Link
    uplink: uplink.Uplink
    firmware: str
    reset_cause: int
    errors: dict
    fault: str | None
    _sleeper: asyncio.Task | None
    started: int
    progress: int
    _heap_checked: int

    def __init__(self, board, ident, data=DATA):
        self.board = board
        self.id = ident
        # Built here, not in a per-call load, so its kind's module stays; safe mode (firmware/main.py,
        # after crashes) reads no sensor.
        self.sensor = transient.run("agent.ota", "idle_sensor") if getattr(board, "safe", False) else \
            make_sensor(ident.kind, board, ident.calibration)
        transient.run("agent.startup", "build", self, data)  # the other parts (agent/startup.py)
        gc.collect()
        self.heap_min = gc.mem_free()

    def _topic(self, kind):
        return str(topics.up(self.id.fleet, self.id.device, kind))

    def _count(self, code):
        self.errors[code] = self.errors.get(code, 0) + 1

    def _will(self):
        return transient.run(_CONNECTED, "will", self)

    async def _on_connect(self, client):
        await transient.run(_CONNECTED, "on_connect", self, client)

    async def reboot(self):
        """Reboot on the fleet's command, after the ack had time to leave."""
        self.outbox.sync()
        await asyncio.sleep(1)
        self.board.reset()

    async def publish_now(self, kind, payload, seq=None):
        """Publish at once when a session is up; True once the broker has it. A message given its `seq`
        that the broker did not take goes to the outbox, to be resent like a reading (SPEC.md "Topics"):
        its seq is used, and the fleet would report it missing."""
        client = self.link.client
        if client is not None:
            try:
                if await client.wait_ack(await client.publish(self._topic(kind), payload, 1)):
                    return True
            except AgentError:
                pass
            self._count("publish")
        if seq is not None:
            try:
                self.outbox.append(reporter.KIND_TOPIC.index(kind), seq, payload)
                self.uplink.wake.set()
            except AgentError:
                self._count("outbox")
        return False

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
        """Sample on the adaptive schedule; an accelerometer interrupt wakes it at once (_waker)."""
        while True:
            busy = self.sample_once()
            period = self.scheduler.done(time.ticks_ms(), busy)
            # Alive means: back from this sleep within STALL_MS of its planned end.
            self.progress = time.ticks_add(time.ticks_ms(), period)
            self._sleeper = asyncio.current_task()
            try:
                await asyncio.sleep_ms(period)
            except asyncio.CancelledError:
                pass  # woken early by _waker
            self._sleeper = None
            self._heap_check()

    async def _waker(self, flag):
        # The sampler sleeps on a plain timer, which allocates nothing; this task waits for the
        # sensor's interrupt flag and cuts that sleep short. (A wait_for on the flag with the period as
        # timeout would allocate about 1.3 KB per sample: ten times a second on a manhole cover.)
        while True:
            await flag.wait()
            task = self._sleeper
            if task is not None:
                self._sleeper = None
                task.cancel()

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
            if self.link.client is not None:  # a report due offline is skipped: it would only use up a seq
                await self._health_now()
            await asyncio.sleep(HEALTH_S)

    async def _health_now(self):
        seq = self.sequence.next()
        await self.publish_now("health", transient.run("agent.health_report", "encode", self, seq), seq)

    async def watchdog(self):
        """Feed the hardware watchdog only while the sampler makes progress."""
        wdt = self.board.watchdog(WDT_MS)
        while True:
            if time.ticks_diff(time.ticks_ms(), self.progress) < STALL_MS:
                wdt.feed()
            await asyncio.sleep_ms(WDT_MS // 4)

    async def run(self):
        """Start every task (agent/startup.py) and run forever."""
        transient.run("agent.startup", "start", self)
        transient.hold(ROOM)
        await self.watchdog()

    async def _guard(self, task):
        # A task that fails is counted, printed and restarted; if it keeps failing the sampler's
        # progress stops being fed to the watchdog only when the sampler itself is the one failing.
        while True:
            try:
                await task()
            except Exception as error:  # noqa: BLE001 - the agent must outlive any one bug
                if isinstance(error, MemoryError):
                    transient.spare()  # the heap held for loads goes to the running tasks first
                self._count("task")
                print("agent: task failed:")
                sys.print_exception(error)
                await asyncio.sleep(5)


def main(board):
    """Entry point from main.py: load the identity and run the agent."""
    ident = transient.run("agent.startup", "identity")
    asyncio.run(Agent(board, ident).run())
