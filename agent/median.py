"""MedianFilter: the running median of the last `window` values, to remove single spikes and echoes.

Two preallocated arrays: the values in arrival order (a ring) and the same values kept sorted. An update
removes the oldest value from the sorted copy and inserts the new one by shifting, O(window) with no
allocation; a window of 3..15 is a handful of moves. A spike shorter than half the window never reaches
the output.
"""

from array import array

from agent.errors import AgentError


class MedianFilter:
    """Running median over a fixed window (1..255 values)."""

    def __init__(self, window):
        if not isinstance(window, int) or not 1 <= window <= 255:
            raise AgentError("median window must be an integer 1..255, not %r" % (window,))
        self.window = window
        self._ring = array("d", bytes(8 * window))
        self._sorted = array("d", bytes(8 * window))
        self._next = 0
        self.count = 0

    def reset(self):
        """Forget every value."""
        self._next = 0
        self.count = 0

    def update(self, value):
        """Add `value`; return the median of the values held (fewer than `window` at the start)."""
        if value != value:
            raise AgentError("median filter got NaN: drop the reading before filtering")
        ring = self._ring
        srt = self._sorted
        n = self.count
        if n == self.window:
            # drop the oldest from the sorted copy: find it and close the gap
            old = ring[self._next]
            i = 0
            while i < n - 1 and srt[i] != old:
                i += 1
            while i < n - 1:
                srt[i] = srt[i + 1]
                i += 1
            n -= 1
        ring[self._next] = value
        self._next = (self._next + 1) % self.window
        i = n
        while i > 0 and srt[i - 1] > value:
            srt[i] = srt[i - 1]
            i -= 1
        srt[i] = value
        self.count = n + 1
        return self.value

    @property
    def value(self):
        """The current median (mean of the middle two for an even count), None before any value."""
        n = self.count
        if n == 0:
            return None
        srt = self._sorted
        if n & 1:
            return srt[n // 2]
        return (srt[n // 2 - 1] + srt[n // 2]) / 2
