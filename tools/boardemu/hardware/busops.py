"""The hub's requests, one small frame each, and what they do to the board's models.

Payload layouts (integers big-endian; "->" marks the response data after the status byte; ops without
"->" are one-way). Status is 0 or an errno as the ESP32 port raises it (19 ENODEV for an I2C address
that does not acknowledge, 22 EINVAL for bad arguments, 116 ETIMEDOUT).

    c  I2C init      bus scl sda freq:u32                 (bus 0/1 hardware, 255 SoftI2C)
    w  writeto       bus addr stop data...          -> acks:u8
    r  readfrom      bus addr n stop                -> data
    W  writeto_mem   bus addr reg data...           -> (nothing)
    m  readfrom_mem  bus addr reg n                 -> data
    s  scan          bus                            -> addr...
    V  UART init     id baud:u32 rx tx rxbuf:u16
    U  UART write    id data...
    a  UART any      id                             -> count:u16
    u  UART read     id n timeout_ms:u16            -> data
    M  pin mode      pin mode pull
    P  pin write     pin level ticks_us:u64
    p  pin read      pin ticks_us:u64               -> level
    Q  pin irq       pin trigger
    A  ADC read      pin atten                      -> uv:u32 raw:u16
    D  WDT start     timeout_ms:u32
    d  WDT feed
    T  RTC get                                      -> year:u16 month day weekday hour min sec us:u32
    t  RTC set       year:u16 month day weekday hour min sec us:u32
    n  link state                                   -> up rssi:i8
    X  reset         cause ("h" hard, "s" soft)
    Z  deepsleep     ms:u32
"""

from __future__ import annotations

import struct
import time

ENODEV, EINVAL, ETIMEDOUT = 19, 22, 116
ONE_WAY = set(b"cVUMPQDdtXZ")
#: Where the sensors are wired (the contract's ESP32 pin map).
I2C_PINS = (22, 21)  # SCL, SDA
UART_RX_PIN = 16


def vm_us(ticks: int, t: float) -> int:
    """The VM's time stamp in us, trusted when it is on the host's monotonic clock (the unix port's
    ticks_us reads CLOCK_MONOTONIC); the host's time otherwise."""
    return ticks if abs(ticks / 1e6 - t) < 1.0 else int(t * 1e6)


def _ok(data: bytes = b"") -> bytes:
    return b"\x00" + data


def _err(errno: int) -> bytes:
    return bytes((errno,))


