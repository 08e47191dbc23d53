"""Backoff: how long to wait before the next reconnect attempt.

Exponential backoff with "full jitter": the n-th consecutive failure waits a uniformly random time in
[0, min(cap, base * 2**n)). Spreading the waits over the whole interval keeps a fleet of nodes that lost
the broker together from reconnecting in lockstep when it returns (the thundering herd). The cap is a
minute (issue 4) so a node never waits longer than that once the broker is back.
"""

from agent.errors import AgentError


class Backoff:
    """Delays for consecutive failures; `random` returns a float in [0, 1) (injected for tests)."""

    def __init__(self, random=None, base=1.0, cap=60.0):
        if random is None:
            import random as _random  # MicroPython has random.random() on the ports we run on

            random = _random.random
        if not 0 < base <= cap:
            raise AgentError("backoff needs 0 < base <= cap, got base=%r cap=%r" % (base, cap))
        self._random = random
        self.base = base
        self.cap = cap
        self.failures = 0

    def ceiling(self):
        """Upper bound of the next delay in seconds: base doubled per failure so far, at most cap."""
        # Stop doubling once past the cap so the exponent (and the float) stay small after many failures.
        c = self.base
        for _ in range(self.failures):
            c *= 2
            if c >= self.cap:
                return self.cap
        return c

    def next(self):
        """Delay in seconds before the next attempt; counts one more failure."""
        delay = self._random() * self.ceiling()
        self.failures += 1
        return delay

    def reset(self):
        """Start again from `base` (after a connection that worked)."""
        self.failures = 0
