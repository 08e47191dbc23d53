"""Link: the policy that keeps one MQTT session up (reconnects, backoff, health states).

The protocol lives in agent/mqtt.py; this layer decides when to try again. The board supplies the
network: `board.network_up(timeout_ms)` (True once the network is up; a plain bool attribute also does)
and `board.open_connection(host, port)`, a coroutine function returning an asyncio (reader, writer)
pair, plain or TLS-wrapped (see agent/mqtt.py). The boards' network_up blocks up to `timeout_ms` while
it brings the link up, so the link passes a short `net_wait_ms` and polls every `net_poll_s`.

Health sees one of these states, so a node can tell its operators *what* is broken:

    NET_DOWN            the board has no network (Wi-Fi/cellular down)
    BROKER_UNREACHABLE  the TCP connection failed or timed out, or the broker stopped answering
    AUTH_REFUSED        CONNACK refused the credentials (return code 4 or 5)
    PROTOCOL_ERROR      CONNACK refused the protocol or client id (1, 2), or a malformed packet
    CONNECTING          an attempt is under way
    CONNECTED           a session is up
    STOPPED             stop() was called

`failures` counts each kind; `connects` counts sessions that came up. After a failure the next attempt
waits a Backoff delay (full jitter, capped at a minute); the backoff starts again only after a session
lived `stable_s`, so a broker that accepts and drops at once is not hammered.
"""

import asyncio

from agent.backoff import Backoff
from agent.mqtt import MQTTClient, ticks_diff, ticks_ms
from agent.mqtt_packet import TIMEOUT, MQTTError, MQTTProtocolError

NET_DOWN = "NET_DOWN"
BROKER_UNREACHABLE = "BROKER_UNREACHABLE"
AUTH_REFUSED = "AUTH_REFUSED"
PROTOCOL_ERROR = "PROTOCOL_ERROR"
CONNECTING = "CONNECTING"
CONNECTED = "CONNECTED"
STOPPED = "STOPPED"


def failure_kind(err):
    """Map an error from opening or running a session to its health state."""
    # CONNACK codes (3.2.2.3): 4, 5 bad credentials or not authorized; 1, 2 protocol version or client
    # id rejected; 3 server unavailable. Anything else (OSError, timeouts, lost connections): unreachable.
    code = getattr(err, "code", 0)
    if code == 4 or code == 5:
        return AUTH_REFUSED
    if code == 1 or code == 2 or isinstance(err, MQTTProtocolError):
        return PROTOCOL_ERROR
    return BROKER_UNREACHABLE


class Link:
    """Keeps a session to host:port up. `will`: None, (topic, payload, qos, retain), or a function
    returning one, called at every connect. `on_connect(client)`: coroutine run after each CONNACK
    (birth message, subscriptions). `client_kw` go to MQTTClient (max_packet, window, retry_s, ...)."""

    def __init__(self, board, host, port, client_id, keepalive=60, user=None, password=None, will=None,
                 clean_session=True, on_connect=None, on_message=None, backoff=None, connect_timeout=10.0,
                 net_poll_s=1.0, net_wait_ms=100, stable_s=30.0, **client_kw):
        self.board = board
        self.host = host
        self.port = port
        self.client_id = client_id
        self.keepalive = keepalive
        self.user = user
        self.password = password
        self.will = will
        self.clean_session = clean_session
        self.on_connect = on_connect
        self.on_message = on_message
        self.backoff = backoff if backoff is not None else Backoff()
        self.connect_timeout = connect_timeout
        self.net_poll_s = net_poll_s
        self.net_wait_ms = net_wait_ms
        self.stable_s = stable_s
        self.client_kw = client_kw
        self.client = None  # the MQTTClient while CONNECTED
        self.state = CONNECTING
        self.last_error = None  # "STATE: reason" of the last failure, for health
        self.connects = 0
        self.drops = 0  # sessions that came up and then died
        self.failures = {NET_DOWN: 0, BROKER_UNREACHABLE: 0, AUTH_REFUSED: 0, PROTOCOL_ERROR: 0}
        self._stop = asyncio.Event()

    def _set(self, state, err=None):
        self.state = state
        if err is not None:
            self.failures[state] += 1
            self.last_error = "%s: %s" % (state, err)

    def _network_up(self):
        up = self.board.network_up
        return up(self.net_wait_ms) if callable(up) else up

    async def _pause(self, seconds):
        # Sleep, but wake at once when stop() is called.
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _open(self):
        # TCP (and TLS) connect, then CONNECT/CONNACK; return a connected client or raise.
        try:
            reader, writer = await asyncio.wait_for(
                self.board.open_connection(self.host, self.port), self.connect_timeout)
        except asyncio.TimeoutError:
            raise MQTTError("TCP connect to %s:%d timed out" % (self.host, self.port), TIMEOUT)
        client = MQTTClient(reader, writer, on_message=self.on_message, **self.client_kw)
        will = self.will() if callable(self.will) else self.will
        try:
            await client.connect(self.client_id, self.keepalive, self.clean_session, will, self.user,
                                 self.password, self.connect_timeout)
        except BaseException:
            await client.close(disconnect=False)
            raise
        return client

    async def _session(self):
        # One connection from attempt to end; return the error that ended it (None: stopped).
        self._set(CONNECTING)
        try:
            client = await self._open()
        except (MQTTError, OSError) as e:
            return e
        self.client = client
        self.connects += 1
        self._set(CONNECTED)
        began = ticks_ms()
        try:
            if self.on_connect is not None:
                await self.on_connect(client)
            err = await client.wait_dead()
        except MQTTError as e:  # on_connect could not finish: this session is no good
            err = e
        finally:
            self.client = None
            await client.close()
        if ticks_diff(ticks_ms(), began) >= self.stable_s * 1000:
            self.backoff.reset()
        if self._stop.is_set():
            return None
        self.drops += 1
        return err

    async def run(self):
        """Keep the session up until stop(); never returns before that."""
        self._stop.clear()
        while not self._stop.is_set():
            if not self._network_up():
                if self.state != NET_DOWN:
                    self._set(NET_DOWN, "network down")
                await self._pause(self.net_poll_s)
                continue
            err = await self._session()
            if self._stop.is_set():
                break
            if err is not None:
                self._set(failure_kind(err), err)
            await self._pause(self.backoff.next())
        self._set(STOPPED)

    async def stop(self):
        """Close the session (DISCONNECT: no last will) and make run() return."""
        self._stop.set()
        client = self.client
        if client is not None:
            await client.close()
