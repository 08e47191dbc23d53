"""MovingMean: the mean of the last `window` values in O(1) per update, from a preallocated ring.

A running sum gains rounding error with every add and subtract; once per `window` updates (when the ring
index wraps) the sum is recomputed from the ring, so the error stays bounded at the cost of one pass per
window, O(1) amortised.
"""

from array import array

from agent.errors import AgentError


class MovingMean:
    """Mean of the last `window` values (1..4096)."""

    def __init__(self, window):
        if not isinstance(window, int) or not 1 <= window <= 4096:
            raise AgentError("moving mean window must be an integer 1..4096, not %r" % (window,))
        self.window = window
        self._ring = array("d", bytes(8 * window))
        self._next = 0
        self._sum = 0.0
        self.count = 0

    def reset(self):
        """Forget every value."""
        self._next = 0
        self._sum = 0.0
        self.count = 0

    def update(self, value):
        """Add `value`; return the mean of the values held."""
        if value != value:
            raise AgentError("moving mean got NaN: drop the reading before filtering")
        i = self._next
        if self.count == self.window:
            self._sum -= self._ring[i]
        else:
            self.count += 1
        self._ring[i] = value
        self._sum += value
        i += 1
        if i == self.window:
            i = 0
            self._resum()
        self._next = i
        return self._sum / self.count

    def _resum(self):
        total = 0.0
        ring = self._ring
        for k in range(self.count):
            total += ring[k]
        self._sum = total

    @property
    def full(self):
        """True once `window` values have been seen."""
        return self.count == self.window

    @property
    def value(self):
        """The current mean, None before any value."""
        return None if self.count == 0 else self._sum / self.count
