"""HX711 24-bit load-cell ADC, bit-banged on two pins (Avia Semiconductor HX711 datasheet).

Protocol: DOUT goes low when a conversion is ready. Each PD_SCK pulse shifts out one bit, MSB first;
24 pulses give a 24-bit two's complement value, and 1-3 more pulses choose the input and gain of the
NEXT conversion (25 = channel A gain 128, 26 = channel B gain 32, 27 = channel A gain 64). After the
last pulse DOUT goes high until the next conversion is ready.

The hazard: PD_SCK held high for more than 60 us powers the chip down. In a bit-banged read an
interrupt, a task switch or a garbage collection that lands while the clock is high stretches that
pulse; the chip then resets mid-word and the remaining bits read as garbage that looks like a valid
number. So the read runs with IRQs disabled (the caller passes `disable_irq`/`enable_irq`, on a board
machine.disable_irq/enable_irq), the loop allocates nothing (small ints only, so no GC), and every
high phase is timed: a read with a pulse longer than `max_high_us`, a whole read longer than
`max_read_us`, a saturated value (0x7FFFFF / 0x800000) or a DOUT not high after the last pulse is
discarded and counted as a transient fault. Only a run of such faults, or a DOUT that never goes low,
becomes a SensorFault.
"""
import gc

try:
    from time import sleep_ms, ticks_diff, ticks_us

    from micropython import const
except ImportError:  # CPython (tests, tools): a clock that does not wrap; const() is the value itself
    from copy import copy as const  # type: ignore[assignment, no-redef]
    from operator import sub as ticks_diff  # type: ignore[assignment, no-redef]
    from time import monotonic_ns, sleep  # type: ignore[attr-defined]

    ticks_us = lambda: monotonic_ns() // 1000  # noqa: E731
    sleep_ms = lambda ms: sleep(ms / 1000)  # noqa: E731

from agent.errors import SensorFault

_POS_SAT = const(0x7FFFFF)
_NEG_SAT = const(0x800000)
_MAX_HIGH_US = const(50)  # below the 60 us power-down limit, with margin
_MAX_READ_US = const(5000)
FAULT_LIMIT = const(5)  # consecutive discarded reads before a SensorFault


def _no_irq(state=None):
    return None


class HX711:
    """The ADC on `clock` (Pin OUT, PD_SCK) and `data` (Pin IN, DOUT); gain 128 = channel A."""

    def __init__(self, clock, data, gain=128, disable_irq=None, enable_irq=None,
                 ticks=None, sleep=None, max_high_us=None, max_read_us=_MAX_READ_US):
        if gain not in (128, 32, 64):
            raise ValueError("HX711 gain must be 128, 64 (channel A) or 32 (channel B)")
        self._clk = clock.value  # bound once, called in the bit loop without allocating
        self._dout = data.value
        # 24 data bits, then 1 extra pulse for channel A gain 128, 2 for B gain 32, 3 for A gain 64.
        self._pulses = 25 + (128, 32, 64).index(gain)
        self._irq_off = disable_irq or _no_irq
        self._irq_on = enable_irq or _no_irq
        self._ticks = ticks or ticks_us
        self._sleep = sleep or sleep_ms
        self.max_high_us = max_high_us or _MAX_HIGH_US
        self.max_read_us = max_read_us
        self.discarded = 0  # reads thrown away as transient faults
        self.consecutive = 0
        self.last_fault = None
        self.worst_high_us = 0

    def setup(self):
        """Hold PD_SCK low (the chip powers up and converts)."""
        self._clk(0)

    def ready(self):
        """True when a conversion is waiting (DOUT low)."""
        return self._dout() == 0

    def read_raw(self):
        """One conversion as a signed count, or None when the read was discarded (see module docs).

        The caller checks ready() first. Raises SensorFault "hx711_garbage" after FAULT_LIMIT
        discarded reads in a row.
        """
        clk = self._clk
        dout = self._dout
        ticks = self._ticks
        raw = worst = 0
        state = self._irq_off()
        gc.disable()  # boot.py collects every few KB allocated: no collection may land inside a pulse
        try:
            # IRQs off, GC off, and the loop allocates nothing on a board (small ints only).
            start = ticks()
            for i in range(self._pulses):
                t = ticks()
                clk(1)
                clk(0)
                high = ticks_diff(ticks(), t)
                if high > worst:
                    worst = high  # the longest high phase, us
                if i < 24:
                    raw = (raw << 1) | dout()
            took = ticks_diff(ticks(), start)
        finally:
            gc.enable()
            self._irq_on(state)
        if worst > self.worst_high_us:
            self.worst_high_us = worst
        why = None
        if worst > self.max_high_us:
            why = "stretched"
        elif took > self.max_read_us:
            why = "slow"
        elif raw == _POS_SAT or raw == _NEG_SAT:
            why = "saturated"
        elif self._dout() != 1:
            why = "dout_low"
        if why is not None:
            self.discarded += 1
            self.consecutive += 1
            self.last_fault = why
            if self.consecutive >= FAULT_LIMIT:
                self.consecutive = 0
                raise SensorFault("hx711_garbage", why)
            return None
        self.consecutive = 0
        if raw & 0x800000:
            raw -= 0x1000000
        return raw

    def read(self, timeout_ms=500):
        """Wait up to timeout_ms for a conversion and return it (None if discarded).

        Raises SensorFault "hx711_timeout" when DOUT never goes low (chip missing or powered down).
        """
        waited = 0
        while not self.ready():
            if waited >= timeout_ms:
                raise SensorFault("hx711_timeout", "DOUT not ready within %d ms" % timeout_ms)
            self._sleep(5)
            waited += 5
        return self.read_raw()
