"""A simulated device's sessions with the broker: connecting (its will's seq reserved first, then the
birth and the subscription, agent/connected.py `will`, `birth`), retrying with backoff, losing the link (what
was in flight is resent, kept or marked unsure), planned outages and cuts, restarts as a new boot, and
the end of the run. `Sessions` is the connection half of `SimDevice` (tools/fleetsim/device.py), which
supplies what a session publishes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from protocols import up_status
from tools.fleetsim import mqttwire as wire
from tools.fleetsim.connection import Connection
from tools.fleetsim.items import GARBAGE, LIVE, MODE, OUTBOX, STATE, TOPIC_KINDS
from tools.fleetsim.report import DeviceLedger

# device states
OFFLINE, CONNECTING, ONLINE, DRAINING, OUTAGE, REBOOTING, STOPPED = range(7)
SEQ_BLOCK = 256  # agent/sequence.py: a reboot skips to the next reserved block
MASK = 0xFFFFFFFF
CONNECT_TIMEOUT_S = 10.0
BACKOFF = (1.0, 30.0)  # agent/link.py full-jitter backoff (base, cap); the agent caps at 60 s
DRAIN_WAIT_S = 5.0  # before a planned cut, how long the in-flight messages may take to be acknowledged


class Sessions:
    """The connection half of a simulated device (its attributes are SimDevice's slots)."""

    # the session's and the boot's state, and the outbox pacing a session resets
    __slots__ = ("conn", "state", "planned", "will", "failures", "boot", "seq", "reset_cause", "started", "timer",
                 "next_send", "flight")
    conn: Connection | None
    state: int
    planned: str | None  # how we are ending the connection: "abort" or "disconnect"
    will: tuple[int, int] | None  # (boot, seq) of the will registered with the broker
    failures: int
    boot: int
    seq: int
    reset_cause: int
    started: float
    timer: asyncio.TimerHandle | None
    next_send: float
    flight: int  # outbox records among inflight
    # the device's (tools/fleetsim/device.py)
    ctx: Any
    ledger: DeviceLedger
    topics: tuple[bytes, ...]
    client_id: str
    username: str
    password: str | None
    cmd_filter: str
    inflight: dict[int, tuple[Any, ...]]
    outbox: deque[tuple[Any, ...]]
    ota: Any

    # what the device publishes (tools/fleetsim/device.py)
    def next_seq(self) -> int:
        raise NotImplementedError

    def birth(self) -> None:
        raise NotImplementedError

    def pump(self) -> None:
        raise NotImplementedError

    def _pid(self) -> int:
        raise NotImplementedError

    def _store(self, kind: int, seq: int, payload: bytes, readings: int = 0) -> None:
        raise NotImplementedError

    def online(self) -> bool:
        """A session is up and taking new messages."""
        return self.state == ONLINE

    async def connect(self) -> None:
        """One connection attempt (the will's seq reserved first); on failure a retry with backoff."""
        if self.state != OFFLINE:
            return
        self.state = CONNECTING
        ctx = self.ctx
        settings = ctx.settings
        async with ctx.connecting:
            boot, seq = self.boot, self.next_seq()
            will = (self.topics[STATE].decode(), up_status.state(boot, seq, False), 1, True)
            future: asyncio.Future[int] = ctx.loop.create_future()
            conn = Connection(self, wire.connect(self.client_id, settings.keepalive, self.username, self.password,
                                                 will), future)
            try:
                await asyncio.wait_for(ctx.loop.create_connection(lambda: conn, settings.host, settings.port),
                                       CONNECT_TIMEOUT_S)
                code = await asyncio.wait_for(future, CONNECT_TIMEOUT_S)
            except OSError:
                code = -1
            except TimeoutError:
                code = -2
        if code == 0 and conn.transport is None:
            code = -1  # accepted, then gone before we got here
        if code == 0 and self.state != CONNECTING:  # stopped meanwhile: leave without a will
            conn.close()
            self.ledger.boot(boot).reserved.append(seq)
            return
        if code != 0:
            conn.abort()
            if code == -2:  # the broker may have taken the connection: the will may come
                self.ledger.boot(boot).uncertain.append([seq, "state"])
            else:
                self.ledger.boot(boot).reserved.append(seq)
            ctx.stats.error("connect_timeout" if code == -2 else "connect_failed" if code == -1
                            else "connack_%d" % code)
            self._retry()
            return
        self.conn = conn  # from here on its end is news (on_lost)
        self.will = (boot, seq)
        self.state = ONLINE
        self.failures = 0
        self.ledger.connects += 1
        stats = ctx.stats
        stats.connected += 1
        stats.connected_peak = max(stats.connected_peak, stats.connected)
        self.birth()
        conn.write(wire.subscribe(self._pid(), self.cmd_filter, 1))
        self.next_send = ctx.loop.time() - settings.window / settings.drain_rate
        self.pump()
        if self.ota is not None:
            from tools.fleetsim import ota

            ota.on_session(self)

    def _retry(self) -> None:
        if self.state == STOPPED:
            return
        self.state = OFFLINE
        base, cap = BACKOFF
        delay = self.ctx.rnd.uniform(0, min(cap, base * 2 ** self.failures))
        self.failures = min(self.failures + 1, 16)
        self.ctx.loop.call_later(delay, self._reconnect)

    def _reconnect(self) -> None:
        if self.state == OFFLINE:
            self.ctx.spawn(self.connect())

    def on_lost(self, conn: Connection) -> None:
        """The connection ended (we cut it, closed it, or it died)."""
        if conn is not self.conn:
            return
        self.conn = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.ctx.stats.connected -= 1
        planned, self.planned = self.planned, None
        ledger = self.ledger
        requeue, kept = [], []
        for item in self.inflight.values():
            origin = item[0]
            if origin == OUTBOX and self.state != STOPPED:
                requeue.append(item)  # resent on the next session, as the outbox does
            elif origin == LIVE and item[3] != STATE and self.state != STOPPED:
                kept.append((OUTBOX,) + item[1:])  # not acknowledged: appended to the outbox (publish_now)
            elif origin in (OUTBOX, LIVE, MODE):
                ledger.boot(item[1]).uncertain.append([item[2], TOPIC_KINDS[item[3]]])
            elif origin == GARBAGE:
                ledger.garbage_unsure += 1
        self.inflight.clear()
        self.flight = 0
        requeue.sort(key=lambda item: item[2])
        self.outbox.extendleft(reversed(requeue))
        kept.sort(key=lambda item: item[2])
        for item in kept:
            self._store(item[3], item[2], item[4], item[5])
        if self.will is not None:
            boot, seq = self.will
            if planned == "abort":
                ledger.boot(boot).wills.append(seq)  # the broker saw the socket die: it publishes the will
            elif planned == "disconnect":
                ledger.boot(boot).reserved.append(seq)
            else:
                ledger.boot(boot).uncertain.append([seq, "state"])  # the broker itself may be gone
            self.will = None
        if self.state in (ONLINE, DRAINING):
            self.ctx.stats.error("connection_lost")
            self._retry()

    async def _drain_inflight(self) -> None:
        deadline = self.ctx.loop.time() + DRAIN_WAIT_S
        while self.inflight and self.ctx.loop.time() < deadline:
            await asyncio.sleep(0.05)

    async def outage(self, seconds: float) -> None:
        """The link goes down for `seconds` (the broker publishes the will), then comes back and the
        outbox drains its backlog."""
        if self.state != ONLINE or self.conn is None:
            return
        self.state = DRAINING  # no new publishes: what is in flight gets its PUBACK, so nothing is unsure
        await self._drain_inflight()
        self.cut(seconds)

    def cut(self, seconds: float) -> None:
        """The link drops now, with whatever is in flight (the broker publishes the will); it comes back
        after `seconds`."""
        if self.state not in (ONLINE, DRAINING) or self.conn is None:
            return
        self.ledger.outages += 1
        self.state = OUTAGE
        self.planned = "abort"
        self.conn.abort()
        self.ctx.spawn(self._back_after(seconds))

    async def _back_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.state != OUTAGE:
            return  # stopped, or restarted meanwhile
        self.state = OFFLINE
        await self.connect()

    async def shut_down(self, clean: bool) -> bool:
        """End the session for a restart, once what is in flight is acknowledged: `clean` with a
        DISCONNECT (no will, as update mode ends), else a reset (the broker publishes the will). False
        when the run is ending."""
        if self.state == ONLINE:
            self.state = DRAINING
            await self._drain_inflight()
        if self.state == STOPPED:
            return False
        self.state = REBOOTING
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.conn is not None:
            self.planned = "disconnect" if clean else "abort"
            if clean:
                self.conn.close()
            else:
                self.conn.abort()
        return True

    def rebooting(self) -> bool:
        """Down for a restart (not stopped meanwhile)."""
        return self.state == REBOOTING

    def new_boot(self, cause: int = 2) -> None:
        """Come back from a restart (reset cause hard by default): a new boot id, seq from the next
        block (agent/sequence.py), ready to connect."""
        self.boot = (self.boot + 1) & MASK
        self.seq = (self.seq // SEQ_BLOCK + 1) * SEQ_BLOCK & MASK
        self.reset_cause = cause
        self.started = self.ctx.loop.time()
        self.state = OFFLINE

    def stop(self) -> None:
        """End of the run: DISCONNECT (no will); whatever was never sent is lost."""
        state = self.state
        self.state = STOPPED
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.conn is not None and state in (ONLINE, DRAINING):
            self.planned = "disconnect"
            self.conn.close()
        elif self.conn is not None:
            self.conn.abort()
        for item in self.outbox:
            self.ledger.boot(item[1]).lost.add(item[2])
        self.outbox.clear()
