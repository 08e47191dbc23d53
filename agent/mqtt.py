"""MQTTClient: MQTT 3.1.1 over an asyncio stream pair, QoS 0 and 1, for MicroPython and CPython alike.

Section numbers are MQTT 3.1.1 (OASIS standard, 2014). One client serves every session of a node: it is
built once, with its buffers, and `connect(reader, writer, ...)` starts each session on streams its owner
(agent/link.py) opened through the board; `close()` ends it and must always be awaited. TLS is the
owner's choice of stream: on MicroPython

    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED            # verify the broker
    ctx.load_verify_locations(ca_der)              # DER, positional: this mbedtls build parses no PEM
    reader, writer = await asyncio.open_connection(host, 8883, ssl=ctx)

(agent/startup.py builds it from the identity; the boards wrap the stream, board.open_connection).

Of the streams only readinto/write/drain/close/wait_closed are used, as MicroPython's asyncio Stream
has them (one object for both directions); CPython's StreamReader/StreamWriter pair needs a thin
adapter (the unit tests have one).

Memory: one receive and one send buffer of `max_packet` bytes, allocated once, and `window` QoS 1
slots that keep references to (topic, payload): a payload must not change until acked. Packets are
encoded into the send buffer and read into the receive buffer (`readinto` on MicroPython), so a message
allocates next to nothing. An incoming PUBLISH larger than the receive buffer is read through and
dropped (acked for QoS 1), counted in `oversized`; any other packet that large is a protocol error. The
code of CONNECT and SUBSCRIBE, sent once a session, is loaded per call (agent/mqtt_session.py).

Liveness: a supervisor task sends PINGREQ when nothing went out, or nothing came in, for 3/4 of the
keepalive, declares the session dead when nothing arrived for 1.5 keepalives (the server's own rule,
3.1.2.10) and retransmits an unacked QoS 1 PUBLISH with DUP (3.3.1.1) every `retry_s`, giving up after
`max_retries`. It also ends a send stalled longer than `io_timeout` (a wait_for per message would
allocate ~900 bytes on MicroPython); every read is bounded by the keepalive rule, so nothing waits
forever. Death of any kind sets `error` and wakes every waiter; nothing is retried here (that is the
link's policy).

Errors: AgentError with a `code`: a CONNACK refusal (3.2.2.3: 1 protocol version, 2 client id, 3
server unavailable, 4 bad user name or password, 5 not authorized), TIMEOUT, LOST, WINDOW_FULL,
PROTOCOL (the broker broke the protocol; the session is closed, 4.8) or 0 (a bad argument from our
own caller). Messages are few and short: each distinct one costs heap on the device.
"""

import asyncio

from agent import transient
from agent.errors import AgentError

try:
    from time import ticks_diff, ticks_ms

    from micropython import const
except ImportError:  # CPython, for the unit tests: a clock that does not wrap, every const an int
    from time import monotonic_ns  # type: ignore[attr-defined]

    const = int
    ticks_diff = int.__sub__
    ticks_ms = lambda: monotonic_ns() // 1000000  # noqa: E731

# Error codes after the CONNACK refusals (3.2.2.3).
TIMEOUT = const(6)  # the broker did not answer in time
LOST = const(7)  # the session is closed or dead; nothing more goes out on it
WINDOW_FULL = const(8)  # every QoS 1 slot is taken: wait for an ack and publish again
PROTOCOL = const(9)  # the broker sent what MQTT 3.1.1 does not allow
# Remaining length of each packet type the server may send but PUBLISH (2.2, 3.x.1), indexed by the
# type; 0xFF: a type the server never sends to a QoS 0/1 client.
_SIZES = b"\xff\xff\x02\xff\x02\xff\xff\xff\xff\x03\xff\x02\xff\x00\xff\xff"
# SUBSCRIBE's id; PUBLISH takes 1..0xFFFE, so they never collide (2.3.1). agent/mqtt_session.py has a copy.
_SUB_PID = const(0xFFFF)
_SESSION = "agent.mqtt_session"  # CONNECT and SUBSCRIBE, loaded per call (agent/transient.py)


def _error(message, code=0):
    # The client's errors are AgentError with a `code` (module docstring): a class of its own would
    # cost ~300 bytes of heap more.
    e = AgentError(message)
    e.code = code  # type: ignore[attr-defined]
    return e


def _topic_name(topic):
    # Topic names go out as UTF-8 (1.5.3), never empty (4.7.3), without wildcards (4.7.1) or U+0000.
    t = topic.encode() if isinstance(topic, str) else topic
    for c in t or b"#":
        if c in b"#+\x00":
            raise _error("bad arg %r" % (topic,))
    return t


