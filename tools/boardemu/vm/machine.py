# `machine` for the board emulator: MicroPython code, found on MICROPYPATH before the unix port's
# built-in machine. It follows the ESP32 port's API and constants for what the agent uses; every
# peripheral is a model in the emulator host, reached through _emulink (one small frame per op).
# Reset cause and unique id come from the environment the emulator starts the VM with.

import binascii
import os
import struct
import sys
import time

from _emubus import I2C, UART, SoftI2C  # noqa: F401 - re-exported as machine.I2C etc.
from _emulink import LINK
from micropython import const

PWRON_RESET = const(1)
HARD_RESET = const(2)
WDT_RESET = const(3)
DEEPSLEEP_RESET = const(4)
SOFT_RESET = const(5)
PIN_WAKE = const(2)
EXT0_WAKE = const(2)
EXT1_WAKE = const(3)
TIMER_WAKE = const(4)
TOUCHPAD_WAKE = const(5)
ULP_WAKE = const(6)

_CAUSES = {"power_on": PWRON_RESET, "hard": HARD_RESET, "wdt": WDT_RESET, "deepsleep": DEEPSLEEP_RESET,
           "soft": SOFT_RESET}
_INPUT_ONLY = (34, 35, 36, 37, 38, 39)
_freq = [160000000]


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    PULL_HOLD = 4
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if not isinstance(id, int) or id < 0 or id > 39 or id in (20, 24, 28, 29, 30, 31):
            raise ValueError("invalid pin")
        self._id = id
        self._mode = Pin.IN
        self._pull = 0
        self._handler = None
        self._trigger = 0
        self._hard = False
        self._flags = 0
        if mode != -1 or pull != -1 or value is not None:
            self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if mode != -1 and mode is not None:
            if mode in (Pin.OUT, Pin.OPEN_DRAIN) and self._id in _INPUT_ONLY:
                raise ValueError("pin can only be input")
            self._mode = mode
        if pull != -1:
            self._pull = pull or 0
        req = LINK.req
        req[2] = self._id
        req[3] = self._mode
        req[4] = self._pull
        LINK.send(0x4D, 3)  # M
        if value is not None and self._mode != Pin.IN:
            self._write(value)

    def _write(self, v):
        LINK.pin_write(self._id, 1 if v else 0)

    def value(self, v=None):
        if v is None:
            struct.pack_into(">BQ", LINK.req, 2, self._id, time.ticks_us())
            LINK.call(0x70, 9)  # p
            return LINK.resp[1]
        self._write(v)

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self._write(1)

    def off(self):
        self._write(0)

    def id(self):
        return self._id

    def irq(self, handler=None, trigger=3, *, priority=1, wake=None, hard=False):
        self._handler = handler
        self._trigger = trigger if handler is not None else 0
        self._hard = hard
        if handler is None:
            LINK.handlers.pop(self._id, None)
        else:
            LINK.handlers[self._id] = self
        LINK.req[2] = self._id
        LINK.req[3] = self._trigger
        LINK.send(0x51, 2)  # Q
        return _Irq(self)

    def __repr__(self):
        return "Pin(%d)" % self._id


class _Irq:
    def __init__(self, pin):
        self._pin = pin

    def flags(self):
        return self._pin._flags

    def trigger(self, t=None):
        return self._pin._trigger


class Signal:
    def __init__(self, pin, *args, invert=False, **kw):
        self._pin = pin if isinstance(pin, Pin) else Pin(pin, *args, **kw)
        self._invert = invert

    def value(self, v=None):
        if v is None:
            return self._pin.value() ^ self._invert
        self._pin.value(bool(v) ^ self._invert)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 0
    WIDTH_10BIT = 1
    WIDTH_11BIT = 2
    WIDTH_12BIT = 3

    def __init__(self, pin, *, atten=0):
        self._pin = pin if isinstance(pin, int) else pin.id()
        if self._pin not in (32, 33, 34, 35, 36, 37, 38, 39):
            raise ValueError("invalid pin")
        self._atten = atten
        self._bits = 12

    def init(self, *, atten=None):
        if atten is not None:
            self._atten = atten

    def atten(self, atten):
        self._atten = atten

    def width(self, width):
        self._bits = 9 + width

    def _sample(self):
        LINK.req[2] = self._pin
        LINK.req[3] = self._atten
        LINK.call(0x41, 2)  # A
        r = LINK.resp
        return (r[1] << 24) | (r[2] << 16) | (r[3] << 8) | r[4], (r[5] << 8) | r[6]

    def read_uv(self):
        return self._sample()[0]

    def read_u16(self):
        raw = self._sample()[1]
        return (raw << 4) | (raw >> 8)  # 12 bits scaled to 16, as the port does

    def read(self):
        return self._sample()[1] >> (12 - self._bits)


class WDT:
    def __init__(self, id=0, timeout=5000):
        struct.pack_into(">I", LINK.req, 2, timeout)
        LINK.send(0x44, 4)  # D

    def feed(self):
        LINK.send(0x64, 0)  # d


class RTC:
    def __init__(self, id=0):
        pass

    def datetime(self, dt=None):
        if dt is None:
            LINK.call(0x54, 0)  # T
            return struct.unpack_from(">HBBBBBBI", LINK.resp, 1)
        d = tuple(dt) + (0,) * (8 - len(dt))
        struct.pack_into(">HBBBBBBI", LINK.req, 2, *d[:8])
        LINK.send(0x74, 12)  # t

    def init(self, dt):
        self.datetime(dt)


def unique_id():
    return binascii.unhexlify(os.getenv("BOARDEMU_UID") or "24dcc3a00000")


def reset_cause():
    return _CAUSES.get(os.getenv("BOARDEMU_RESET_CAUSE") or "power_on", PWRON_RESET)


def wake_reason():
    return TIMER_WAKE if reset_cause() == DEEPSLEEP_RESET else 0


def _await_reset(what):
    # The host kills and restarts the VM; nothing after this runs on a board.
    for _ in range(100):
        time.sleep_ms(100)
    raise OSError("emulator did not %s the board" % what)


def reset():
    LINK.req[2] = 0x68  # h
    LINK.send(0x58, 1)  # X
    _await_reset("reset")


def soft_reset():
    LINK.req[2] = 0x73  # s
    LINK.send(0x58, 1)  # X
    _await_reset("soft-reset")


def deepsleep(time_ms=0):
    struct.pack_into(">I", LINK.req, 2, time_ms)
    LINK.send(0x5A, 4)  # Z
    _await_reset("deep-sleep")


def lightsleep(time_ms=None):
    LINK.wait(1000 if time_ms is None else time_ms)


sleep = lightsleep


def idle():
    LINK.wait(1)


def freq(hz=None):
    if hz is None:
        return _freq[0]
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq[0] = hz


def disable_irq():
    state = LINK.irq_on
    LINK.irq_on = False
    return state


def enable_irq(state=True):
    LINK.irq_on = state
    if state:
        LINK.service()


def time_pulse_us(pin, pulse_level, timeout_us=1000000):
    start = time.ticks_us()
    while pin.value() != pulse_level:
        if time.ticks_diff(time.ticks_us(), start) > timeout_us:
            return -2
    begin = time.ticks_us()
    while pin.value() == pulse_level:
        if time.ticks_diff(time.ticks_us(), begin) > timeout_us:
            return -1
    return time.ticks_diff(time.ticks_us(), begin)


def irq_pump():
    """The coroutine that runs pin IRQ handlers while an asyncio program waits (Board.background())."""
    return LINK.pump()


def bootloader():
    sys.exit(0)
