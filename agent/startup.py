"""Start-up of the agent: what runs once, before the tasks start (agent/app.py), loaded for the call.

`identity()` reads /device.json, `build()` gives an Agent its parts (sequence, config, outbox, reporter,
scheduler, commands, link, uplink, counters) and `start()` sets the sensor up and starts the tasks. Each runs
through agent.transient, so this code, like the identity reader's, is dropped once the node is running:
on the heap it would only take room.
"""

import asyncio
import os
import time

from agent import reconfig, tls_context
from agent.commands import Commands
from agent.config import AgentConfig
from agent.errors import SensorFault
from agent.link import Link
from agent.outbox import Outbox
from agent.reporter import Reporter
from agent.scheduler import Scheduler
from agent.sequence import Sequence
from agent.uplink import Uplink

RESET_CODES = {"power_on": 1, "hard": 2, "wdt": 3, "deepsleep": 4, "soft": 5}


def build(agent, data):
    """Give `agent` (its board, id and sensor set) its parts; state files live under folder `data`."""
    board = agent.board
    ident = agent.id
    sensor = agent.sensor
    agent.errors = {}  # error code -> count (health)
    agent.fault = None  # the last sensor fault
    agent._sleeper = None  # the sampler's task while it sleeps (agent/app.py _waker)
    agent.firmware = ident.firmware
    agent.reset_cause = RESET_CODES.get(board.reset_cause(), 0)
    _mkdir(data)
    agent.sequence = sequence = Sequence(data + "/seq")
    agent.config = config = AgentConfig(ident.kind, data + "/config.json")
    agent.config_faults = config.load()
    _mkdir(data + "/outbox")
    agent.outbox = outbox = Outbox(data + "/outbox")
    agent.reporter = reporter = Reporter(config, outbox, sequence, data + "/alarms")
    agent.scheduler = Scheduler(sensor.interval_ms(True), sensor.interval_ms(False))
    reconfig.slow_period(config, reporter, sensor, agent.scheduler)
    config._doc = None  # read: the alarms, filters and schedule are built (agent/config.py)
    agent.commands = commands = Commands(agent)
    agent.link = link = Link(board, ident.host, ident.port, ident.client_id, keepalive=60, user=ident.user,
                             password=ident.password, will=agent._will, on_connect=agent._on_connect,
                             on_message=commands.offer, backoff=ident.backoff, stable_s=ident.stable_s,
                             tls=tls_context.for_link(ident))
    agent.uplink = Uplink(link, outbox, ident.fleet, ident.device)
    agent.started = agent.progress = agent._heap_checked = time.ticks_ms()


def start(agent):
    """Set the sensor up (a fault is counted, the sampler retries) and start the agent's tasks."""
    sensor = agent.sensor
    try:
        sensor.setup()
    except SensorFault as fault:
        agent.fault = fault.code
        agent._count(fault.code)
    sensor.set_thresholds(reconfig.near_thresholds(agent.reporter))
    # A node that just started samples fast for the scheduler's hold (a minute), as after a change: its
    # first readings, and what the fleet or a technician does right after the boot, are seen at once.
    agent.scheduler.done(time.ticks_ms(), True)
    for task in (agent.sampler, agent.link.run, agent.uplink.run, agent.commands.run, agent.health):
        asyncio.create_task(agent._guard(task))
    flag = getattr(sensor, "flag", None)
    if flag is not None:
        asyncio.create_task(agent._waker(flag))
    for task in agent.board.background():
        asyncio.create_task(task)


def identity():
    """The node's identity (agent/identity.py); first interns the names of what later calls load."""
    # Load once, while the heap is young, what commands and reports load later: the names they intern
    # stay (MicroPython never frees qstrs), so a later load never needs a new qstr pool, a large block
    # that a fragmented heap may no longer have.
    from agent import (  # noqa: F401
        command_read,
        command_run,
        config_apply,
        config_check,
        connected,
        defaults,
        health_report,
        identity,
    )
    from protocols import cbor_lite, up_status  # noqa: F401

    return identity.load()


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass  # exists
