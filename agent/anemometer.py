"""Cup anemometer with a reed switch: one contact closure (falling edge, pull-up) per pulse.

Counting happens in the pin IRQ handler, which may run as a hard interrupt: it only reads a tick
counter, compares and increments ints (small ints do not allocate), so it is safe with the heap
locked. A reed contact bounces for a millisecond or two when it closes; edges closer than
`debounce_ms` to the last accepted edge are counted as bounces and ignored. At the default 5 ms the
highest countable rate is 200 Hz, i.e. 133 m/s at the default factor: far beyond any street wind.

Wind speed v = f * factor, f the pulse rate in Hz. The factor comes from the anemometer's datasheet
(the common 3-cup reed anemometers give 2.4 km/h = 0.667 m/s per Hz) and is configurable.

The rate is measured between edges, not by counting edges in a window: with n edges since the last
poll, f = n / (time of the newest edge - time of the newest edge at the previous poll). A window
count would quantise a 1 s sample to steps of 0.667 m/s; the edge-to-edge span does not. With no edge
in a poll the rate cannot exceed 1 / (time since the last edge), which brings a stopping rotor
smoothly to 0, and after `stall_ms` without an edge the rate is 0.
"""

try:
    from time import ticks_diff, ticks_ms

    from micropython import const
except ImportError:  # CPython (tests, tools): a millisecond clock that does not wrap; const() is the value
    from copy import copy as const  # type: ignore[assignment, no-redef]
    from operator import sub as ticks_diff  # type: ignore[assignment, no-redef]
    from time import monotonic_ns  # type: ignore[attr-defined]

    ticks_ms = lambda: monotonic_ns() // 1000000  # noqa: E731

_FACTOR = const(0.667)  # m/s per Hz


class Anemometer:
    """Pulse counter on `pin` (input with pull-up); setup() attaches the IRQ handler."""

    def __init__(self, pin, factor=_FACTOR, debounce_ms=5, stall_ms=3000, ticks=None):
        self._pin = pin
        self.factor = factor
        self.debounce_ms = debounce_ms
        self.stall_ms = stall_ms
        self._ticks = ticks or ticks_ms
        # Written by the IRQ handler only:
        self.count = 0
        self.bounces = 0
        self._last = 0
        self._seen = False
        # Written by poll() only:
        self._count_prev = 0
        self._edge_prev = None
        self._poll_prev = None
        self.hz = 0.0
        self._handler = self._edge  # bound once: making it in the IRQ would allocate

    def setup(self):
        """Attach the falling-edge IRQ (the reed closes to ground against the pull-up)."""
        self._pin.irq(trigger=self._pin.IRQ_FALLING, handler=self._handler)

    def _edge(self, pin):
        t = self._ticks()
        if self._seen and ticks_diff(t, self._last) < self.debounce_ms:
            self.bounces += 1
            return
        self._last = t  # type: ignore[assignment]
        self._seen = True
        self.count += 1

    def poll(self, now_ms):
        """Pulse rate in Hz since the previous poll (see the module docs); also kept in `hz`."""
        # The IRQ may fire between the two reads: re-read until count and time belong together.
        for _ in range(4):
            count = self.count
            last = self._last
            if count == self.count:
                break
        else:
            count, last = self.count, self._last
        n = count - self._count_prev
        if n > 0:
            if self._edge_prev is not None and ticks_diff(last, self._edge_prev) > 0:
                span = ticks_diff(last, self._edge_prev)
            elif self._poll_prev is not None:
                span = ticks_diff(now_ms, self._poll_prev)
            else:
                span = 0
            self.hz = n * 1000.0 / span if span > 0 else 0.0
            self._edge_prev = last
        elif self._seen and self._edge_prev is not None:
            since = ticks_diff(now_ms, last)
            if since >= self.stall_ms or since <= 0:
                self.hz = 0.0
            elif self.hz > 1000.0 / since:
                self.hz = 1000.0 / since
        else:
            self.hz = 0.0
        self._count_prev = count
        self._poll_prev = now_ms
        return self.hz

    def speed(self, now_ms):
        """Wind speed in m/s from poll()."""
        return self.poll(now_ms) * self.factor
