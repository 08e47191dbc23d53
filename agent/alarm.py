"""Alarm: a threshold with hysteresis, confirmed in both directions, that reports transitions as events;
AlarmStore: the set of active alarms on flash, so a reboot neither raises an alarm twice nor loses one.

Direction follows the thresholds, as in the config (SPEC.md "Config" key 3): raise_at > clear_at watches
high values ("above": raised at value >= raise_at, cleared at value <= clear_at), raise_at < clear_at low
ones ("below", mirrored). Equal thresholds are refused: the gap is the hysteresis that stops flapping.

Confirmation. A transition needs an unbroken run of samples past its threshold that lasts at least
`confirm` seconds (first to latest sample of the run) AND counts at least `samples` samples. Any sample
back inside breaks the run, so a spike shorter than the confirm time never raises and a dip never clears.
Clearing has its own `clear_confirm`/`clear_samples` (default: the raise values). While a run is being
confirmed, `since` holds the time of its first sample (None otherwise).

The event carries the value that confirmed it, the threshold and `since`: the time of the FIRST sample of
the confirming run, when the condition began, not when it was confirmed.

Levels (warning/alarm) are separate Alarm instances, one per config entry, each with its `level`
(1 warning, 2 alarm, as the Event message): water-level has "flood_warn" at 150 mm and "flood" at 270 mm.

Times are seconds (int or float) from a clock the caller reads; across a reboot use restore().

AlarmStore. At boot, restore() marks the stored alarms active without an event: one still past its
threshold stays quiet, one that cleared while the node was off goes through the normal clear confirmation
and is cleared exactly once. After each event the caller first puts the event in the outbox, then calls
sync(): a power cut between the two repeats the event after the reboot (the fleet sees a duplicate, never
a loss). File: the active names, one per line, sorted, in flashio's atomic CRC-checked format. It is
written only when the set changes (a few writes per alarm, never per sample).
"""

from agent import flashio
from agent.errors import AgentError

CLEARED = 0
RAISED = 1


class AlarmEvent:
    """A confirmed transition: fields as the Event message (SPEC.md "Event")."""

    def __init__(self, name, state, level, value, threshold, since):
        self.name = name
        self.state = state
        self.level = level
        self.value = value
        self.threshold = threshold
        self.since = since


class Alarm:
    """One alarm rule on measurement `measure`; update() returns an AlarmEvent on a confirmed transition."""

    # The state at class level until it first changes: an instance then keeps fewer attributes, and
    # the node keeps an Alarm per configured alarm.
    active = False
    since = None  # time of the first sample of the current run past the threshold
    _run = 0  # samples in that run

    def __init__(self, name, measure, raise_at, clear_at, confirm=0, level=2, samples=1,
                 clear_confirm=None, clear_samples=None):
        if raise_at == clear_at:
            raise AgentError("alarm %s: raise and clear thresholds must differ (hysteresis)" % name)
        if confirm < 0 or (clear_confirm is not None and clear_confirm < 0):
            raise AgentError("alarm %s: confirm time must be >= 0" % name)
        if samples < 1 or (clear_samples is not None and clear_samples < 1):
            raise AgentError("alarm %s: confirm sample count must be >= 1" % name)
        if level not in (1, 2):
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

    def update(self, value, now):
        """Feed one sample taken at `now`; return an AlarmEvent when a transition is confirmed, else None."""
        if value != value:  # NaN: no information, leave the run as it is
            return None
        # past the threshold that would change the state: raise_at while inactive, clear_at while active
        if self.active:
            threshold, need_time, need_n = self.clear_at, self.clear_confirm, self.clear_samples
            past = value <= threshold if self.above else value >= threshold
        else:
            threshold, need_time, need_n = self.raise_at, self.confirm, self.samples
            past = value >= threshold if self.above else value <= threshold
        if not past:
            if self._run:  # a run broken (since is set exactly while _run counts)
                self.since = None
                self._run = 0
            return None
        if self.since is None:
            self.since = now
        self._run += 1
        if self._run < need_n or now - self.since < need_time:
            return None
        self.active = not self.active
        since = self.since
        self.since = None
        self._run = 0
        return AlarmEvent(self.name, RAISED if self.active else CLEARED, self.level, value, threshold, since)

    def restore(self, active):
        """Set the state kept across a reboot (AlarmStore) without an event; any pending run is dropped."""
        self.active = bool(active)
        self.since = None
        self._run = 0


class AlarmStore:
    """Active alarm names persisted at `path`."""

    def __init__(self, path):
        self.path = path
        self._saved = None  # the names as last written or read, sorted list

    def load(self):
        """The alarm names stored as active (empty when none or unreadable)."""
        data = flashio.read(self.path)
        names = []
        if data:
            for line in data.decode().split("\n"):
                if line:
                    names.append(line)
        names.sort()
        self._saved = names
        return names

    def restore(self, alarms):
        """Mark the stored alarms of `alarms` (name -> Alarm) active; return the names restored.

        Names no longer configured are forgotten at the next sync().
        """
        restored = []
        for name in self.load():
            alarm = alarms.get(name)
            if alarm is not None:
                alarm.restore(True)
                restored.append(name)
        return restored

    def sync(self, alarms):
        """Write the active set of `alarms` (name -> Alarm) if it changed; True when written."""
        names = [name for name, alarm in alarms.items() if alarm.active]
        names.sort()
        if names == self._saved:
            return False
        flashio.write(self.path, "\n".join(names).encode())
        self._saved = names
        return True
