"""Heartbeat: publish at least every `ut` seconds, even when nothing changed.

The fleet takes silence longer than `ut` (sent as SenML `ut`, SPEC.md "Telemetry") as a dead node, so a
quiet sensor behind a deadband must still report. Every publish (a change or a heartbeat) calls mark(now);
due(now) says when the next one is owed. Times are seconds from a monotonic clock the caller reads.
"""

from agent.errors import AgentError


class Heartbeat:
    """Tracks the last publish; due once `ut` seconds passed (at once before the first publish)."""

    def __init__(self, ut):
        self.set_ut(ut)
        self.last = None

    def set_ut(self, ut):
        """Change the period (config key 5)."""
        if ut <= 0:
            raise AgentError("heartbeat ut must be > 0 seconds, not %r" % (ut,))
        self.ut = ut

    def mark(self, now):
        """Record a publish at `now`."""
        self.last = now

    def due(self, now):
        """True when a publish is owed at `now`."""
        return self.last is None or now - self.last >= self.ut

    def next_due(self, now):
        """Time the next heartbeat is owed (`now` if it is owed already)."""
        if self.last is None:
            return now
        return max(now, self.last + self.ut)
