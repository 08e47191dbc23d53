# `network` for the board emulator (MicroPython code): the ESP32 port's WLAN interface, backed by the
# emulator's link model, plus the gateway connection the emulator's Board uses for its sockets.
#
# The board's sockets go through a per-board gateway in the emulator host (BOARDEMU_NET): connect to
# it, send "HOST PORT\n", get "OK\n" (then the bytes are relayed) or "ERR reason\n". With the link
# cut (`boardemu net down`) the gateway never answers, so a connect times out as over a lost
# cellular link, and connections made before the cut go silent.

import os
import socket

from _emulink import LINK
from micropython import const

STA_IF = const(0)
AP_IF = const(1)
STAT_IDLE = const(1000)
STAT_CONNECTING = const(1001)
STAT_GOT_IP = const(1010)
STAT_NO_AP_FOUND = const(201)
_ETIMEDOUT = const(110)
_ECONNREFUSED = const(111)


def link_state():
    """(up, rssi_dbm) of the board's link, from the emulator."""
    LINK.call(0x6E, 0)  # n
    rssi = LINK.resp[2]
    return bool(LINK.resp[1]), rssi - 256 if rssi > 127 else rssi


class WLAN:
    def __init__(self, interface_id=STA_IF):
        self._if = interface_id
        self._active = False
        self._ssid = None

    def active(self, is_active=None):
        if is_active is None:
            return self._active
        self._active = bool(is_active)

    def connect(self, ssid=None, key=None, *, bssid=None):
        if not self._active:
            raise OSError("Wifi Not Started")
        self._ssid = ssid

    def disconnect(self):
        self._ssid = None

    def isconnected(self):
        return self._active and self._ssid is not None and link_state()[0]

    def status(self, param=None):
        if param == "rssi":
            return link_state()[1]
        if param is not None:
            raise ValueError("unknown status param")
        if not self._active or self._ssid is None:
            return STAT_IDLE
        return STAT_GOT_IP if link_state()[0] else STAT_NO_AP_FOUND

    def ifconfig(self, config=None):
        return ("10.42.0.2", "255.255.255.0", "10.42.0.1", "10.42.0.1")

    def config(self, *args, **kw):
        if args and args[0] == "mac":
            import machine

            return machine.unique_id()
        if args and args[0] == "ssid":
            return self._ssid
        return None


def _gateway():
    addr = os.getenv("BOARDEMU_NET")
    if not addr:
        raise OSError(_ECONNREFUSED)
    host, port = addr.split(":")
    return socket.getaddrinfo(host, int(port))[0][-1]


def _answer(line):
    if line == b"OK\n":
        return
    raise OSError(_ECONNREFUSED if line.startswith(b"ERR") else _ETIMEDOUT)


def connect(host, port, timeout_ms=10000):
    """A blocking socket to host:port through the board's link (OSError 110 when the link is down)."""
    s = socket.socket()
    try:
        s.settimeout(timeout_ms / 1000)
        s.connect(_gateway())
        s.write(b"%s %d\n" % (host, port))
        _answer(s.readline() or b"")
        s.settimeout(None)
    except OSError:
        s.close()
        raise
    return s


async def open_connection(host, port, timeout_ms=10000, ssl=None, server_hostname=None):
    """asyncio (reader, writer) to host:port through the board's link; OSError 110 on time-out.

    With `ssl` (a tls.SSLContext) the streams are TLS over the relayed bytes, as asyncio's
    open_connection(host, port, ssl, server_hostname) makes them on a board: the handshake runs on the
    first reads and writes, and fails with OSError("TLS: ...") (see tls_streams).
    """
    import asyncio

    reader, writer = await asyncio.open_connection(*_gateway_hostport())
    try:
        writer.write(b"%s %d\n" % (host, port))
        await writer.drain()
        try:
            line = await asyncio.wait_for_ms(reader.readline(), timeout_ms)
        except asyncio.TimeoutError:
            raise OSError(_ETIMEDOUT)
        _answer(line)
        if ssl is not None:
            return tls_streams(reader.s, ssl, server_hostname or host)
    except BaseException:
        reader.s.close()  # a MicroPython Stream's close() does nothing: the socket must be closed
        raise
    return reader, writer


_TlsStream = []  # the class of tls_streams, made at the first TLS connection (it needs asyncio)


def tls_streams(sock, ctx, server_hostname):
    """(reader, writer) of TLS with `ctx` over the connected non-blocking socket `sock`.

    MicroPython's TLS socket does its handshake inside the first reads and writes and raises ValueError
    when the peer's certificate fails the check, from whichever read or write ran it; the agent's MQTT
    client expects OSError of a broken stream. Such a socket also lets go of the one it wraps without
    closing it, so wait_closed() closes that too.
    """
    if not _TlsStream:
        from asyncio.stream import Stream

        class TlsStream(Stream):
            def __init__(self, s, raw):
                Stream.__init__(self, s)
                self.raw = raw

            async def readinto(self, buf):
                try:
                    return await Stream.readinto(self, buf)
                except ValueError as e:
                    raise _tls_error(e)

            def write(self, buf):
                try:
                    Stream.write(self, buf)
                except ValueError as e:
                    raise _tls_error(e)

            async def drain(self):
                try:
                    await Stream.drain(self)
                except ValueError as e:
                    raise _tls_error(e)

            async def wait_closed(self):
                # Let go of the sockets too: the MQTT client keeps its last streams until it connects
                # again, and a TLS socket is about 2.7 KB of heap that a node retrying cannot spare.
                s, raw = self.s, self.raw
                if s is not None:
                    s.close()
                    raw.close()
                    self.s = self.raw = None

        _TlsStream.append(TlsStream)
    s = ctx.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=False)
    s.setblocking(False)
    stream = _TlsStream[0](s, sock)
    return stream, stream


def _tls_error(e):
    return OSError("TLS: " + " ".join(str(e).split()))  # mbedtls's text comes with line breaks


def _gateway_hostport():
    addr = os.getenv("BOARDEMU_NET")
    if not addr:
        raise OSError(_ECONNREFUSED)
    host, port = addr.split(":")
    return host, int(port)
