"""Adaptive sampling: fast while something happens, slow on a quiet day, without flapping between them.

Pure logic; time comes in as `now_ms` (time.ticks_ms(), differences through ticks_diff). The rule:
- a busy sample (the sensor's moving(): a value changes or sits near an alarm threshold) switches to
  the fast rate at once, because that is when readings matter;
- the fast rate is left only after `hold_ms` (default a minute) without a busy sample. That hold is the
  hysteresis: a value that wobbles around the "moving" limit keeps the fast rate instead of flipping
  every sample.
An interrupt (the LIS3DH activity line) does not go through here: it wakes the sampler's sleep at once
(agent/app.py), and the sensor counts as moving until that sample is taken, so the fast rate follows.
"""

try:
    from time import ticks_diff
except ImportError:  # CPython (tests, tools): a clock that does not wrap
    from operator import sub as ticks_diff  # type: ignore[assignment, no-redef]


class Scheduler:
    """The sampling period, given the fast and slow periods (ms) and the hold time of the fast rate."""

    def __init__(self, fast_ms, slow_ms, hold_ms=60000):
        if not 0 < fast_ms <= slow_ms:
            raise ValueError("need 0 < fast_ms <= slow_ms")
        self.fast_ms = fast_ms
        self.slow_ms = slow_ms
        self.hold_ms = hold_ms
        self.fast = False
        self.switches = 0  # fast<->slow changes, for health/bench
        self._busy_ms = None  # time of the last busy sample

    def done(self, now_ms, busy):
        """Record a sample taken at now_ms (busy: the sensor's moving()); returns the next period."""
        if busy:
            self._busy_ms = now_ms
            fast = True
        else:  # stays fast until hold_ms after the last busy sample
            fast = self.fast and ticks_diff(now_ms, self._busy_ms) < self.hold_ms
        if fast != self.fast:
            self.fast = fast
            self.switches += 1
        return self.fast_ms if fast else self.slow_ms
