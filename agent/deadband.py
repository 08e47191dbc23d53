"""Deadband: report a value only when it moved far enough from the last reported one.

The limit is max(`absolute`, `relative` x |last reported|): the relative part scales with large values,
the absolute part is the floor that keeps a value near zero from reporting its noise (a relative band
alone shrinks to nothing there).

Spike rejection (optional `spike`): a sample further than `spike` from the last accepted sample is held
back as a suspect. Single spikes (an echo, a knock) are thus never reported. A real step is larger than
`spike` too, so suspects are not thrown away: once `confirm` suspects in a row lie on the same side of the
old value, each within `spike` of the first suspect, the step is real and is accepted (and reported). A
step is therefore reported after `confirm` samples at the latest; it is never rejected forever.
"""

from agent.errors import AgentError


class Deadband:
    """Report-on-change filter with an absolute/relative band and optional spike rejection."""

    def __init__(self, absolute=0.0, relative=0.0, spike=None, confirm=3):
        if absolute < 0 or relative < 0 or (spike is not None and spike <= 0):
            raise AgentError("deadband limits must be >= 0 (spike > 0)")
        if not isinstance(confirm, int) or confirm < 1:
            raise AgentError("deadband confirm must be an integer >= 1")
        self.absolute = absolute
        self.relative = relative
        self.spike = spike
        self.confirm = confirm
        self.reported = None  # last value reported
        self.rejected = 0  # samples dropped as spikes
        self._accepted = None  # last sample that was not a suspect
        self._suspect = None  # first sample of the current run of suspects
        self._suspects = 0

    def limit(self):
        """The band around the last reported value inside which changes are not reported."""
        if self.reported is None:
            return 0.0
        return max(self.absolute, self.relative * abs(self.reported))

    def update(self, value):
        """Feed one sample; return the value to report now, or None."""
        if value != value:
            raise AgentError("deadband got NaN: drop the reading before filtering")
        if not self._accept(value):
            return None
        if self.reported is None or abs(value - self.reported) >= self.limit() and value != self.reported:
            self.reported = value
            return value
        return None

    def mark(self, value):
        """Record `value` as reported by someone else (a heartbeat sent it)."""
        self.reported = value

    def _accept(self, value):
        ref = self._accepted
        if self.spike is None or ref is None or abs(value - ref) <= self.spike:
            self._accepted = value
            self.rejected += self._suspects  # the run that ended here was a spike
            self._suspects = 0
            return True
        first = self._suspect
        if (self._suspects and (value > ref) == (first > ref) and abs(value - first) <= self.spike):
            self._suspects += 1
        else:
            self.rejected += self._suspects
            self._suspect = value
            self._suspects = 1
        if self._suspects < self.confirm:
            return False
        self._accepted = value
        self._suspects = 0
        return True