class BusOps:
    """Dispatches hub requests to the models of `hw` (a Hardware) under its lock."""

    def __init__(self, hw):
        self.hw = hw
        self.i2c_pins = {}  # bus id -> (scl, sda)
        self.uart_rx = {}  # uart id -> rx pin
        self.errors = 0
        self._table = {
            ord("c"): self._i2c_init, ord("w"): self._writeto, ord("r"): self._readfrom,
            ord("W"): self._writeto_mem, ord("m"): self._readfrom_mem, ord("s"): self._scan,
            ord("V"): self._uart_init, ord("U"): self._uart_write, ord("a"): self._uart_any,
            ord("u"): self._uart_read, ord("M"): self._pin_mode, ord("P"): self._pin_write,
            ord("p"): self._pin_read, ord("Q"): self._pin_irq, ord("A"): self._adc,
            ord("D"): self._wdt_start, ord("d"): self._wdt_feed, ord("T"): self._rtc_get,
            ord("t"): self._rtc_set, ord("n"): self._link, ord("X"): self._reset, ord("Z"): self._deepsleep,
        }

    def reset(self) -> None:
        """Forget the VM's bus configuration (it restarted)."""
        self.i2c_pins.clear()
        self.uart_rx.clear()

    def handle(self, op: int, payload: bytes) -> bytes | None:
        """Answer one request; None for one-way ops."""
        fn = self._table.get(op)
        after = None
        with self.hw.lock:
            try:
                answer = fn(payload, time.monotonic()) if fn else _err(EINVAL)
            except (ValueError, IndexError, struct.error):
                answer = _err(EINVAL)
            if isinstance(answer, tuple):  # (answer, action to run outside the lock)
                answer, after = answer
        if after is not None:
            after()
        if op in ONE_WAY:
            if answer and answer[0]:
                self.errors += 1
            return None
        return answer

    # --- I2C --------------------------------------------------------------------------------------
    def _device(self, bus: int, addr: int):
        if self.i2c_pins.get(bus) != I2C_PINS:
            return None  # the VM drives other pins: nothing answers
        return self.hw.i2c_device(addr)

    def _i2c_init(self, p, t):
        self.i2c_pins[p[0]] = (p[1], p[2])
        return _ok()

    def _writeto(self, p, t):
        dev = self._device(p[0], p[1])
        if dev is None:
            return _err(ENODEV)
        dev.i2c_write(p[3:], t)
        return _ok(bytes((1 + len(p) - 3,)))

    def _readfrom(self, p, t):
        dev = self._device(p[0], p[1])
        return _err(ENODEV) if dev is None else _ok(dev.i2c_read(p[2], t))

    def _writeto_mem(self, p, t):
        dev = self._device(p[0], p[1])
        if dev is None:
            return _err(ENODEV)
        dev.i2c_write(p[2:], t)
        return _ok()

    def _readfrom_mem(self, p, t):
        dev = self._device(p[0], p[1])
        if dev is None:
            return _err(ENODEV)
        dev.i2c_write(p[2:3], t)
        return _ok(dev.i2c_read(p[3], t))

    def _scan(self, p, t):
        return _ok(bytes(a for a in range(0x08, 0x78) if self._device(p[0], a) is not None))

    # --- UART -------------------------------------------------------------------------------------
    def _uart(self, uid: int, t: float):
        uart = self.hw.uart(uid)
        if uart is not None and self.uart_rx.get(uid) == UART_RX_PIN:
            self.hw.advance_uart_peers(t)
            return uart
        return None

    def _uart_init(self, p, t):
        uid, baud, rx, _tx, rxbuf = struct.unpack(">BIBBH", p)
        self.uart_rx[uid] = rx
        uart = self.hw.uart(uid)
        if uart is not None:
            self.hw.advance_uart_peers(t)
            uart.init(baud, rxbuf)
        return _ok()

    def _uart_write(self, p, t):
        uart = self.hw.uart(p[0])
        if uart is not None:
            uart.tx += len(p) - 1
        return _ok()

    def _uart_any(self, p, t):
        uart = self._uart(p[0], t)
        return _ok(struct.pack(">H", len(uart.fifo) if uart else 0))

    def _uart_read(self, p, t):
        uid, n, timeout_ms = struct.unpack(">BBH", p)
        deadline = t + timeout_ms / 1000.0
        uart = self._uart(uid, t)
        while uart is not None and len(uart.fifo) < n and time.monotonic() < deadline:
            self.hw.lock.release()  # let the world run while this read waits, as the UART driver does
            try:
                time.sleep(0.002)
            finally:
                self.hw.lock.acquire()
            uart = self._uart(uid, time.monotonic())
        return _ok(uart.take(n) if uart else b"")

    # --- pins, ADC --------------------------------------------------------------------------------
    def _pin_mode(self, p, t):
        self.hw.pins.configure(p[0], p[1], p[2])
        return _ok()

    def _pin_write(self, p, t):
        pin, level, ticks = struct.unpack(">BBQ", p)
        self.hw.pins.write(pin, level, vm_us(ticks, t))
        return _ok()

    def _pin_read(self, p, t):
        pin, ticks = struct.unpack(">BQ", p)
        return _ok(bytes((self.hw.pins.read(pin, vm_us(ticks, t) / 1e6),)))

    def _pin_irq(self, p, t):
        self.hw.arm_irq(p[0], p[1], t)
        return _ok()

    def _adc(self, p, t):
        uv, raw = self.hw.adc(p[0], p[1], t)
        return _ok(struct.pack(">IH", uv, raw))

    # --- system -----------------------------------------------------------------------------------
    def _wdt_start(self, p, t):
        self.hw.wdt.start(struct.unpack(">I", p)[0], t)
        self.hw.wake()
        return _ok()

    def _wdt_feed(self, p, t):
        self.hw.wdt.feed(t)
        return _ok()

    def _rtc_get(self, p, t):
        y, mo, d, wd, h, mi, s, us = self.hw.rtc.datetime_tuple(t)
        return _ok(struct.pack(">HBBBBBBI", y, mo, d, wd, h, mi, s, us))

    def _rtc_set(self, p, t):
        self.hw.rtc.set(struct.unpack(">HBBBBBBI", p), t)
        return _ok()

    def _link(self, p, t):
        up = self.hw.gateway.up
        rssi = int(self.hw.world.value("rssi_dbm", t)) if up else -128
        return _ok(struct.pack(">Bb", 1 if up else 0, max(-128, min(0, rssi))))

    def _reset(self, p, t):
        cause = "soft" if p[:1] == b"s" else "hard"
        return _ok(), lambda: self.hw.lifecycle.request_reset(cause)

    def _deepsleep(self, p, t):
        ms = struct.unpack(">I", p)[0]
        return _ok(), lambda: self.hw.lifecycle.request_deepsleep(ms)