class MQTTClient:
    """MQTT sessions, one at a time. `on_message(topic, payload, retained)` gets memoryviews valid only
    during the call; it may be a coroutine function, awaited before the PUBACK goes out."""

    # Set by each connect (agent/mqtt_session.py); declared only (no value, no heap) for the type check.
    _ka: int  # the keepalive, in ms
    _tasks: list  # the reader and the supervisor

    def __init__(self, max_packet=1100, window=4, retry_s=5, max_retries=3, io_timeout=10,
                 on_message=None, max_header=320):
        # Receive: a whole command (payload up to 1024 B, SPEC.md "Limits", plus topic and header).
        # Send: only headers, topics and CONNECT's strings go through _tx (a payload is written as it
        # is), so it needs room for the longest CONNECT: client id, will, user and password.
        self._rx = bytearray(max_packet)
        self._rv = memoryview(self._rx)
        self._tx = bytearray(min(max_packet, max_header))
        self._tv = memoryview(self._tx)
        self.on_message = on_message
        self._io = int(io_timeout * 1000)
        self._retry = int(retry_s * 1000)
        self.max_retries = max_retries
        # The QoS 1 window, as parallel lists: packet id (0: a free slot), topic, payload, the PUBLISH's
        # first byte plus 256 per retransmission, when it was last sent.
        self._pid = [0] * window
        self._top = [None] * window
        self._pay = [None] * window
        self._first = [0] * window
        self._asked = ticks_ms()  # when we last asked for an answer: CONNECT, SUBSCRIBE or PINGREQ
        self._sent = [self._asked] * window
        self._last = 0  # the last packet id given out
        self._ev = asyncio.Event()  # set on every change of state; each waiter checks its own condition
        self._n = 0  # sessions started: a waiter from an earlier one must not take this one's state
        self._drainer = None  # the task sending now (one at a time), watched by the supervisor
        # The awaited CONNACK or SUBACK: -2 waiting for CONNACK, -1 for SUBACK, then its return code.
        self._ack = 0
        self.error = _error("closed", LOST)  # why the session ended, once it has
        self.pings = self.retransmits = self.refused = self.oversized = 0

    # ---- sending --------------------------------------------------------------------------------

    async def _send(self, first, args=(), raw=b"", timeout=None):
        # One packet: fixed header (2.2), then each of `args` (an int as a u16, 1.5.2; str or bytes as
        # a length-prefixed string, 1.5.3), then `raw` as it is (a payload or SUBSCRIBE's QoS).
        # `timeout` (s): a wait_for on the drain, for the supervisor, which cannot watch itself.
        while self._drainer is not None:  # a MicroPython stream drops what is written while it drains
            self._ev.clear()
            await self._ev.wait()
        if self.error is not None:
            raise _error("lost: %s" % (self.error,), LOST)
        tx = self._tx
        i = 5  # the body goes after room for the largest fixed header, which goes in once it is known
        for f in args:
            s = None
            if not isinstance(f, int):
                s = f.encode() if isinstance(f, str) else f
                f = len(s)
            if not 0 <= f <= 0xFFFF or i + 2 + (0 if s is None else f) > len(tx):
                raise _error("bad arg %r" % (f,))  # a u16 out of range, or too long for _tx
            tx[i] = f >> 8
            tx[i + 1] = f & 0xFF
            i += 2
            if s is not None:
                tx[i : i + f] = s
                i += f
        n = i - 5 + len(raw)  # remaining length (2.2.3), 7 bits a byte
        start = 3 - (n > 127) - (n > 16383) - (n > 2097151)
        tx[start] = first
        j = start + 1
        while True:
            tx[j] = n & 0x7F | (0x80 if n > 127 else 0)
            n >>= 7
            if not n:
                break
            j += 1
        if len(raw) <= len(tx) - i:  # one write, one segment
            tx[i : i + len(raw)] = raw
            i += len(raw)
            raw = b""
        self._drainer = asyncio.current_task()
        self._at = ticks_ms()
        w = self._w
        try:
            for v in (self._tv[start:i], raw):
                if v:  # the stream takes or copies it now: _tx is reused at once
                    w.write(v)
            if timeout:
                await asyncio.wait_for(w.drain(), timeout)
            else:
                await w.drain()
            return
        except asyncio.CancelledError:
            if self.error is None:
                raise  # our caller's cancel, not the supervisor's
            e = self.error
        except (OSError, asyncio.TimeoutError) as x:
            e = x
        finally:
            self._drainer = None
            self._ev.set()
        self._die(e)
        raise _error("lost: %s" % (e,), LOST)

    # ---- receiving ------------------------------------------------------------------------------

    async def _read(self, end):
        # Exactly `end` bytes (at most the buffer) into _rx[:end].
        i = 0
        while i < end:
            k = await self._r.readinto(self._rv[i:end])
            if k == 0:
                raise _error("EOF", LOST)  # the broker closed the connection
            i += k or 0  # None: woken without data (MicroPython, EAGAIN)

    async def _reader(self):
        # Read packets and act on them until the session ends. Nothing from the wire is trusted.
        rx = self._rx
        size = len(rx)
        try:
            while True:
                await self._read(1)
                first = rx[0]
                kind = first >> 4
                qos = first >> 1 & 3
                n = shift = 0
                while True:  # remaining length (2.2.3)
                    await self._read(1)
                    n |= (rx[0] & 0x7F) << shift
                    if rx[0] < 0x80:
                        break
                    shift += 7
                    if shift > 21:
                        raise _error("bad 0x%02x" % first, PROTOCOL)
                if kind == 3:  # PUBLISH: not QoS 3 (3.3.1.2), no DUP at QoS 0 (3.3.1.1), room for topic, id
                    bad = qos == 3 or not qos and first & 8 or n < (4 if qos else 2)
                else:  # the others: fixed flags and length
                    bad = first & 0x0F or n != _SIZES[kind]
                if bad or (kind == 2) != (self._ack == -2):  # CONNACK first, and only then (3.2.0)
                    raise _error("bad 0x%02x" % first, PROTOCOL)
                await self._read(min(n, size))
                pid = rx[0] << 8 | rx[1]  # an ack's packet id (2.3.1)
                if kind == 3:  # PUBLISH (3.3): topic rx[2:end], packet id if QoS 1, payload rx[start:n]
                    end = 2 + (rx[0] << 8 | rx[1])
                    start = end + (2 if qos else 0)
                    pid = rx[end] << 8 | rx[end + 1] if qos and start <= size else 0
                    if end == 2 or start > min(n, size) or qos and not pid:  # 4.7.3, 2.3.1
                        raise _error("bad 0x%02x" % first, PROTOCOL)
                    if n > size:  # larger than the buffer: read through it, never allocate for it
                        self.oversized += 1
                        n -= size
                        while n:
                            await self._read(min(n, size))
                            n -= min(n, size)
                    else:
                        for i in range(2, end):
                            if rx[i] in b"#+\x00":  # 3.3.2.1, 1.5.3
                                raise _error("bad 0x%02x" % first, PROTOCOL)
                        cb = self.on_message
                        if cb is not None:
                            r = cb(self._rv[2:end], self._rv[start:n], bool(first & 1))
                            if hasattr(r, "send"):  # a coroutine (CPython), a generator (MicroPython)
                                await r
                    if pid:
                        await self._send(0x40, (pid,))  # PUBACK (3.4)
                elif kind == 2:  # CONNACK: reserved flags (3.2.2.1), codes (3.2.2.3), session (3.2.2.2)
                    if rx[0] & 0xFE or rx[1] > 5 or rx[0] and rx[1]:
                        raise _error("bad 0x%02x" % first, PROTOCOL)
                    self.session_present = rx[0] == 1
                    self._ack = rx[1]
                elif kind != 13 and not pid:
                    raise _error("bad 0x%02x" % first, PROTOCOL)
                elif kind == 4 and pid in self._pid:  # PUBACK (else a duplicate's ack: ignored)
                    i = self._pid.index(pid)
                    self._pid[i] = 0
                    self._top[i] = self._pay[i] = None
                elif kind == 9:  # SUBACK (3.9.3)
                    if pid != _SUB_PID or self._ack != -1 or rx[2] not in (0, 1, 2, 0x80):
                        raise _error("bad 0x%02x" % first, PROTOCOL)
                    self._ack = rx[2]
                # PINGRESP (and UNSUBACK, never asked for): its arrival (_heard) is all that counts
                self._heard = ticks_ms()
                self._ev.set()
        except (AgentError, OSError) as e:
            self._die(e)

    # ---- liveness -------------------------------------------------------------------------------

    async def _supervise(self):
        ka = self._ka
        tick = max(20, min(1000, self._retry // 4, ka // 4 if ka else 1000)) / 1000
        try:
            while True:
                await asyncio.sleep(tick)
                now = ticks_ms()
                quiet = ticks_diff(now, self._heard)
                if ka and quiet > ka * 3 // 2:
                    raise _error("silent", TIMEOUT)
                if self._ack < 0 and ticks_diff(now, self._asked) > self._io:
                    raise _error("no ACK", TIMEOUT)  # no CONNACK or SUBACK
                if self._drainer is not None:  # somebody is sending: no send of ours now
                    if ticks_diff(now, self._at) > self._io:
                        raise _error("no drain", TIMEOUT)
                    continue
                if ka and (ticks_diff(now, self._at) >= ka * 3 // 4
                           or quiet >= ka * 3 // 4 and ticks_diff(self._asked, self._heard) < 0):
                    self._asked = now
                    self.pings += 1
                    await self._send(0xC0, (), b"", self._io / 1000)  # PINGREQ (3.12)
                for i in range(len(self._pid)):
                    pid = self._pid[i]
                    if pid and self._drainer is None and ticks_diff(now, self._sent[i]) >= self._retry:
                        f = self._first[i]
                        if f >> 8 >= self.max_retries:
                            raise _error("no PUBACK", TIMEOUT)
                        self._first[i] = f + 256
                        self._sent[i] = now
                        self.retransmits += 1
                        await self._send(f & 0xFF | 8, (self._top[i], pid), self._pay[i], self._io / 1000)
        except (AgentError, OSError) as e:
            self._die(e)

    def _die(self, e):
        if self.error is not None:
            return
        self.error = e
        me = asyncio.current_task()
        for t in self._tasks + [self._drainer]:
            if t is not None and t is not me:
                t.cancel()
        self._ev.set()

    # ---- public API -----------------------------------------------------------------------------

    async def connect(self, reader, writer, client_id, keepalive=60, clean_session=True, will=None,
                      user=None, password=None):
        """Start a session on (reader, writer): CONNECT, wait for CONNACK (io_timeout at most). Return
        session_present. `will` is None or (topic, payload, qos, retain). Raises AgentError (code: the
        CONNACK refusal, TIMEOUT, LOST, PROTOCOL, or 0 for a bad argument) or OSError; close() the
        client afterwards in every case, before connecting again."""
        self._r = reader
        self._w = writer  # first: close() closes it whatever happens below, a failed load included
        # agent/mqtt_session.py is loaded for the call; the coroutine keeps its code until it finishes.
        return await transient.run(_SESSION, "connect", self, client_id, keepalive, clean_session, will, user,
                                   password)

    async def wait_dead(self):
        """Wait until the session is dead or closed; return the error that ended it."""
        while self.error is None:
            self._ev.clear()
            await self._ev.wait()
        return self.error

    async def publish(self, topic, payload, qos=0, retain=False):
        """Send a PUBLISH (3.3). QoS 0: return 0 once written. QoS 1: take a slot of the window and
        return the packet id at once (see wait_ack); AgentError WINDOW_FULL (counted in `refused`) when
        none is free."""
        t = _topic_name(topic)
        first = 0x31 if retain else 0x30
        if qos == 0:
            await self._send(first, (t,), payload)
            return 0
        if qos != 1:
            raise _error("bad arg %r" % (qos,))
        if 0 not in self._pid:
            self.refused += 1
            raise _error("no slot", WINDOW_FULL)
        pid = self._last
        while True:  # a new id, not one still in flight (2.3.1); the window is far smaller than 65534
            pid = pid % 0xFFFE + 1
            if pid not in self._pid:
                break
        self._last = pid
        i = self._pid.index(0)
        self._pid[i] = pid  # before the send: the PUBACK may come while it drains
        self._top[i] = t
        self._pay[i] = payload
        self._first[i] = first | 2
        self._sent[i] = ticks_ms()
        try:
            await self._send(first | 2, (t, pid), payload)
        except AgentError:
            if self.error is None:  # our caller's mistake: nothing went out
                self._pid[i] = 0
            raise
        return pid

    async def wait_ack(self, pid):
        """Wait for the PUBACK of `pid`: True once acked, False if the session ended. It always ends:
        the supervisor gives up on a message after max_retries retransmissions, or on a CONNACK or
        SUBACK after io_timeout, and ends the session. `pid` 0 (QoS 0) returns True at once, or when
        a SUBACK the client waits for is in (connect and subscribe wait for theirs this way)."""
        n = self._n  # a session started meanwhile has its own window
        while self._n == n:
            if (pid not in self._pid) if pid else self._ack >= 0:
                return True
            if self.error is not None:
                break
            self._ev.clear()
            await self._ev.wait()  # no wait_for: it allocates; the supervisor bounds every wait
        return False

    async def subscribe(self, topic_filter, qos=0):
        """SUBSCRIBE to one filter (3.8) and wait for SUBACK; return the granted QoS. AgentError if
        refused (code 0) or LOST. One at a time."""
        return await transient.run(_SESSION, "subscribe", self, topic_filter, qos)

    async def close(self, disconnect=True):
        """End the session (with DISCONNECT if `disconnect` and alive, so the will is not published)
        and close the streams. Safe to call more than once."""
        if disconnect and self.error is None:
            try:
                await self._send(0xE0)  # DISCONNECT (3.14)
            except AgentError:
                pass  # the session is going away anyway
        self._die(_error("closed", LOST))
        w = getattr(self, "_w", None)  # None before the first connect
        if w is not None:
            try:
                w.close()
                await w.wait_closed()  # MicroPython's closes the socket at once; twice does no harm
            except OSError:
                pass  # nothing more can be done with a broken socket
