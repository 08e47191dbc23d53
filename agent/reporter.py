"""Reporter: turns each sample's values into confirmed alarm events and compact telemetry in the outbox.

Per measurement, a value goes to telemetry when it moved past its deadband (a real step is accepted after
a few consistent samples, agent/filters.py), at most once per `min_gap_s` (the rate limit still sends
the newest held value when its window ends) and at least every heartbeat `ut` seconds. All readings of one
sample go into one SenML pack. Alarms see every sample. Everything goes through the flash outbox first,
so an outage loses nothing; the event is in the outbox before the alarm state is persisted, so a power
cut between the two can repeat an event (dropped by seq at the fleet) but never lose one.

Wire units: the sensors report the water level in cm (agent/sensing.py); the wire and the alarm
thresholds use mm (protocols/SPEC.md), and the rate of rise goes out in m/s (cm/min is no SenML unit).
A calibration in the config (key 7: [scale, offset] per measurement, value = raw x scale + offset) is
applied to the wire value, before alarms and telemetry see it.
"""

from agent import transient
from agent.alarm import AlarmStore
from protocols import up
from protocols.senml_pack import PackBuilder

# Outbox record kinds (one byte in each record): the up topic each record is published on.
TELEMETRY = 0
EVENT = 1
KIND_TOPIC = ("telemetry", "event", "health", "ack", "ota")  # outbox record kind -> up type

_PLAIN = (1.0, None, False)  # the entries that are alike share one tuple: each costs heap
_MS = (1.0, "m/s", False)
#: measurement -> (scale to wire units, SenML unit or None for catalogue names, integer on the wire)
WIRE = {
    "level": (10.0, None, True),        # cm -> mm
    "rise": (1 / 6000.0, "m/s", False),  # cm/min -> m/s
    "dist": (1.0, "mm", True),
    "tilt": _PLAIN,
    "accel": (1.0, "m/s2", False),
    "wind": _PLAIN,
    "gust": _MS,
    "wind10": _MS,
    "load": _PLAIN,
}


def wire_value(name, value):
    """A sensor quantity's value in wire units."""
    scale, _, integer = WIRE.get(name, _PLAIN)
    if scale != 1.0:  # each float an expression makes is a heap object: none that is not needed
        value = value * scale
    if integer:
        return int(round(value))
    # Two decimals are far below any of these sensors' accuracy and keep floats half-precision-friendly.
    return round(value, 2)


def calibrated(name, wire, cal):
    """A wire value after the config's calibration (key 7) `cal` = (scale, offset): wire * scale + offset."""
    value = wire * cal[0] + cal[1]
    return int(round(value)) if WIRE.get(name, _PLAIN)[2] else round(value, 2)


def to_wire(name, value):
    """(value in wire units, unit) of a sensor quantity."""
    return wire_value(name, value), WIRE.get(name, _PLAIN)[1]


class Reporter:
    """Owns the alarms and report filters of one node; `sample()` feeds them, the outbox receives."""

    def __init__(self, config, outbox, sequence, alarm_path, min_gap_s=2):
        self.config = config
        self.outbox = outbox
        self.sequence = sequence
        self.store = AlarmStore(alarm_path)
        self.min_gap_s = min_gap_s
        self.pack = PackBuilder(8)  # one reading per measurement and sample: a kind has at most 4
        self.alarms = {}
        self.measures = config.measures  # what goes on the wire; the rest is diagnostic
        self.send_ut = True  # SPEC: ut goes in the first pack after a (re)birth and whenever it changes
        self.last = {}  # wire name -> last wire value, for rebirth and health
        self._wire = {}  # name -> this sample's value in wire units (one dict, reused)
        self.events = 0
        self._ut = None
        self.channels = {}  # measurement -> (Deadband, RateLimit, Heartbeat), built by agent/reconfig.py
        self.cal = {}  # measurement -> (scale, offset): the config's calibration (key 7), where it has one
        transient.call(_build, self)


    def sample(self, values, now):
        """Feed one sample (sensor units) taken at epoch second `now`; return the number of alarm events."""
        # Runs for every sample (ten a second on a manhole): keys are iterated, not items(), as
        # MicroPython makes a tuple per item; each wire value is computed once.
        raised = 0
        wire = self._wire
        for name in values:
            wire[name] = wire_value(name, values[name])
        cal = self.cal
        for name in cal:  # empty unless the fleet calibrates a measurement in the field
            if name in values:
                wire[name] = calibrated(name, wire[name], cal[name])
        alarms = self.alarms
        for name in alarms:
            alarm = alarms[name]
            if alarm.measure not in values:
                continue
            event = alarm.update(wire[alarm.measure], now)
            if event is None:
                continue
            seq = self.sequence.next()
            payload = up.event(self.sequence.boot, seq, event.name, event.state, event.level, event.value,
                               event.threshold, int(event.since))
            self.outbox.append(EVENT, seq, payload)
            raised += 1
        if raised:
            self.events += raised
            self.store.sync(self.alarms)  # after the events are in the outbox (agent/alarm.py)
        for name in values:
            if name not in self.measures:
                continue
            value = wire[name]
            if self._due(name, value, now):
                self.pack.add(name, value, now, WIRE.get(name, _PLAIN)[1])
                self.last[name] = value
        self.flush()
        return raised

    def _due(self, name, wire, now):
        deadband, limit, heartbeat = self.channels[name]
        moved = deadband.update(wire) is not None
        if limit.poll(now) is not None:  # the newest value held back by the rate limit is due
            return True
        if moved and limit.offer(wire, now) is not None:
            heartbeat.mark(now)
            return True
        if heartbeat.due(now):
            heartbeat.mark(now)
            deadband.mark(wire)
            return True
        return False

    def force(self, now):
        """Put the latest value of every measurement in the next pack (rebirth)."""
        for name, wire in self.last.items():
            unit = WIRE.get(name, _PLAIN)[1]
            self.pack.add(name, wire, now, unit)
        self.send_ut = True
        self.flush()

    def flush(self):
        """Write the collected readings as one telemetry message to the outbox."""
        if not self.pack.count:
            return
        records = self.pack.pack(self._ut if self.send_ut else None)
        self.pack.clear()
        self.send_ut = False
        seq = self.sequence.next()
        self.outbox.append(TELEMETRY, seq, up.telemetry(self.sequence.boot, seq, records))


def _build(reporter):
    # The alarms and filters of the config in force (agent/reconfig.py, loaded for this call), then the
    # alarm states kept across the reboot.
    from agent import reconfig

    reconfig.reload(reporter)
    reporter.store.restore(reporter.alarms)
