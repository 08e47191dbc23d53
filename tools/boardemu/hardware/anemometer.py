"""Cup anemometer with a reed switch: one contact closure per revolution, pin pulled up, closes to ground.

The rotor turns at f = wind / factor revolutions per second (factor in m/s per Hz, 0.667 for the
common 3-cup reed anemometers: 2.4 km/h per Hz). The reed is closed for the first quarter of each
revolution (the magnet's arc), so the pin reads 0 then, 1 otherwise: a falling edge starts every
pulse. The rotor phase is integrated over time with the rate at the middle of each step, so gusts
change the pulse spacing smoothly; edges are produced at their exact times for the pin IRQ.
"""

from __future__ import annotations

import math

DUTY = 0.25  # fraction of a revolution the reed is closed
MAX_STEP_S = 0.1  # re-read the wind at least this often


class Anemometer:
    """The reed switch; `rate(t)` gives revolutions per second, `working(t)` False when it is broken."""

    def __init__(self, rate, working=None):
        self._rate = rate
        self._working = working or (lambda t: True)
        self.phase = 0.5  # revolutions; start with the reed open
        self._t = None
        self.pulses = 0

    def advance(self, t: float, edges: list | None = None) -> None:
        """Turn the rotor up to time t; append (time, level) of each edge to `edges` when given."""
        if self._t is None or t <= self._t:
            self._t = t if self._t is None else self._t
            return
        while self._t < t:
            step = min(t - self._t, MAX_STEP_S)
            mid = self._t + step / 2
            rate = self._rate(mid) if self._working(mid) else 0.0
            start, end = self.phase, self.phase + rate * step
            if rate > 0:
                self._crossings(start, end, rate, edges)
            self.phase = end
            self._t += step

    def _crossings(self, start: float, end: float, rate: float, edges) -> None:
        # Boundaries at n (reed closes: falling) and n + DUTY (opens: rising).
        n = math.floor(start)
        for base in range(n, int(math.floor(end)) + 1):
            for offset, level in ((0.0, 0), (DUTY, 1)):
                b = base + offset
                if start < b <= end:
                    if level == 0:
                        self.pulses += 1
                    if edges is not None:
                        edges.append((self._t + (b - start) / rate, level))

    def level(self, t: float) -> int:
        """Pin level at time t: 0 while the reed is closed."""
        self.advance(t)
        return 0 if (self.phase % 1.0) < DUTY else 1

    def next_due(self, t: float) -> float:
        """Time of the next edge at the current rate (at most MAX_STEP_S ahead)."""
        rate = self._rate(t) if self._working(t) else 0.0
        if rate <= 0:
            return t + MAX_STEP_S
        frac = self.phase % 1.0
        to_go = (DUTY - frac) if frac < DUTY else (1.0 - frac)
        return t + min(max(to_go, 1e-6) / rate, MAX_STEP_S)
