"""Board for an ESP32 devkit (no PSRAM) wired as in the cityfleet pin map (MicroPython code).

Pins: I2C0 SDA=21 SCL=22 @400 kHz (LIS3DH at 0x18), LIS3DH INT1 -> GPIO34, UART2 RX=16 TX=17 (A02YYUW),
anemometer reed -> GPIO27 (internal pull-up), HX711 DOUT=26 PD_SCK=25, battery on GPIO35 through a 2:1
divider. Nothing is touched in __init__: each peripheral is built on first use and cached.

Wi-Fi credentials: `Board({"wifi": {"ssid": ..., "key": ...}})`, or a JSON file `wifi.json` with
{"ssid": ..., "key": ...} on the board's filesystem (written at provisioning).
"""

import machine

_CAUSES = {
    machine.PWRON_RESET: "power_on",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "wdt",
    machine.DEEPSLEEP_RESET: "deepsleep",
    machine.SOFT_RESET: "soft",
}
WIFI_FILE = "wifi.json"


class Board:
    NAME = "esp32"
    HX711_MAX_HIGH_US = 50

    def __init__(self, config=None):
        self._config = config or {}
        self._i2c = self._int = self._uart = self._reed = self._hx = self._adc = self._sta = None

    def unique_id(self):
        return machine.unique_id()

    def reset_cause(self):
        return _CAUSES.get(machine.reset_cause(), "unknown")

    def reset(self):
        machine.reset()

    def deepsleep(self, ms):
        machine.deepsleep(ms)

    def watchdog(self, timeout_ms):
        return machine.WDT(timeout=timeout_ms)

    def disable_irq(self):
        return machine.disable_irq()

    def enable_irq(self, state):
        machine.enable_irq(state)

    # Each peripheral is built on first use and kept (no lambdas: each would cost heap as a function).
    def i2c(self):
        if self._i2c is None:
            self._i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21), freq=400000)
        return self._i2c

    def accel_int_pin(self):
        if self._int is None:
            self._int = machine.Pin(34, machine.Pin.IN)
        return self._int

    def level_uart(self):
        if self._uart is None:
            self._uart = machine.UART(2, baudrate=9600, bits=8, parity=None, stop=1, rx=16, tx=17)
        return self._uart

    def anemometer_pin(self):
        if self._reed is None:
            self._reed = machine.Pin(27, machine.Pin.IN, machine.Pin.PULL_UP)
        return self._reed

    def hx711_pins(self):
        if self._hx is None:
            self._hx = (machine.Pin(25, machine.Pin.OUT, value=0), machine.Pin(26, machine.Pin.IN))
        return self._hx

    def battery_v(self):
        if self._adc is None:
            self._adc = machine.ADC(machine.Pin(35), atten=machine.ADC.ATTN_11DB)
        return self._adc.read_uv() * 2 / 1000000  # 2:1 divider

    def _wifi(self):
        creds = self._config.get("wifi")
        if creds is None:
            import json

            with open(WIFI_FILE) as f:
                creds = json.load(f)
        return creds

    def _wlan(self):
        import network

        if self._sta is None:
            self._sta = network.WLAN(network.STA_IF)
        return self._sta

    def network_up(self, timeout_ms=0):
        import time

        wlan = self._wlan()
        if wlan.isconnected():
            return True
        wlan.active(True)
        creds = self._wifi()
        wlan.connect(creds["ssid"], creds.get("key"))
        start = time.ticks_ms()
        while not wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), start) > timeout_ms:
                return False
            time.sleep_ms(100)
        return True

    def link_quality(self):
        wlan = self._wlan()
        return wlan.status("rssi") if wlan.isconnected() else None

    async def open_connection(self, host, port, ssl=None, server_hostname=None):
        """asyncio streams to host:port; TLS with `ssl` (a tls.SSLContext), checking the server's
        certificate carries `server_hostname` (default: host). Errors, TLS ones too, are OSError."""
        import asyncio

        reader, writer = await asyncio.open_connection(host, port)
        if ssl is None:
            return reader, writer
        sock = reader.s  # type: ignore[attr-defined]  # MicroPython's Stream: its socket
        try:
            return _tls_streams(sock, ssl, server_hostname or host)
        except BaseException:
            sock.close()  # a MicroPython Stream's close() does nothing: the socket must be closed
            raise

    def flash_free(self):
        import os

        st = os.statvfs("/")
        return st[0] * st[4]

    def background(self):
        return []


_TlsStream = []  # the class of _tls_streams, made at the first TLS connection (it needs asyncio)


def _tls_streams(sock, ctx, server_hostname):
    # TLS over the connected socket, as asyncio.open_connection(host, port, ssl) makes it, but: the TLS
    # socket runs its handshake inside the first reads and writes and raises ValueError when the peer's
    # certificate fails the check, from whichever read or write ran it, where the agent's MQTT client
    # expects OSError of a broken stream; and it lets go of the socket it wraps without closing it.
    # (Same as the emulator's network.tls_streams, tools/boardemu/vm/network.py.)
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
                s, raw = self.s, self.raw  # type: ignore[has-type]
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
