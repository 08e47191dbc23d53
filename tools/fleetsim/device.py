"""One simulated sensor node: the agent's behaviour on the wire, without its VM.

What it sends is what agent/app.py sends, encoded by the same `protocols.up` and `up_status` functions:
- at every connection attempt a will (retained state offline) with a freshly reserved seq; after the
  CONNACK a retained birth, then the subscription to its commands (agent/connected.py `will`, `birth`);
- each sample: alarm events from the agent's own `Alarm` with the firmware's default thresholds
  (agent/defaults.py), then one telemetry pack of the kind's measurements built by `PackBuilder`, `ut`
  on the first pack after a birth (agent/reporter.py); both go through an outbox first, drained oldest
  first, `window` in flight, at most `drain_rate` a second, kept through an outage (agent/uplink.py);
- health every `health_s`, command acks and OTA progress are published at once (agent/app.py
  `publish_now`); one the broker does not PUBACK (the session dropped first) or that finds no session is
  appended to the outbox with its seq and resent like a reading, so it is no gap; a health report due
  while offline is skipped and uses no seq;
- ping, config, rebirth and reboot are acknowledged as agent/commands.py does; reboot starts a new
  boot id with seq skipped to the next block of 256 (agent/sequence.py);
- OTA offers are taken as the agent takes them, with update mode, trial boot and rollback as restarts on
  the wire (tools/fleetsim/ota.py, update.py); in update mode there is no sampling, health or outbox
  drain, only pulls and live progress reports, and only chunks and offers are read.
A misbehaving device also resends acknowledged messages (QoS 1 DUP), reorders its outbox and publishes
garbage. Everything acknowledged, published by the broker (wills) or never published is written down in
the device's `DeviceLedger` (tools/fleetsim/report.py). Its sessions with the broker (connect, lose,
cut, restart, stop) are tools/fleetsim/session.py.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from typing import Any

from agent.alarm import Alarm
from agent.defaults import config_for
from protocols import up, up_status
from protocols.cbor import dumps
from protocols.errors import ProtocolError
from tools.fleetsim import mqttwire as wire
from tools.fleetsim.items import (
    ACK,
    BOGUS,
    DUP,
    EVENT,
    GARBAGE,
    HEALTH,
    LIVE,
    MODE,
    OUTBOX,
    STATE,
    TELEMETRY,
    TOPIC_KINDS,
)
from tools.fleetsim.report import DeviceLedger
from tools.fleetsim.scenario import SENSOR, Variation
from tools.fleetsim.session import MASK, OFFLINE, ONLINE, STOPPED, Sessions

# what a device runs (tools/fleetsim/ota.py)
AGENT, UPDATE_MODE = range(2)
RECENT = 4  # acknowledged messages a misbehaving device keeps to resend


def garbage(rnd: random.Random, boot: int) -> tuple[int, bytes]:
    """(topic kind, payload) of one message the fleet must quarantine: bad CBOR, an oversized payload,
    a wrong field type, a missing field, or an unknown message type."""
    pick = rnd.randrange(5)
    if pick == 0:
        return TELEMETRY, b"\xff\x00garbage"  # a break byte outside any container: bad_cbor
    if pick == 1:
        return TELEMETRY, b"\x59\x04\x4c" + bytes(1100)  # 1103 bytes > SPEC's 1024: too_large
    if pick == 2:
        return TELEMETRY, dumps([1, "boot", 3, {0: "level", 2: 1}])  # boot id must be a uint: bad_field
    if pick == 3:
        return EVENT, dumps({0: 1, 1: boot, 2: 7})  # an event without alarm, state...: missing_field
    return BOGUS, dumps({0: 1, 1: boot, 2: 7})  # no up type "bogus": bad_type


class SimDevice(Sessions):
    """A device of spec {id, kind, username, password}, sharing `ctx` (tools/fleetsim/context.py)."""

    __slots__ = ("ctx", "id", "kind", "username", "password", "client_id", "topics", "cmd_filter", "ledger",
                 "var", "alarms", "outbox", "inflight", "pid", "send_ut", "next_health", "config_version",
                 "dropped", "misbehaves", "reorder", "recent", "last_tx", "last_values", "firmware", "mode", "ota",
                 "behaviour")  # and Sessions' slots

    def __init__(self, ctx: Any, spec: dict[str, Any], misbehaves: bool = False, behaviour: int = 0) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.id = spec["id"]
        self.kind = spec["kind"]
        self.username = spec.get("username") or self.id
        self.password = spec.get("password")
        self.client_id = settings.fleet + "-" + self.id  # agent/identity.py
        prefix = "dt/%s/%s/" % (settings.fleet, self.id)
        self.topics = tuple((prefix + kind).encode() for kind in TOPIC_KINDS)
        self.cmd_filter = "cmd/%s/%s/+" % (settings.fleet, self.id)
        self.ledger = DeviceLedger(self.kind)
        self.boot = 1
        self.seq = 0
        self.reset_cause = 1  # power-on
        self.var = Variation(ctx.rnd)
        self.alarms = [Alarm(name, rule[0], rule[1], rule[2], rule[3], rule[4], clear_confirm=rule.get(5))
                       for name, rule in config_for(self.kind)[3].items()]
        self.outbox: deque[tuple[Any, ...]] = deque()
        self.inflight: dict[int, tuple[Any, ...]] = {}
        self.flight = 0
        self.pid = 0
        self.conn = None
        self.state = OFFLINE
        self.planned = None
        self.will = None
        self.send_ut = True
        now = ctx.loop.time()
        self.next_health = now + 10.0 + ctx.rnd.uniform(0.0, settings.health_s)  # agent/app.py: 10 s after boot
        self.next_send = 0.0
        self.timer = None
        self.config_version = 0
        self.dropped = 0
        self.misbehaves = misbehaves
        self.reorder = False
        self.recent: list[tuple[Any, ...]] = []
        self.last_tx = now
        self.started = now
        self.failures = 0
        self.last_values: list[tuple[str, float, str | None]] = []
        self.firmware = ctx.catalogue.base  # tools/fleetsim/firmware.py: what it runs, shared
        self.mode = AGENT
        self.ota: Any = None  # tools/fleetsim/ota.py OtaSide, made at the first offer
        self.behaviour = behaviour  # with the updates it takes (tools/fleetsim/update.py WORKS...)

    def restart_clock(self) -> None:
        """Sampling starts now: the first health report is due 10 s to 10 s + health_s later (agent/app.py
        waits 10 s after boot; a fleet's devices did not all boot at once)."""
        self.next_health = self.ctx.loop.time() + 10.0 + self.ctx.rnd.uniform(0.0, self.ctx.settings.health_s)

    # ---- sequence and outbox ----
    def next_seq(self) -> int:
        """The next sequence number (one counter for every up message, agent/sequence.py)."""
        seq = self.seq
        self.seq = (seq + 1) & MASK
        return seq

    def _store(self, kind: int, seq: int, payload: bytes, readings: int = 0) -> None:
        self.outbox.append((OUTBOX, self.boot, seq, kind, payload, readings))
        if len(self.outbox) + self.flight > self.ctx.settings.outbox_max and self.outbox:
            _origin, boot, old, _kind, _payload, _readings = self.outbox.popleft()  # full: the oldest goes
            self.ledger.boot(boot).lost.add(old)
            self.dropped += 1

    # ---- sampling ----
    def tick(self) -> None:
        """One sample: alarm events, a telemetry pack, health when due, maybe a misbehaviour."""
        if self.mode != AGENT:
            return  # update mode reads no sensor
        ctx = self.ctx
        st = ctx.scenario_time()
        now = ctx.wall()
        values = ctx.weather.values(self.kind, st, self.var, ctx.rnd)
        self.last_values = values
        for alarm in self.alarms:
            for name, value, _unit in values:
                if name != alarm.measure:
                    continue
                event = alarm.update(value, st)  # confirmation runs on scenario time
                if event is not None:
                    since = int(now - (st - event.since) / ctx.settings.speed)
                    seq = self.next_seq()
                    self._store(EVENT, seq, up.event(self.boot, seq, event.name, event.state, event.level,
                                                     event.value, event.threshold, since))
        self._pack(values, int(now))
        if ctx.loop.time() >= self.next_health:
            self.health()
        if self.misbehaves and ctx.rnd.random() < ctx.settings.misbehave_p:
            self.misbehave()
        self.pump()

    def _pack(self, values: list[tuple[str, float, str | None]], epoch: int) -> None:
        builder = self.ctx.builder
        builder.clear()
        for name, value, unit in values:
            builder.add(name, value, epoch, unit)
        records = builder.pack(self.ctx.settings.heartbeat if self.send_ut else None)
        builder.clear()
        self.send_ut = False
        seq = self.next_seq()
        self._store(TELEMETRY, seq, up.telemetry(self.boot, seq, records), len(values))

    def health(self) -> None:
        """A health report, at once; one due while offline is skipped (agent/app.py `health`)."""
        ctx = self.ctx
        now = ctx.loop.time()
        self.next_health = now + ctx.settings.health_s
        if self.state != ONLINE:
            return
        st = ctx.scenario_time()
        seq = self.next_seq()
        payload = up_status.health(self.boot, seq, int(now - self.started),
                                   heap_free=60000 + ctx.rnd.randrange(4000), heap_min=48000, flash_free=1_200_000,
                                   battery=ctx.weather.battery_mv(st), rssi=ctx.weather.rssi(st),
                                   outbox=len(self.outbox) + self.flight, dropped=self.dropped,
                                   reconnects=self.ledger.connects)
        self.live(HEALTH, seq, payload)

    def misbehave(self) -> None:
        """Resend an acknowledged message, reorder the next outbox window, or publish garbage."""
        rnd = self.ctx.rnd
        pick = rnd.random()
        if pick < 0.4:
            if self.recent and self.state == ONLINE:
                item = rnd.choice(self.recent)
                self._send((DUP,) + item[1:], dup=True)
        elif pick < 0.7:
            self.reorder = True
        elif self.state == ONLINE:
            kind, payload = garbage(rnd, self.boot)
            self._send((GARBAGE, self.boot, -1, kind, payload, 0))

    # ---- publishing ----
    def _pid(self) -> int:
        pid = self.pid % 0xFFFF + 1
        while pid in self.inflight:
            pid = pid % 0xFFFF + 1
        self.pid = pid
        return pid

    def _send(self, item: tuple[Any, ...], dup: bool = False) -> None:
        conn = self.conn
        if conn is None:
            return
        pid = self._pid()
        self.inflight[pid] = item
        kind = item[3]
        conn.write(wire.publish(self.topics[kind], item[4], 1, pid, kind == STATE, dup))
        self.ctx.stats.publishes += 1
        self.last_tx = self.ctx.loop.time()

    def live(self, kind: int, seq: int, payload: bytes) -> None:
        """Publish at once; with no session up, into the outbox (agent/app.py `publish_now`)."""
        if self.state == ONLINE:
            self._send((LIVE, self.boot, seq, kind, payload, 0))
        else:
            self._store(kind, seq, payload)

    def mode_live(self, kind: int, seq: int, payload: bytes) -> None:
        """Publish from update mode: live only, lost without a session (it has no outbox)."""
        if self.state == ONLINE:
            self._send((MODE, self.boot, seq, kind, payload, 0))
        else:
            self.ledger.boot(self.boot).lost.add(seq)

    def pump(self) -> None:
        """Publish outbox records while the window and the drain rate allow (not in update mode)."""
        if self.state != ONLINE or self.mode != AGENT:
            return
        settings = self.ctx.settings
        now = self.ctx.loop.time()
        interval = 1.0 / settings.drain_rate
        outbox = self.outbox
        while outbox and self.flight < settings.window:
            if now < self.next_send:
                if self.timer is None:
                    self.timer = self.ctx.loop.call_at(self.next_send, self._wake)
                return
            if self.reorder and len(outbox) >= 2:
                item = outbox[1]
                del outbox[1]
                self.reorder = False
                self.ledger.reordered += 1
            else:
                item = outbox.popleft()
            self.flight += 1
            self._send(item)
            self.next_send = max(self.next_send, now - settings.window * interval) + interval

    def _wake(self) -> None:
        self.timer = None
        self.pump()

    def on_puback(self, pid: int) -> None:
        """The broker acknowledged packet `pid`."""
        item = self.inflight.pop(pid, None)
        if item is None:
            return
        origin, boot, seq, kind, _payload, readings = item
        ledger = self.ledger
        if origin == GARBAGE:
            ledger.garbage += 1
            return
        if origin == DUP:
            ledger.duplicates += 1
            return
        entry = ledger.boot(boot)
        entry.acked.add(seq)
        if kind == TELEMETRY:
            entry.readings += readings
            entry.telemetry += 1
        elif kind == STATE:
            entry.births.append(seq)  # the device publishes births only; wills are the broker's
        if origin == OUTBOX:
            self.flight -= 1
            if self.misbehaves:
                self.recent.append(item)
                if len(self.recent) > RECENT:
                    del self.recent[0]
            self.pump()

    # ---- commands ----
    def on_command(self, topic: str, payload: bytes) -> None:
        """A command from the fleet: acknowledge it as agent/commands.py does; offers and chunks go to the
        device's update (tools/fleetsim/ota.py); update mode reads nothing else."""
        from protocols.messages import decode_down
        from tools.fleetsim import ota

        kind = topic.rsplit("/", 1)[-1]
        if kind == "ota" and not payload:
            ota.on_offer(self, None)  # the fleet cleared its offer
            return
        if self.mode != AGENT and kind not in ("ota", "chunk"):
            return
        try:
            command = decode_down(kind, payload)
        except ProtocolError:
            self.ctx.stats.error("bad_command")  # malformed: no cid to ack
            return
        if kind == "chunk":
            update = self.ota.update if self.ota is not None else None
            if update is not None:
                update.chunk(command)
            return
        if kind == "ota":
            ota.on_offer(self, command)
            return
        self.ledger.commands += 1
        if kind == "config":
            self.config_version = command.version
            self.ack(command.cid, None)
        elif kind == "ping":
            self.ack(command.cid, None, command.echo)
        elif kind == "rebirth":
            self.ack(command.cid, None)
            self.birth()
            if self.last_values:
                self._pack(self.last_values, int(self.ctx.wall()))
            self.health()
            self.pump()
        elif kind == "reboot":
            self.ack(command.cid, None)
            self.ctx.spawn(self.reboot())
        else:
            self.ack(command.cid, ["unsupported"])

    def ack(self, cid: int, reasons: list[str] | None, result: Any = None) -> None:
        """Acknowledge command `cid` (refused when there are reasons)."""
        seq = self.next_seq()
        self.live(ACK, seq, up_status.ack(self.boot, seq, cid, 1 if reasons else 0, reasons, self.config_version,
                                          result))

    def birth(self) -> None:
        """The retained birth; the next pack carries `ut` again."""
        seq = self.next_seq()
        self._send((LIVE, self.boot, seq, STATE, up_status.state(self.boot, seq, True, self.firmware.version,
                                                                 self.config_version, self.reset_cause,
                                                                 SENSOR[self.kind]), 0))
        self.send_ut = True

    # ---- the connection ----
    async def reboot(self) -> None:
        """Restart as on `fleet reboot`: the ack had a second to leave, then a hard reset (no DISCONNECT:
        the broker publishes the will), a new boot id and seq from the next block."""
        await asyncio.sleep(1.0)
        if self.state not in (ONLINE, OFFLINE) or not await self.shut_down(clean=False):
            return
        await asyncio.sleep(0.5)
        if self.rebooting():
            self.new_boot()
            await self.connect()

    def idle(self) -> bool:
        """Nothing left to send, no connection change and no update under way."""
        side = self.ota
        busy = side is not None and (side.taken is not None or side.settle is not None)
        return (not self.outbox and not self.inflight and self.state in (ONLINE, STOPPED) and self.mode == AGENT
                and not busy)
