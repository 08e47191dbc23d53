"""The report filters of one measurement: Deadband, RateLimit and Heartbeat (agent/reporter.py).

Deadband: report a value only when it moved far enough from the last reported one. The limit is
max(`absolute`, `relative` x |last reported|): the relative part scales with large values, the absolute
part is the floor that keeps a value near zero from reporting its noise (a relative band alone shrinks
to nothing there).

Spike rejection (optional `spike`): a sample further than `spike` from the last accepted sample is held
back as a suspect. Single spikes (an echo, a knock) are thus never reported. A real step is larger than
`spike` too, so suspects are not thrown away: once `confirm` suspects in a row lie on the same side of the
old value, each within `spike` of the first suspect, the step is real and is accepted (and reported). A
step is therefore reported after `confirm` samples at the latest; it is never rejected forever.

RateLimit: at most one report per `window`, and the newest held value still goes out when it ends. A
plain "drop what comes too soon" limiter loses the last change of a burst: the value the fleet would
then show is stale until the next change, which may be hours away. Here a value offered inside the window
is held (replacing an older held one, counted in `superseded`); when the window ends, due(now) turns
True and poll(now) hands the held value out, so the caller can flush it from its timer.

Heartbeat: publish at least every `ut` seconds, even when nothing changed. The fleet takes silence longer
than `ut` (sent as SenML `ut`, SPEC.md "Telemetry") as a dead node, so a quiet sensor behind a deadband
must still report. Every publish (a change or a heartbeat) calls mark(now); due(now) says when the next
one is owed.

Times are seconds (or any unit, consistently) from a monotonic clock that does not wrap; the caller
reads the clock (house rule 1). The three live in one module because the node keeps all of them for
every measurement: one module costs less heap than three.
"""

from agent.errors import AgentError


class Deadband:
    """Report-on-change filter with an absolute/relative band and optional spike rejection."""

    # Defaults at class level: an instance keeps only what differs (every measurement of the node has
    # a Deadband, most with neither a relative band nor spike rejection).
    relative = 0.0
    spike = None
    confirm = 3
    reported = None  # last value reported
    rejected = 0  # samples dropped as spikes
    _accepted = None  # last sample that was not a suspect
    _suspect = None  # first sample of the current run of suspects
    _suspects = 0

    def __init__(self, absolute=0.0, relative=0.0, spike=None, confirm=3):
        if absolute < 0 or relative < 0 or (spike is not None and spike <= 0):
            raise AgentError("deadband limits must be >= 0 (spike > 0)")
        if not isinstance(confirm, int) or confirm < 1:
            raise AgentError("deadband confirm must be an integer >= 1")
        self.absolute = absolute
        if relative:
            self.relative = relative
        if spike is not None:
            self.spike = spike
            self.confirm = confirm

    def update(self, value):
        """Feed one sample; return the value to report now, or None."""
        if value != value:
            raise AgentError("deadband got NaN: drop the reading before filtering")
        if self.spike is not None:
            ref = self._accepted
            if ref is not None and abs(value - ref) > self.spike:
                # A suspect: accepted only as the `confirm`-th of a run on one side of `ref`, each
                # within `spike` of the run's first.
                first = self._suspect
                if self._suspects and (value > ref) == (first > ref) and abs(value - first) <= self.spike:
                    self._suspects += 1
                else:
                    self.rejected += self._suspects
                    self._suspect = value
                    self._suspects = 1
                if self._suspects < self.confirm:
                    return None
            else:
                self.rejected += self._suspects  # the run that ended here was a spike
            self._accepted = value
            self._suspects = 0
        last = self.reported
        if last is not None:  # runs for every sample: no float made that is not needed
            if value == last:
                return None
            band = self.absolute
            if self.relative:
                band = max(band, self.relative * abs(last))
            if (value - last if value > last else last - value) < band:
                return None
        self.reported = value
        return value

    def mark(self, value):
        """Record `value` as reported by someone else (a heartbeat sent it)."""
        self.reported = value


class RateLimit:
    """One report per `window` time units; offers inside the window are held, the newest wins."""

    superseded = 0  # held values replaced by a newer one before they were sent
    holding = False  # True while a value waits for its window
    _last = None  # time of the last report
    _held = None

    def __init__(self, window):
        if window < 0:
            raise AgentError("rate limit window must be >= 0")
        self.window = window

    def offer(self, value, now):
        """Offer `value` at `now`; return it when it may be sent now, else hold it and return None."""
        if self._last is None or now - self._last >= self.window:
            self._last = now
            if self.holding:  # a newer value replaces the held one, which is now stale
                self.superseded += 1
                self.holding = False
                self._held = None
            return value
        if self.holding:
            self.superseded += 1
        self._held = value
        self.holding = True
        return None

    def due(self, now):
        """True when a held value waits and its window has ended."""
        return self.holding and now - self._last >= self.window

    def poll(self, now):
        """Return the held value when due (and count it as a report at `now`), else None."""
        if not self.due(now):
            return None
        value = self._held
        self._held = None
        self.holding = False
        self._last = now
        return value


class Heartbeat:
    """Tracks the last publish; due once `ut` seconds passed (at once before the first publish)."""

    last = None

    def __init__(self, ut):
        if ut <= 0:
            raise AgentError("heartbeat ut must be > 0 seconds, not %r" % (ut,))
        self.ut = ut

    def mark(self, now):
        """Record a publish at `now`."""
        self.last = now

    def due(self, now):
        """True when a publish is owed at `now`."""
        return self.last is None or now - self.last >= self.ut
