"""Board for the cityfleet board emulator (tools/boardemu), MicroPython code.

Same pin map and behaviour as firmware/boards/esp32/board.py, on the emulator's `machine` (whose
chips are models in the emulator host). Differences: the network is the emulator's link, reached
through its gateway (`boardemu net down` cuts it as a lost cellular link), and background() returns
the IRQ pump, a task that runs pin IRQ handlers while the agent waits in asyncio (the VM has no real
interrupts). Nothing is touched in __init__: each peripheral is built on first use and cached.
"""

import machine

_CAUSES = {
    machine.PWRON_RESET: "power_on",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "wdt",
    machine.DEEPSLEEP_RESET: "deepsleep",
    machine.SOFT_RESET: "soft",
}


class Board:
    NAME = "emulator"
    HX711_MAX_HIGH_US = 50

    def __init__(self, config=None):
        self._config = config or {}
        self._i2c = self._int = self._uart = self._reed = self._hx = self._adc = None

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

    def network_up(self, timeout_ms=0):
        import time

        import network

        start = time.ticks_ms()
        while not network.link_state()[0]:  # type: ignore[attr-defined]
            if time.ticks_diff(time.ticks_ms(), start) > timeout_ms:
                return False
            time.sleep_ms(100)
        return True

    def link_quality(self):
        import network

        up, rssi = network.link_state()  # type: ignore[attr-defined]
        return rssi if up else None

    async def open_connection(self, host, port, ssl=None, server_hostname=None, timeout_ms=10000):
        """asyncio streams to host:port; TLS with `ssl` (a tls.SSLContext), checking the server's
        certificate carries `server_hostname` (default: host). Errors, TLS ones too, are OSError."""
        import network

        return await network.open_connection(host, port, timeout_ms, ssl,  # type: ignore[attr-defined]
                                             server_hostname)

    def flash_free(self):
        import os

        st = os.statvfs("/")
        return st[0] * st[4]

    def background(self):
        return [machine.irq_pump()]  # type: ignore[attr-defined]
