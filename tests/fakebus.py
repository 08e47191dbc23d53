"""Byte-level fakes of the buses and chips the agent's drivers talk to (for tests).

Written in the subset MicroPython runs, so the same fakes drive the drivers under CPython and under
the micropython VM. They model the chips' protocol, not the drivers' expectations: the LIS3DH has a
register file that auto-increments only when bit 7 of the sub-address is set, the UART hands out
whatever was fed in whatever pieces, the HX711 shifts bits on clock edges and powers down when a
clock pulse stays high longer than 60 us.
"""

ENODEV = 19
EIO = 5


class FakeClock:
    """Microsecond clock shared by fakes and drivers; time moves only when told to."""

    def __init__(self, start_us=0):
        self.us = start_us

    def ticks_us(self):
        return self.us

    def ticks_ms(self):
        return self.us // 1000

    def advance_us(self, us):
        self.us += us

    def advance_ms(self, ms):
        self.us += ms * 1000

    def sleep_ms(self, ms):
        self.us += ms * 1000


class FakePin:
    """A GPIO: value()/__call__ like machine.Pin, irq() handlers fired by drive() on edges."""

    IN = 1
    OUT = 3
    PULL_UP = 1
    IRQ_FALLING = 1
    IRQ_RISING = 2

    def __init__(self, value=0, on_write=None, on_read=None):
        self._v = value
        self._on_write = on_write
        self._on_read = on_read
        self.handler = None
        self.trigger = 0

    def value(self, v=None):
        if v is None:
            if self._on_read is not None:
                return self._on_read()
            return self._v
        self._v = 1 if v else 0
        if self._on_write is not None:
            self._on_write(self._v)
        return None

    def __call__(self, v=None):
        return self.value(v)

    def irq(self, handler=None, trigger=3):
        self.handler = handler
        self.trigger = trigger

    def drive(self, v):
        """Drive the line from outside (the chip or the switch); fires the IRQ handler on a matching edge."""
        v = 1 if v else 0
        old = self._v
        self._v = v
        if self.handler is None or old == v:
            return
        if (v == 0 and self.trigger & self.IRQ_FALLING) or (v == 1 and self.trigger & self.IRQ_RISING):
            self.handler(self)


class FakeI2C:
    """machine.I2C memory transfers routed to fake devices by address; OSError ENODEV when absent."""

    def __init__(self):
        self.devices = {}
        self.fail = False  # True: every transfer raises EIO (a bus stuck by noise)

    def _dev(self, addr):
        if self.fail:
            raise OSError(EIO)
        dev = self.devices.get(addr)
        if dev is None:
            raise OSError(ENODEV)
        return dev

    def scan(self):
        return sorted(self.devices)

    def readfrom_mem_into(self, addr, memaddr, buf):
        self._dev(addr).read(memaddr, buf)

    def readfrom_mem(self, addr, memaddr, nbytes):
        buf = bytearray(nbytes)
        self._dev(addr).read(memaddr, buf)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf):
        self._dev(addr).write(memaddr, buf)


class FakeLIS3DH:
    """LIS3DH register file: WHO_AM_I, control registers, OUT_X..Z, latched INT1 on an `int_pin`."""

    def __init__(self, int_pin=None):
        self.regs = bytearray(0x40)
        self.regs[0x0F] = 0x33
        self.int_pin = int_pin
        self.src_reads = 0

    def _get(self, reg):
        value = self.regs[reg]
        if reg == 0x31:  # INT1_SRC: reading releases a latched interrupt
            self.src_reads += 1
            self.regs[0x31] = 0
            if self.int_pin is not None:
                self.int_pin.drive(0)
        return value

    def read(self, sub, buf):
        reg = sub & 0x7F
        for i in range(len(buf)):
            buf[i] = self._get(reg)
            if sub & 0x80:
                reg += 1

    def write(self, sub, buf):
        reg = sub & 0x7F
        for i in range(len(buf)):
            if reg != 0x0F:
                self.regs[reg] = buf[i]
            if sub & 0x80:
                reg += 1

    def set_g(self, x, y, z):
        """Put an acceleration (g) in OUT_X..Z as HR +-2 g data: 1 mg/digit, 12 bits left-justified."""
        for i, g in enumerate((x, y, z)):
            d = int(round(g * 1000))
            if d > 2047:
                d = 2047
            if d < -2048:
                d = -2048
            raw = (d << 4) & 0xFFFF
            self.regs[0x28 + 2 * i] = raw & 0xFF
            self.regs[0x29 + 2 * i] = raw >> 8

    def activity(self):
        """Movement past the INT1 threshold: set INT1_SRC and raise the pin, if the chip was told to."""
        if self.regs[0x30] & 0x2A and self.regs[0x22] & 0x40:
            self.regs[0x31] = 0x40 | 0x20
            if self.int_pin is not None:
                self.int_pin.drive(1)


