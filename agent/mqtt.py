"""MQTTClient: one MQTT 3.1.1 session over an asyncio stream pair, for MicroPython and CPython alike.

The client does not open sockets. Its owner (agent/link.py) opens the connection through the board and
hands over (reader, writer); the client owns them from then on and `close()` must always be awaited.
TLS is the owner's choice of stream: on MicroPython

    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca_der)       # verify the broker (CERT_REQUIRED is the default)
    reader, writer = await asyncio.open_connection(host, 8883, ssl=ctx)

(CPython: `ssl.create_default_context(cafile=...)` in the same place) and this module is unchanged.
On MicroPython reader and writer are the same Stream object; only read/readinto/write/drain/
wait_closed are used, and `readinto` when present so received bytes land in the preallocated buffer.

Memory: one receive and one send buffer of `max_packet` bytes, allocated here; a window of `window`
QoS 1 slots that keep references to (topic, payload), so a payload must not be changed until acked.
An incoming PUBLISH larger than the receive buffer is skipped (and acked for QoS 1), counted in
`oversized`; any other oversized packet is a protocol error.

Liveness: a supervisor task sends PINGREQ when nothing was sent or nothing received for 3/4 of the
keepalive, declares the connection dead when nothing arrived for 1.5 keepalives (the server's own rule,
3.1.2.10) and retransmits unacked QoS 1 PUBLISH with DUP (3.3.1.1) every `retry_s`, giving up after
`max_retries`. Every send is bounded by `io_timeout` (the supervisor cancels a stalled drain: a
wait_for per message would allocate ~900 bytes on MicroPython) and every read by the keepalive rule,
so nothing waits forever. Death of any kind sets `error` and wakes `wait_dead()`; nothing is retried
here (that is the link's policy).

Errors are MQTTError with a `code` (agent/mqtt_packet.py): mp.TIMEOUT, mp.LOST, mp.WINDOW_FULL or the
CONNACK refusal; MQTTProtocolError for what the broker got wrong.
"""

import asyncio
import time

from agent import mqtt_packet as mp
from agent.mqtt_packet import LOST, PUBACK, TIMEOUT, MQTTError, MQTTProtocolError

# MicroPython's wrapping millisecond clock; on CPython a monotonic one that does not wrap.
# CPython >= 3.12 also keeps a view of the written buffer until it is sent; we reuse ours at once.
_COPY_ON_WRITE = not hasattr(time, "ticks_ms")
ticks_ms = getattr(time, "ticks_ms", None)
ticks_diff = getattr(time, "ticks_diff", None)
if _COPY_ON_WRITE:
    ticks_diff = int.__sub__

    def ticks_ms():
        return getattr(time, "monotonic_ns")() // 1000000


def _fail(code, why):
    # LOST: the connection is gone; TIMEOUT: the broker did not answer (what was awaited is `why`).
    return MQTTError("%s: %s" % ("connection lost" if code == LOST else "no answer from the broker", why), code)


