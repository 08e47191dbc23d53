"""HX711 24-bit load-cell ADC on two pins (Avia Semiconductor HX711 datasheet), at the pin level.

Protocol as on the chip: DOUT goes low when a conversion is ready (10 SPS with RATE tied low, 80 SPS
when high). Each PD_SCK rising edge shifts out the next bit, MSB first, 24-bit two's complement; the
25th rising edge pulls DOUT high again; the number of pulses (25, 26, 27) selects channel A gain 128,
channel B gain 32 or channel A gain 64 for the NEXT conversion. Outputs saturate at 0x7FFFFF /
0x800000. PD_SCK held high longer than 60 us powers the chip down (DOUT high); when PD_SCK returns low
the chip resets (channel A gain 128) and its first conversion is ready after the settling time
(400 ms at 10 SPS, 50 ms at 80 SPS).

Timing in the emulator: each pin write from the VM carries the VM's own time.ticks_us() (the same
CLOCK_MONOTONIC the host reads), so the high phase measured here is the time the program really held
the clock high, not the socket's latency, and the datasheet's 60 us threshold applies unchanged: a
garbage collection or a context switch between clock(1) and clock(0) powers the chip down as on a
board. `pd_threshold_us` can be raised for hosts too slow for that.
"""

from __future__ import annotations

FULL = 1 << 24
POS_MAX, NEG_MIN = (1 << 23) - 1, -(1 << 23)
#: Extra pulses after 24 -> (channel, gain) of the next conversion.
SELECT = {1: ("A", 128), 2: ("B", 32), 3: ("A", 64)}
PD_THRESHOLD_US = 60


class HX711:
    """The chip; `counts(channel, gain, t)` gives the analog input as counts at time t (signed)."""

    def __init__(self, counts, sps: float = 10.0, pd_threshold_us: int = PD_THRESHOLD_US):
        self._counts = counts
        self.period = 1.0 / sps
        self.settle = 0.050 if sps >= 80 else 0.400  # datasheet: settling time at 80 / 10 SPS
        self.pd_threshold_us = pd_threshold_us
        self.state = "ok"  # "ok" | "missing" | "garbage", from the world
        self.rng = None
        self.power_downs = 0
        self.reads = 0
        self._reset(0.0)
        self._clk = 0
        self._clk_rise = None

    def _reset(self, t: float) -> None:
        self.channel, self.gain = "A", 128
        self._origin = t + self.settle - self.period  # first conversion ready at t + settle
        self._taken = None  # index of the conversion being / last read
        self._word = 0
        self._pulses = 0
        self._powered = True

    def _k(self, t: float) -> int:
        return int((t - self._origin) / self.period)

    def dout(self, t: float) -> int:
        """The DOUT level at time t (seconds, monotonic)."""
        if self.state == "missing":
            return 1
        if self.state == "garbage" and self.rng is not None:
            return self.rng.randrange(2)
        self._check_power(t)
        if not self._powered:
            return 1
        if 1 <= self._pulses <= 24:  # a read in progress shifts its word out, whatever converts meanwhile
            return (self._word >> (24 - self._pulses)) & 1
        k = self._k(t)
        if k < 1 or self._taken == k:  # settling, or this conversion was read: high until the next
            return 1
        return 0  # a fresh conversion is waiting

    def clock(self, level: int, t_us: int) -> None:
        """PD_SCK driven to `level` at VM time t_us (microseconds, monotonic)."""
        t = t_us / 1e6
        if level and not self._clk:
            self._check_power(t)
            self._clk, self._clk_rise = 1, t_us
            if self._powered:
                self._rising(t)
        elif not level and self._clk:
            high = t_us - (self._clk_rise or t_us)
            self._clk = 0
            if high > self.pd_threshold_us or not self._powered:
                self.power_downs += 1 if self._powered else 0
                self._reset(t)  # powered down while high; powers up again now, reset to A/128

    def _check_power(self, t: float) -> None:
        if self._clk and self._clk_rise is not None and t * 1e6 - self._clk_rise > self.pd_threshold_us:
            if self._powered:
                self.power_downs += 1
            self._powered = False

    def _rising(self, t: float) -> None:
        k = self._k(t)
        if k < 1:
            return
        if self._taken != k and not 1 <= self._pulses < 24:  # first pulse on a fresh conversion: latch it
            self._taken = k
            self._pulses = 0
            self._word = self._conversion(self._origin + k * self.period)
            self.reads += 1
        self._pulses += 1
        if self._pulses > 24:  # gain-select pulses: they choose the input of the next conversion
            self.channel, self.gain = SELECT[min(self._pulses - 24, 3)]

    def _conversion(self, t: float) -> int:
        if self.state == "garbage" and self.rng is not None:
            return self.rng.randrange(FULL)
        value = int(round(self._counts(self.channel, self.gain, t)))
        value = max(NEG_MIN, min(POS_MAX, value))
        return value & (FULL - 1)
