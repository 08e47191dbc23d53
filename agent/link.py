"""Link: the policy that keeps one MQTT session up (reconnects, backoff, health states).

The protocol lives in agent/mqtt.py; this layer decides when to try again. The board supplies the
network: `board.network_up(timeout_ms)` (True once the network is up) and `board.open_connection(host,
port)`, a coroutine function returning an asyncio (reader, writer) pair; for TLS it is
`board.open_connection(host, port, ssl, server_name)` (a tls.SSLContext built once, agent/startup.py):
TLS streams whose handshake runs in the MQTT client's first reads and writes, a failed one raising
OSError("TLS: ..."). The boards' network_up blocks up to `timeout_ms` while it brings the link up, so
the link passes a short `net_wait_ms` and polls every `net_poll_s`.

Health sees one of these states, so a node can tell its operators *what* is broken:

    NET_DOWN            the board has no network (Wi-Fi/cellular down)
    BROKER_UNREACHABLE  the TCP connection failed or timed out, the broker stopped answering, or TLS
                        failed (its certificate not signed by the node's CA: last_error says "TLS: ...")
    AUTH_REFUSED        CONNACK refused the credentials (return code 4 or 5)
    PROTOCOL_ERROR      CONNACK refused the protocol or client id (1, 2), or a malformed packet
    CONNECTING          an attempt is under way
    CONNECTED           a session is up
    STOPPED             stop() was called

`failures` counts each kind, `last_error` says why the last failure happened (and goes to the console,
for a technician on the serial line); `connects` counts sessions that came up. After a failure the next
attempt waits a random time in [0, min(cap, base * 2**n)) for the n-th failure in a row ("full jitter":
a fleet that lost the broker together does not come back in lockstep), capped at a minute (issue 4); the
doubling starts again only after a session lived `stable_s`, so a broker that accepts and drops at once
is not hammered. One MQTTClient, with its buffers, serves every session.
"""

import asyncio

from agent.errors import AgentError
from agent.mqtt import PROTOCOL, MQTTClient, ticks_diff, ticks_ms

NET_DOWN = "NET_DOWN"
BROKER_UNREACHABLE = "BROKER_UNREACHABLE"
AUTH_REFUSED = "AUTH_REFUSED"
PROTOCOL_ERROR = "PROTOCOL_ERROR"
CONNECTING = "CONNECTING"
CONNECTED = "CONNECTED"
STOPPED = "STOPPED"


class Link:
    """Keeps a session to host:port up. `will`: None, (topic, payload, qos, retain), or a function
    returning one, called at every connect. `on_connect(client)`: coroutine run after each CONNACK
    (birth message, subscriptions). `backoff`: (base, cap) seconds; `random()` in [0, 1) draws the
    jitter (injected by tests). `tls`: () for plain MQTT, or (a tls.SSLContext, the name the broker's
    certificate must carry) for TLS. `client_kw` go to MQTTClient (max_packet, window, retry_s, ...)."""

    def __init__(self, board, host, port, client_id, keepalive=60, user=None, password=None, will=None,
                 clean_session=True, on_connect=None, on_message=None, backoff=(1, 60), random=None,
                 connect_timeout=10, net_poll_s=1, net_wait_ms=100, stable_s=30, tls=(), **client_kw):
        if random is None:
            from random import random  # MicroPython has random.random() on the ports we run on
        self.board = board
        self.host = host
        self.port = port
        self.tls = tls  # open_connection's last arguments
        self.client_id = client_id
        self.keepalive = keepalive
        self.user = user
        self.password = password
        self.will = will
        self.clean_session = clean_session
        self.on_connect = on_connect
        self.connect_timeout = connect_timeout
        self.net_poll_s = net_poll_s
        self.net_wait_ms = net_wait_ms
        self.stable_s = stable_s
        self.backoff = backoff
        self._ceil = backoff[0]  # the current backoff ceiling
        self.random = random
        self.pause_s = 0  # the pause before the current (or next) attempt
        self._c = MQTTClient(on_message=on_message, **client_kw)
        self.client = None  # the MQTTClient while CONNECTED
        self.state = CONNECTING
        self.last_error = None  # "STATE: reason" of the last failure, for health
        self.connects = 0
        self.drops = 0  # sessions that came up and then died
        self.failures = {NET_DOWN: 0, BROKER_UNREACHABLE: 0, AUTH_REFUSED: 0, PROTOCOL_ERROR: 0}
        self._stop = asyncio.Event()

    async def run(self):
        """Keep the session up until stop(); never returns before that."""
        # One function for the whole loop, as each function costs heap on the device.
        self._stop.clear()
        c = self._c
        while not self._stop.is_set():
            if not self.board.network_up(self.net_wait_ms):
                err = "no network"
                kind = NET_DOWN
                self.pause_s = self.net_poll_s
            else:
                self.state = CONNECTING
                try:  # one attempt and, if it connects, the session until it ends
                    r, w = await asyncio.wait_for(self.board.open_connection(self.host, self.port, *self.tls),
                                                  self.connect_timeout)
                    will = self.will() if callable(self.will) else self.will
                    await c.connect(r, w, self.client_id, self.keepalive, self.clean_session, will,
                                    self.user, self.password)
                    self.client = c
                    self.connects += 1
                    self.state = CONNECTED
                    began = ticks_ms()
                    if self.on_connect is not None:
                        await self.on_connect(c)
                    err = await c.wait_dead()
                except asyncio.TimeoutError:  # before OSError, which it is on CPython
                    err = "TCP connect timed out"
                except (AgentError, OSError) as e:  # no session, or on_connect could not finish it
                    err = e
                finally:
                    up = self.client is c
                    self.client = None
                    await c.close(up)  # DISCONNECT only on a session that came up
                if self._stop.is_set():
                    break
                if up:
                    self.drops += 1
                    if ticks_diff(ticks_ms(), began) >= self.stable_s * 1000:
                        self._ceil = self.backoff[0]
                # CONNACK codes (3.2.2.3): 4, 5 bad credentials or not authorized; 1, 2 protocol
                # version or client id rejected; 3 server unavailable. OSError, timeouts: unreachable.
                code = getattr(err, "code", 0)
                kind = (AUTH_REFUSED if code in (4, 5) else PROTOCOL_ERROR if code in (1, 2, PROTOCOL)
                        else BROKER_UNREACHABLE)
                ceil = self._ceil
                self._ceil = min(self.backoff[1], ceil * 2)
                self.pause_s = self.random() * ceil
            if kind != NET_DOWN or self.state != NET_DOWN:  # an outage counts once, however long
                self.failures[kind] += 1
                self.last_error = "%s: %s" % (kind, err)
                print("link:", self.last_error)
            self.state = kind
            try:  # the pause, cut short by stop()
                await asyncio.wait_for(self._stop.wait(), self.pause_s)
            except asyncio.TimeoutError:
                pass
        self.state = STOPPED

    async def stop(self):
        """Close the session (DISCONNECT: no last will) and make run() return."""
        self._stop.set()
        if self.client is not None:
            await self.client.close()