class MQTTClient:
    """One MQTT connection on (reader, writer). `on_message(topic, payload, retained)` gets memoryviews
    valid only during the call; it may be a coroutine function, awaited before the PUBACK goes out."""

    def __init__(self, reader, writer, max_packet=1024, window=4, retry_s=5.0, max_retries=3,
                 io_timeout=10.0, on_message=None):
        self._r = reader
        self._w = writer
        self._readinto = getattr(reader, "readinto", None)
        self._rx = bytearray(max_packet)
        self._rxv = memoryview(self._rx)
        self._start = 0  # unconsumed bytes are _rx[_start:_end]
        self._end = 0
        self._tx = bytearray(max_packet)
        self._txv = memoryview(self._tx)
        self.on_message = on_message
        self.io_timeout = io_timeout
        self._io_ms = int(io_timeout * 1000)
        self._tx_free = asyncio.Event()
        self._drainer = None  # the task in _drain, watched by the supervisor
        self._drain_at = 0
        self._stalled = None
        self._retry_ms = int(retry_s * 1000)
        self.max_retries = max_retries
        # QoS 1 in-flight window: parallel lists, pid 0 = free slot
        self._pid = [0] * window
        self._topic = [None] * window
        self._payload = [None] * window
        self._retain = [False] * window
        self._sent = [0] * window
        self._tries = [0] * window
        self._last_pid = 0
        self._ack_evt = asyncio.Event()
        self._sub_evt = asyncio.Event()
        self._sub_lock = asyncio.Lock()
        self._sub_pid = 0
        self._sub_result = -1
        self._dead = asyncio.Event()
        self._tasks = []
        self._ka_ms = 0
        self._last_rx = self._last_tx = self._ping_at = ticks_ms()
        self.error = None  # why the connection ended, once it has
        self.session_present = False
        self.sent = self.received = self.retransmits = self.refused = self.oversized = 0
        self.pings = self.stray_acks = 0

    # ---- sending -------------------------------------------------------------------------------

    def _write(self, data):
        # Synchronous: the stream takes (or copies) the bytes now, so _tx is free again on return.
        if self.error is not None:
            raise _fail(LOST, self.error)
        try:
            self._w.write(bytes(data) if _COPY_ON_WRITE else data)
        except OSError as e:
            err = _fail(LOST, e)
            self._die(err)
            raise err
        self._last_tx = ticks_ms()

    async def _drain(self):
        # No wait_for here: on MicroPython it allocates ~900 bytes per call. The supervisor watches
        # _drain_at instead and cancels a drain stalled past io_timeout. One drainer at a time (a
        # MicroPython stream takes one waiting writer); _drainer is the lock, as `async with Lock`
        # would allocate ~600 bytes per message.
        while self._drainer is not None:
            self._tx_free.clear()
            await self._tx_free.wait()
        self._drainer = asyncio.current_task()
        self._drain_at = ticks_ms()
        try:
            await self._w.drain()
        except asyncio.CancelledError:
            if self._stalled is None:
                raise  # our caller's cancel, not ours
            err = self._stalled
        except OSError as e:
            err = _fail(LOST, e)
        else:
            self.sent += 1
            return
        finally:
            self._drainer = None
            self._tx_free.set()
        self._die(err)
        raise err

    async def _send(self, n):
        self._write(self._txv[:n])
        await self._drain()

    def _write_publish(self, topic, payload, qos, retain, dup, pid):
        n = mp.publish_header(self._tx, topic, len(payload), qos, retain, dup, pid)
        end = n + len(payload)
        if end <= len(self._tx):  # one write, one segment
            self._tx[n:end] = payload
            self._write(self._txv[:end])
        else:
            self._write(self._txv[:n])
            self._write(payload)

    # ---- receiving -----------------------------------------------------------------------------

    async def _read_into(self, off, limit):
        # Read at most `limit` bytes into _rx[off:]; return how many (never 0: EOF raises).
        while True:
            if self._readinto is not None:
                n = await self._readinto(self._rxv[off : off + limit])
            else:
                data = await self._r.read(limit)
                n = len(data)
                self._rx[off : off + n] = data
            if n is None:  # MicroPython: woken without data (EAGAIN)
                continue
            if n == 0:
                raise _fail(LOST, "closed by the broker")
            self.received += n
            return n

    def _compact(self):
        # Move unconsumed bytes to the front of _rx; return by how much they moved.
        shift = self._start
        if shift:
            n = self._end - shift
            self._rx[:n] = self._rxv[shift : self._end]
            self._start = 0
            self._end = n
        return shift

    async def _fill(self):
        if self._end == len(self._rx):
            self._compact()
        self._end += await self._read_into(self._end, len(self._rx) - self._end)

    async def _next_packet(self):
        """Wait for a whole packet -> (first byte, body offset, body length); valid until the next call."""
        rx = self._rx
        while True:
            if self._end - self._start >= 2:
                head = mp.decode_varint(rx, self._start + 1, self._end)
                if head is not None:
                    length, body = head
                    first = rx[self._start]
                    mp.check_header(first, length)
                    if body - self._start + length > len(rx):
                        await self._skip(first, body, length)
                        continue
                    if self._end >= body + length:
                        self._start = body + length
                        self._last_rx = ticks_ms()
                        return first, body, length
                    if body + length > len(rx):
                        self._compact()
                        continue
            elif self._start == self._end:
                self._start = self._end = 0
            await self._fill()

    async def _skip(self, first, body, length):
        # An incoming packet larger than _rx: never allocate for it, read it through and drop it.
        self.oversized += 1
        if first & 0xF0 != mp.PUBLISH:
            raise MQTTProtocolError("packet 0x%02x too long (%d bytes)" % (first, length))
        body -= self._compact()
        pid = 0
        if first & 0x06:  # QoS 1: the packet id follows the topic; it must fit to be acked
            while True:
                have = self._end - body
                if have >= 2:
                    need = 4 + ((self._rx[body] << 8) | self._rx[body + 1])
                    if need > length or body + need > len(self._rx):
                        raise MQTTProtocolError("packet 0x%02x too long (%d bytes)" % (first, length))
                    if have >= need:
                        pid = mp.decode_ack(self._rx, body + need - 2)
                        break
                await self._fill()
        left = length - (self._end - body)
        self._start = self._end = 0
        while left:
            left -= await self._read_into(0, min(left, len(self._rx)))
        self._last_rx = ticks_ms()
        if pid:
            await self._send(mp.short_packet(self._tx, PUBACK, pid))

    async def _read_loop(self):
        rx = self._rx
        try:
            while True:
                first, body, length = await self._next_packet()
                kind = first & 0xF0
                if kind == mp.PUBLISH:
                    topic_end, pid, payload = mp.decode_publish(first, rx, body, length)
                    cb = self.on_message
                    if cb is not None:
                        r = cb(self._rxv[body + 2 : topic_end], self._rxv[payload : body + length], bool(first & 1))
                        if r is not None and hasattr(r, "send"):  # a coroutine (CPython), generator (MicroPython)
                            await r
                    if pid:
                        await self._send(mp.short_packet(self._tx, PUBACK, pid))
                elif kind == mp.PUBACK:
                    i = self._slot(mp.decode_ack(rx, body))
                    if i < 0:
                        self.stray_acks += 1  # the ack of a retransmitted duplicate, or the broker's mistake
                        continue
                    self._pid[i] = 0
                    self._topic[i] = self._payload[i] = None
                    self._ack_evt.set()
                elif kind == mp.SUBACK:
                    pid, code = mp.decode_suback(rx, body, length)
                    if pid != self._sub_pid:
                        raise MQTTProtocolError("SUBACK for packet %d, expected %d" % (pid, self._sub_pid))
                    self._sub_result = code
                    self._sub_evt.set()
                elif kind == mp.CONNACK:
                    raise MQTTProtocolError("second CONNACK (3.2.0)")
                # PINGRESP (and an UNSUBACK, never asked for): its arrival (_last_rx) is all that counts
        except (MQTTError, OSError) as e:
            self._die(e)

    # ---- liveness --------------------------------------------------------------------------------

    async def _supervise(self):
        ka = self._ka_ms
        tick = max(20, min(1000, self._retry_ms // 4, (ka // 4) if ka else 1000))
        try:
            while True:
                await asyncio.sleep(tick / 1000)
                now = ticks_ms()
                if ka:
                    quiet = ticks_diff(now, self._last_rx)
                    if quiet > ka * 3 // 2:
                        raise _fail(TIMEOUT, "silent for %d ms" % quiet)
                    ping_due = ticks_diff(now, self._last_tx) >= ka * 3 // 4 or (
                        quiet >= ka * 3 // 4 and ticks_diff(self._ping_at, self._last_rx) < 0)
                    if ping_due:
                        self._ping_at = now
                        self.pings += 1
                        self._write(self._txv[: mp.short_packet(self._tx, mp.PINGREQ)])
                        await self._bounded_drain()
                if self._drainer is not None and ticks_diff(now, self._drain_at) > self._io_ms:
                    self._stalled = _fail(TIMEOUT, "send")
                    self._drainer.cancel()
                    raise self._stalled
                await self._retransmit(now)
        except (MQTTError, OSError) as e:
            self._die(e)

    async def _bounded_drain(self):
        # The supervisor cannot watch itself: its own (rare) sends get a wait_for.
        try:
            await asyncio.wait_for(self._drain(), self.io_timeout)
        except asyncio.TimeoutError:
            raise _fail(TIMEOUT, "send")

    async def _retransmit(self, now):
        for i in range(len(self._pid)):
            pid = self._pid[i]
            if pid and ticks_diff(now, self._sent[i]) >= self._retry_ms:
                if self._tries[i] >= self.max_retries:
                    raise _fail(TIMEOUT, "PUBACK %d" % pid)
                self._tries[i] += 1
                self._sent[i] = now
                self.retransmits += 1
                self._write_publish(self._topic[i], self._payload[i], 1, self._retain[i], True, pid)
                await self._bounded_drain()

    def _die(self, err):
        if self.error is not None:
            return
        self.error = err
        me = asyncio.current_task()
        for t in self._tasks:
            if t is not me:
                t.cancel()
        self._ack_evt.set()
        self._sub_evt.set()
        self._dead.set()

    # ---- public API ------------------------------------------------------------------------------

    async def connect(self, client_id, keepalive=60, clean_session=True, will=None, user=None,
                      password=None, timeout=10.0):
        """Send CONNECT and wait for CONNACK; start the reader and supervisor. Return session_present.

        `will` is None or (topic, payload, qos, retain). Raises MQTTError (code: the CONNACK refusal,
        TIMEOUT or LOST) or MQTTProtocolError; close() the client afterwards in every case.
        """
        await self._send(mp.connect(self._tx, client_id, keepalive, clean_session, will, user, password))
        try:
            first, body, _ = await asyncio.wait_for(self._next_packet(), timeout)
        except asyncio.TimeoutError:
            raise _fail(TIMEOUT, "CONNACK")
        if first != mp.CONNACK:  # 3.2.0: the first packet from the server is CONNACK
            raise MQTTProtocolError("expected CONNACK, got 0x%02x" % first)
        self.session_present, code = mp.decode_connack(self._rx, body)
        if code:
            raise MQTTError("connection refused: " + mp.CONNACK_REASONS[code], code)
        self._ka_ms = keepalive * 1000
        self._last_rx = self._last_tx = self._ping_at = ticks_ms()
        self._tasks = [asyncio.create_task(self._read_loop()), asyncio.create_task(self._supervise())]
        return self.session_present

    async def wait_dead(self):
        """Wait until the connection is dead or closed; return the error that ended it."""
        await self._dead.wait()
        return self.error

    def window_free(self):
        """Number of free QoS 1 in-flight slots."""
        return self._pid.count(0)

    def _slot(self, pid):
        for i in range(len(self._pid)):
            if self._pid[i] == pid:
                return i
        return -1

    def _new_pid(self):
        pid = self._last_pid
        while True:  # 2.3.1: a new id, not one still in flight; the window is smaller than 65535
            pid = pid % 0xFFFF + 1
            if self._slot(pid) < 0:
                self._last_pid = pid
                return pid

    async def publish(self, topic, payload, qos=0, retain=False):
        """Send a PUBLISH. QoS 0: return 0 once written. QoS 1: take an in-flight slot and return the
        packet id at once (see wait_ack); MQTTError with code WINDOW_FULL (counted in `refused`) when
        none is free."""
        if qos == 0:
            self._write_publish(topic, payload, 0, retain, False, 0)
            await self._drain()
            return 0
        i = self._slot(0)
        if i < 0:
            self.refused += 1
            raise MQTTError("%d QoS 1 messages in flight" % len(self._pid), mp.WINDOW_FULL)
        pid = self._new_pid()
        self._write_publish(topic, payload, qos, retain, False, pid)  # raises before the slot is taken
        self._pid[i] = pid
        self._topic[i] = topic
        self._payload[i] = payload
        self._retain[i] = retain
        self._sent[i] = ticks_ms()
        self._tries[i] = 0
        await self._drain()
        return pid

    async def wait_ack(self, pid, timeout=None):
        """Wait for the PUBACK of `pid`: True once acked, False if the connection died or `timeout`
        (seconds) ran out. Without a timeout it still ends: the supervisor gives up on a message after
        max_retries retransmissions and kills the connection."""
        start = ticks_ms()
        while self._slot(pid) >= 0:
            if self.error is not None:
                return False
            self._ack_evt.clear()
            if timeout is None:
                await self._ack_evt.wait()  # no wait_for: it allocates (see _drain)
                continue
            left = int(timeout * 1000) - ticks_diff(ticks_ms(), start)
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._ack_evt.wait(), left / 1000)
            except asyncio.TimeoutError:
                return False
        return True

    async def subscribe(self, topic_filter, qos=0, timeout=None):
        """SUBSCRIBE to one filter and wait for SUBACK; return the granted QoS (MQTTError if refused)."""
        async with self._sub_lock:
            self._sub_pid = pid = self._new_pid()
            self._sub_result = -1
            self._sub_evt.clear()
            await self._send(mp.subscribe(self._tx, pid, topic_filter, qos))
            try:
                await asyncio.wait_for(self._sub_evt.wait(), timeout or self.io_timeout)
            except asyncio.TimeoutError:
                raise _fail(TIMEOUT, "SUBACK %d" % pid)
            if self.error is not None:
                raise _fail(LOST, self.error)
            code = self._sub_result
        if code == mp.SUBACK_FAILURE:
            raise MQTTError("subscription to %r refused" % (topic_filter,))
        return code

    async def close(self, disconnect=True):
        """End the session (with DISCONNECT if `disconnect` and alive, so the will is not published)
        and close the streams. Safe to call more than once."""
        if disconnect and self.error is None:
            try:
                await self._send(mp.short_packet(self._tx, mp.DISCONNECT))
            except MQTTError:
                pass  # the connection is going away anyway
        self._die(_fail(LOST, "closed by the client"))
        try:
            self._w.close()
            await asyncio.wait_for(self._w.wait_closed(), self.io_timeout)
        except (OSError, asyncio.TimeoutError):
            pass  # nothing more can be done with a broken socket
