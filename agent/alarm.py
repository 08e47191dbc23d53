"""Alarm: a threshold with hysteresis, confirmed in both directions, that reports transitions as events.

Direction follows the thresholds, as in the config (SPEC.md "Config" key 3): raise_at > clear_at watches
high values ("above": raised at value >= raise_at, cleared at value <= clear_at), raise_at < clear_at low
ones ("below", mirrored). Equal thresholds are refused: the gap is the hysteresis that stops flapping.

Confirmation. A transition needs an unbroken run of samples past its threshold that lasts at least
`confirm` seconds (first to latest sample of the run) AND counts at least `samples` samples. Any sample
back inside breaks the run, so a spike shorter than the confirm time never raises and a dip never clears.
Clearing has its own `clear_confirm`/`clear_samples` (default: the raise values).

The event carries the value that confirmed it, the threshold and `since`: the time of the FIRST sample of
the confirming run, when the condition began, not when it was confirmed.

Levels (warning/alarm) are separate Alarm instances, one per config entry, each with its `level`
(1 warning, 2 alarm, as the Event message): water-level has "flood_warn" at 150 mm and "flood" at 270 mm.

Times are seconds (int or float) from a clock the caller reads; across a reboot use restore().
"""

from agent.errors import AgentError

CLEARED = 0
RAISED = 1
WARNING = 1
ALARM = 2


class AlarmEvent:
    """A confirmed transition: fields as the Event message (SPEC.md "Event")."""

    def __init__(self, name, state, level, value, threshold, since):
        self.name = name
        self.state = state
        self.level = level
        self.value = value
        self.threshold = threshold
        self.since = since

    def __repr__(self):
        return "AlarmEvent(%r, %s, level=%d, value=%r, threshold=%r, since=%r)" % (
            self.name, "raised" if self.state else "cleared", self.level, self.value, self.threshold,
            self.since)


class Alarm:
    """One alarm rule on measurement `measure`; update() returns an AlarmEvent on a confirmed transition."""

    def __init__(self, name, measure, raise_at, clear_at, confirm=0, level=ALARM, samples=1,
                 clear_confirm=None, clear_samples=None):
        if raise_at == clear_at:
            raise AgentError("alarm %s: raise and clear thresholds must differ (hysteresis)" % name)
        if confirm < 0 or (clear_confirm is not None and clear_confirm < 0):
            raise AgentError("alarm %s: confirm time must be >= 0" % name)
        if samples < 1 or (clear_samples is not None and clear_samples < 1):
            raise AgentError("alarm %s: confirm sample count must be >= 1" % name)
        if level not in (WARNING, ALARM):
            raise AgentError("alarm %s: level must be 1 (warning) or 2 (alarm)" % name)
        self.name = name
        self.measure = measure
        self.raise_at = raise_at
        self.clear_at = clear_at
        self.above = raise_at > clear_at
        self.level = level
        self.confirm = confirm
        self.samples = samples
        self.clear_confirm = confirm if clear_confirm is None else clear_confirm
        self.clear_samples = samples if clear_samples is None else clear_samples
        self.active = False
        self._since = None  # time of the first sample of the current run past the threshold
        self._run = 0  # samples in that run

    def _past(self, value):
        # past the threshold that would change the state: raise_at while inactive, clear_at while active
        if self.active:
            return value <= self.clear_at if self.above else value >= self.clear_at
        return value >= self.raise_at if self.above else value <= self.raise_at

    def update(self, value, now):
        """Feed one sample taken at `now`; return an AlarmEvent when a transition is confirmed, else None."""
        if value != value:  # NaN: no information, leave the run as it is
            return None
        if not self._past(value):
            self._since = None
            self._run = 0
            return None
        if self._since is None:
            self._since = now
        self._run += 1
        if self.active:
            need_time, need_n, threshold = self.clear_confirm, self.clear_samples, self.clear_at
        else:
            need_time, need_n, threshold = self.confirm, self.samples, self.raise_at
        if self._run < need_n or now - self._since < need_time:
            return None
        self.active = not self.active
        since = self._since
        self._since = None
        self._run = 0
        return AlarmEvent(self.name, RAISED if self.active else CLEARED, self.level, value, threshold, since)

    @property
    def pending(self):
        """True while a run past the threshold is being confirmed."""
        return self._since is not None

    def restore(self, active):
        """Set the state kept across a reboot (AlarmStore) without an event; any pending run is dropped."""
        self.active = bool(active)
        self._since = None
        self._run = 0

    def describe(self):
        """Config map of this rule (SPEC.md "Config" key 3 entry, plus the agent keys 5..7)."""
        return {0: self.measure, 1: self.raise_at, 2: self.clear_at, 3: self.confirm, 4: self.level,
                5: self.clear_confirm, 6: self.samples, 7: self.clear_samples}


def from_entry(name, entry):
    """Alarm built from a config entry {0 measure, 1 raise, 2 clear, 3 confirm s, 4 level, 5..7 optional}."""
    return Alarm(name, entry[0], entry[1], entry[2], entry.get(3, 0), entry.get(4, ALARM),
                 entry.get(6, 1), entry.get(5), entry.get(7))