class FakeUART:
    """machine.UART receive side: any(), readinto(buf, n), read(n) over bytes fed in by the test."""

    def __init__(self):
        self._rx = bytearray()
        self._pos = 0
        self.max_any = None  # report at most this many bytes waiting (a partly filled FIFO)

    def feed(self, data):
        if self._pos:
            self._rx = self._rx[self._pos:]
            self._pos = 0
        self._rx.extend(data)

    def any(self):
        n = len(self._rx) - self._pos
        if self.max_any is not None and n > self.max_any:
            n = self.max_any
        return n

    def readinto(self, buf, nbytes=None):
        n = len(buf) if nbytes is None else nbytes
        left = len(self._rx) - self._pos
        if n > left:
            n = left
        if n == 0:
            return None  # machine.UART returns None on timeout
        for i in range(n):
            buf[i] = self._rx[self._pos + i]
        self._pos += n
        return n

    def read(self, nbytes=-1):
        left = len(self._rx) - self._pos
        n = left if nbytes < 0 or nbytes > left else nbytes
        if n == 0:
            return None
        out = bytes(self._rx[self._pos:self._pos + n])
        self._pos += n
        return out


def a02_frame(mm):
    """The 4-byte A02YYUW frame for a distance in mm."""
    hi = (mm >> 8) & 0xFF
    lo = mm & 0xFF
    return bytes([0xFF, hi, lo, (0xFF + hi + lo) & 0xFF])


class FakeHX711:
    """HX711 behind two FakePins (clk: PD_SCK, dout: DOUT) on a FakeClock.

    Conversions come from `values` (signed 24-bit). Each pin operation takes `op_us`. A clock pulse
    high for more than 60 us powers the chip down (powerdowns counts it) and aborts the word: DOUT
    reads high from then on until the next conversion. `stretch(pulse, us)` simulates an interrupt
    that, if IRQs are enabled (disable_irq/enable_irq of this fake), lands in the high phase of the
    given pulse (1-based) of the next read.
    """

    def __init__(self, clock, values=(), conv_us=12500, op_us=1):
        self.clock = clock
        self.values = list(values)
        self.conv_us = conv_us
        self.op_us = op_us
        self.clk = FakePin(0, on_write=self._on_clk)
        self.dout = FakePin(1, on_read=self._dout)
        self.present = True
        self.irq_enabled = True
        self.irq_toggles = 0
        self.powerdowns = 0
        self.pulses = 0  # pulses in the current/last word
        self.gain_pulses = None  # pulses after the 24 data bits in the last closed word
        self._word = None
        self._bit_out = 1
        self._high_at = None
        self._ready_at = 0
        self._stretch_pulse = None
        self._stretch_us = 0

    def disable_irq(self):
        state = self.irq_enabled
        self.irq_enabled = False
        self.irq_toggles += 1
        return state

    def enable_irq(self, state):
        self.irq_enabled = state

    def stretch(self, pulse, us=100):
        self._stretch_pulse = pulse
        self._stretch_us = us

    def _close(self):
        # A finished word (24 bits + gain pulses) closes when the next conversion is due.
        if self._word is not None and self.pulses >= 25 and self.clock.us >= self._ready_at:
            self.gain_pulses = self.pulses - 24
            self._word = None

    def _ready(self):
        self._close()
        return (self.present and self._word is None and len(self.values) > 0
                and self.clock.us >= self._ready_at)

    def _dout(self):
        self.clock.advance_us(self.op_us)
        if not self.present:
            return 1
        if self._ready():
            return 0
        return self._bit_out if self._word is not None else 1

    def _on_clk(self, v):
        self.clock.advance_us(self.op_us)
        if v:
            self._rising()
            return
        if self._high_at is None:
            return
        high = self.clock.us - self._high_at
        self._high_at = None
        if high > 60:
            self.powerdowns += 1
            self._word = None
            self._bit_out = 1
            self._ready_at = self.clock.us + self.conv_us  # reset, then a fresh conversion

    def _rising(self):
        self._high_at = self.clock.us
        self._close()
        if self._word is None:
            if not self._ready():
                return  # clocks without data: nothing shifts
            self._word = self.values.pop(0) & 0xFFFFFF
            self.pulses = 0
        self.pulses += 1
        if self.pulses <= 24:
            self._bit_out = (self._word >> (24 - self.pulses)) & 1
        else:
            self._bit_out = 1  # 25th pulse: DOUT back high until the next conversion
        if self.pulses == 25:
            self._word_end()
        if self.irq_enabled and self._stretch_pulse == self.pulses:
            self._stretch_pulse = None
            self.clock.advance_us(self._stretch_us)

    def _word_end(self):
        # The word stays open so the 26th/27th pulses are counted; the next conversion comes later.
        self._ready_at = self.clock.us + self.conv_us
