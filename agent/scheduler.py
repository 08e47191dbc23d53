"""Adaptive sampling: fast while something happens, slow on a quiet day, without flapping between them.

Pure logic; time comes in as `now_ms` (time.ticks_ms(), differences through ticks_diff). The rule:
- a busy sample (the sensor's moving(): a value changes or sits near an alarm threshold) switches to
  the fast rate at once, because that is when readings matter;
- the fast rate is left only after `hold_ms` without a busy sample. That hold is the hysteresis: a
  value that wobbles around the "moving" limit keeps the fast rate instead of flipping every sample;
- wake() (an interrupt, e.g. the LIS3DH activity line) makes a sample due now and enters fast mode.
"""

try:
    from time import ticks_add, ticks_diff
except ImportError:

    def ticks_add(a, b):  # type: ignore[misc]
        return a + b

    def ticks_diff(a, b):  # type: ignore[no-redef]
        return a - b


HOLD_MS = 60000


class Scheduler:
    """When to sample next, given the fast and slow periods (ms) and the hold time of the fast rate."""

    def __init__(self, fast_ms, slow_ms, hold_ms=HOLD_MS):
        if not 0 < fast_ms <= slow_ms:
            raise ValueError("need 0 < fast_ms <= slow_ms")
        self.fast_ms = fast_ms
        self.slow_ms = slow_ms
        self.hold_ms = hold_ms
        self.fast = False
        self.switches = 0  # fast<->slow changes, for health/bench
        self._busy_ms = None  # time of the last busy sample
        self._due = None  # None: due now

    def interval_ms(self):
        """The current sampling period."""
        return self.fast_ms if self.fast else self.slow_ms

    def due(self, now_ms):
        """True when a sample is due."""
        return self._due is None or ticks_diff(now_ms, self._due) >= 0

    def wait_ms(self, now_ms):
        """Milliseconds until the next sample is due (0 when due)."""
        if self._due is None:
            return 0
        left = ticks_diff(self._due, now_ms)
        return left if left > 0 else 0

    def done(self, now_ms, busy):
        """Record a sample taken at now_ms (busy: the sensor's moving()); returns the next period."""
        if busy:
            self._busy_ms = now_ms
            self._set(True)
        elif self.fast and (self._busy_ms is None or ticks_diff(now_ms, self._busy_ms) >= self.hold_ms):
            self._set(False)
        period = self.interval_ms()
        self._due = ticks_add(now_ms, period)
        return period

    def wake(self, now_ms):
        """An interrupt: sample now, and fast for at least hold_ms."""
        self._busy_ms = now_ms
        self._set(True)
        self._due = None

    def _set(self, fast):
        if fast != self.fast:
            self.fast = fast
            self.switches += 1


def for_sensor(sensor, hold_ms=HOLD_MS):
    """A Scheduler with the sensor's default fast and slow periods."""
    return Scheduler(sensor.interval_ms(True), sensor.interval_ms(False), hold_ms)
