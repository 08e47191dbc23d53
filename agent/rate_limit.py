"""RateLimit: at most one report per `window`, and the newest held value still goes out when it ends.

A plain "drop what comes too soon" limiter loses the last change of a burst: the value the fleet would
then show is stale until the next change, which may be hours away. Here a value offered inside the window
is held (replacing an older held one, counted in `superseded`); when the window ends, due(now) turns
True and poll(now) hands the held value out, so the caller can flush it from its timer.

Times are seconds (or any unit, consistently) from a monotonic clock that does not wrap; the caller reads
the clock (house rule 1).
"""

from agent.errors import AgentError


class RateLimit:
    """One report per `window` time units; offers inside the window are held, the newest wins."""

    def __init__(self, window):
        if window < 0:
            raise AgentError("rate limit window must be >= 0")
        self.window = window
        self.superseded = 0  # held values replaced by a newer one before they were sent
        self._last = None  # time of the last report
        self._held = None
        self._holding = False

    def offer(self, value, now):
        """Offer `value` at `now`; return it when it may be sent now, else hold it and return None."""
        if self._last is None or now - self._last >= self.window:
            self._last = now
            if self._holding:  # a newer value replaces the held one, which is now stale
                self.superseded += 1
                self._holding = False
                self._held = None
            return value
        if self._holding:
            self.superseded += 1
        self._held = value
        self._holding = True
        return None

    def due(self, now):
        """True when a held value waits and its window has ended."""
        return self._holding and now - self._last >= self.window

    def next_due(self):
        """Time at which the held value becomes due, None when nothing is held."""
        return self._last + self.window if self._holding else None

    def poll(self, now):
        """Return the held value when due (and count it as a report at `now`), else None."""
        if not self.due(now):
            return None
        value = self._held
        self._held = None
        self._holding = False
        self._last = now
        return value

    @property
    def holding(self):
        """True while a value waits for its window."""
        return self._holding
