"""The sensing interface every kind sensor implements, and make_sensor() that builds one from a board.

A kind sensor owns its drivers and turns chip readings into physical quantities:

    setup()            configure the chips; raises SensorFault (chip missing, wrong identity)
    sample(now_ms)     read the chips, update the filters; raises SensorFault. `now_ms` is
                       time.ticks_ms() (it wraps: differences go through ticks_diff)
    values()           dict quantity name -> float, only the quantities known so far: the sensor's own
                       dict, updated in place by sample() (read it, don't keep or change it)
    events()           list of momentary events (name, value) since the last call, e.g. ("lift", 2.1);
                       bounded: at most 8 are kept, the overflow is counted in events_dropped
    changing()         True while a value changes (kind-specific)
    moving()           True while a value changes or sits near an alarm threshold (set_thresholds):
                       the scheduler samples fast then
    interval_ms(fast)  default sampling period for the fast and the slow rate

A SensorFault from sample() is for the caller to record (health: last sensor fault) and retry on the
next sample; the sensors re-run setup() after an I/O fault, so a chip that comes back is reconfigured.

Calibration (measured once, at installation: the returned dict is what make_sensor() takes back at the
next start) is agent/calibrate.py's `run(sensor)`, which provisioning calls at the REPL: the running
node never loads it. The quantities and their units are in agent/calibrate.py's UNITS.
"""

from agent.errors import AgentError


class Sensor:
    """Base of the kind sensors: bounded event list, near-threshold test, default intervals."""

    KIND = ""
    FAST_MS = 1000
    SLOW_MS = 60000

    def __init__(self):
        self._values = {}
        self._events = []
        self.events_dropped = 0
        self._thresholds = {}
        self.fault = None  # code of the last SensorFault

    def setup(self):
        """Configure the chips."""

    def values(self):
        """Quantity name -> float, for the quantities known so far (the sensor's own dict: read only)."""
        return self._values

    def events(self):
        """Momentary events since the last call, oldest first."""
        out = self._events
        self._events = []
        return out

    def _event(self, name, value):
        if len(self._events) >= 8:  # at most 8 events wait: a burst of knocks must not fill the heap
            self.events_dropped += 1
            return
        self._events.append((name, value))

    def set_thresholds(self, thresholds):
        """Alarm levels to watch (quantity name -> level); near() is True close to any of them."""
        # name -> (lowest, highest) value that counts as near: computed once, as near() runs every sample
        self._thresholds = {}
        for name in thresholds:
            level = thresholds[name]
            band = 0.15 * abs(level)
            self._thresholds[name] = (level - band, level + band)

    def near(self):
        """True when a value is within 15 % of a watched threshold."""
        limits = self._thresholds
        for name in limits:
            value = self._values.get(name)
            if value is not None and limits[name][0] <= value <= limits[name][1]:
                return True
        return False

    def changing(self):
        """True while a value is moving (kind-specific)."""
        return False

    def moving(self):
        """True while a value changes or sits near a threshold."""
        return self.changing() or self.near()

    def interval_ms(self, fast):
        """Default sampling period (ms) for the fast or the slow rate."""
        return self.FAST_MS if fast else self.SLOW_MS


def make_sensor(kind, board, calibration=None):
    """The kind sensor for `kind` on `board` (firmware/boards/<board>/board.py), chips not touched yet.

    `calibration` is the dict agent/calibrate.py run() returned (or None). The kind's module builds it
    (its make(board, calibration)); only that module is imported, so a node keeps no other kind's code
    or names in its heap.
    """
    name = {"manhole-tilt": "manhole", "water-level": "water", "wind-load": "wind"}.get(kind)
    if name is None:
        raise AgentError("unknown sensor kind %r: use one of manhole-tilt, water-level, wind-load" % (kind,))
    return __import__("agent." + name, None, None, ("make",)).make(board, calibration or {})
