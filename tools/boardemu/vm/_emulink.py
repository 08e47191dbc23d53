# The VM's link to the emulator's hardware hub (tools/boardemu/hardware/hub.py): MicroPython code.
#
# One loopback TCP connection to BOARDEMU_HUB, opened on first use. Requests are `op len payload`
# frames; the hub answers `R len status data`, except for one-way ops. Pin IRQ events arrive as
# `E 2 pin flags` frames at any time; they are queued in a fixed ring (overflow counted) and run
# (a) at the end of every machine call that talked to the hub and (b) by pump(), an asyncio task that
# sleeps until the hub socket is readable, so a program waiting in asyncio gets its IRQs at once.
# A handler never runs inside another one, nor while IRQs are disabled (machine.disable_irq).
# Buffers are allocated once: a request or an event costs no heap on the common path.

import os
import select
import socket
import struct
import sys
import time

import micropython
from micropython import const

_RESP = const(0x52)
_EVENT = const(0x45)
_RING = const(64)
_EIO = const(5)
_ETIMEDOUT = const(110)
_TIMEOUT_S = const(10)
_OUT = const(240)


class Link:
    def __init__(self):
        self.sock = None
        self._poll = None
        self.req = bytearray(258)
        self._out = bytearray(_OUT)  # pin writes waiting to go out with the next request
        self._olen = 0
        self.resp = bytearray(256)
        self.rlen = 0
        self._hdr = bytearray(2)
        self._ev = bytearray(2)
        self._ring = bytearray(2 * _RING)
        self._head = 0
        self._count = 0
        self.dropped = 0
        self.irq_on = True
        self._busy = False
        self.handlers = {}  # pin number -> Pin object (with _handler, _trigger, _hard)

    def _connect(self):
        addr = os.getenv("BOARDEMU_HUB")
        if not addr:
            raise OSError(19)  # ENODEV: not running under the board emulator
        host, port = addr.split(":")
        s = socket.socket()
        s.connect(socket.getaddrinfo(host, int(port))[0][-1])
        s.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: one request is one small segment
        s.settimeout(_TIMEOUT_S)
        self._poll = select.poll()
        self._poll.register(s, select.POLLIN)
        self.sock = s
        return s

    def _exact(self, buf, n):
        if n:
            got = self.sock.readinto(buf, n)
            if got != n:
                self._rest(buf, n, got)

    def _rest(self, buf, n, got):
        # Rare: the frame came in two segments (or the hub went away: None on time-out, 0 at EOF).
        mv = memoryview(buf)
        total = 0
        while True:
            if not got:
                self.close()
                raise OSError(_ETIMEDOUT if got is None else _EIO)
            total += got
            if total >= n:
                return
            got = self.sock.readinto(mv[total:], n - total)

    def _frame(self):
        # Read one frame; events go to the ring. Returns the frame kind.
        hdr = self._hdr
        self._exact(hdr, 2)
        if hdr[0] == _EVENT:
            ev = self._ev
            self._exact(ev, 2)
            if self._count >= _RING:
                self.dropped += 1
            else:
                i = 2 * ((self._head + self._count) % _RING)
                self._ring[i] = ev[0]
                self._ring[i + 1] = ev[1]
                self._count += 1
            return _EVENT
        self._exact(self.resp, hdr[1])
        self.rlen = hdr[1]
        return _RESP

    def pin_write(self, pin, level):
        """Queue a pin write stamped with the VM's time; it goes out with the next request.

        Pin writes change nothing the VM could observe until it next asks the hub something, and the
        hub orders them by their time stamps, so a bit-banged clock costs no system call per edge:
        its high phase lasts as long as the program really held it, as on a board.
        """
        struct.pack_into(">BBBBQ", self._out, self._olen, 0x50, 10, pin, level, time.ticks_us())
        self._olen += 12
        if self._olen > _OUT - 12:
            self.flush()
        if self._count and self.irq_on and not self._busy:
            self._dispatch()

    def flush(self):
        """Send queued pin writes now."""
        if self._olen:
            s = self.sock or self._connect()
            n = self._olen
            self._olen = 0
            s.write(self._out, n)

    def send(self, op, n):
        """Send the one-way request whose payload the caller put in req[2:2+n]."""
        self.flush()
        s = self.sock or self._connect()
        req = self.req
        req[0] = op
        req[1] = n
        s.write(req, n + 2)
        if self.irq_on and not self._busy:
            self.service()

    def call(self, op, n):
        """Send req[2:2+n] as request `op`, wait for the answer: data in resp[1:rlen]; OSError on error."""
        self.flush()
        s = self.sock or self._connect()
        req = self.req
        req[0] = op
        req[1] = n
        s.write(req, n + 2)
        while self._frame() != _RESP:
            pass
        status = self.resp[0]
        if self._count and self.irq_on and not self._busy:
            self._dispatch()
        if status:
            raise OSError(status)
        return self.rlen - 1

    def service(self):
        """Take in events waiting on the socket and run pending handlers."""
        self.flush()
        if self._poll is not None:
            for _ in self._poll.ipoll(0):
                self._frame()
                break
        if self._count and self.irq_on and not self._busy:
            self._dispatch()

    def wait(self, ms):
        """Sleep up to ms while running IRQ handlers as their events arrive (lightsleep, idle)."""
        self.flush()
        if self.sock is None:
            time.sleep_ms(ms)
            return
        end = time.ticks_add(time.ticks_ms(), ms)
        while True:
            left = time.ticks_diff(end, time.ticks_ms())
            if left <= 0:
                return
            for _ in self._poll.ipoll(left):
                self._frame()
                break
            if self._count and self.irq_on and not self._busy:
                self._dispatch()

    def _dispatch(self):
        self._busy = True
        try:
            while self._count and self.irq_on:
                i = 2 * self._head
                pin_no = self._ring[i]
                flags = self._ring[i + 1]
                self._head = (self._head + 1) % _RING
                self._count -= 1
                pin = self.handlers.get(pin_no)
                if pin is not None and pin._handler is not None and pin._trigger & flags:
                    pin._flags = flags
                    self._run(pin)
        finally:
            self._busy = False

    def _run(self, pin):
        # A hard IRQ handler must not allocate: lock the heap as the board's hard IRQ context does.
        try:
            if pin._hard:
                micropython.heap_lock()
                try:
                    pin._handler(pin)
                finally:
                    micropython.heap_unlock()
            else:
                pin._handler(pin)
        except Exception as exc:  # noqa: BLE001 - a board prints it and keeps running, so do we
            print("Unhandled exception in IRQ callback handler")
            sys.print_exception(exc)

    async def pump(self):
        """asyncio task: run IRQ handlers as soon as their events arrive."""
        import asyncio
        from asyncio import core

        while True:
            s = self.sock
            if s is None:
                await asyncio.sleep_ms(50)
                continue
            yield core._io_queue.queue_read(s)
            try:
                self.service()
            except OSError:
                await asyncio.sleep_ms(200)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self._poll = None


LINK = Link()
