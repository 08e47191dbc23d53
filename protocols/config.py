"""Config: the versioned desired state of a device, published retained (SPEC.md "Config").

The device applies a document whose version differs from the one in force and acks it with the version it
applied; a retained copy delivered again after a reconnect is acked without being applied twice.
"""

from protocols import fields
from protocols.errors import ProtocolError
from protocols.message import Command
from protocols.senml import check_name


class Alarm:
    """One alarm rule on measurement `measure`: raise when the value crosses `raise_at` and stays there
    for `confirm` seconds, clear when it crosses back past `clear_at`. `raise_at` > `clear_at` watches for
    high values, `raise_at` < `clear_at` for low ones; the gap is the hysteresis that stops flapping."""

    def __init__(self, measure, raise_at, clear_at, confirm, level) -> None:
        self.measure = check_name(fields.text(measure, "measure", 32))
        self.raise_at = fields.number(raise_at, "raise")
        self.clear_at = fields.number(clear_at, "clear")
        if raise_at == clear_at:
            raise ProtocolError("bad_field", "raise and clear thresholds must differ (hysteresis)")
        self.confirm = fields.uint(confirm, "confirm", 86400)
        self.level = fields.choice(level, "level", (1, 2))

    def to_obj(self) -> dict:
        """Keys 0 measure, 1 raise, 2 clear, 3 confirm (s), 4 level."""
        return {0: self.measure, 1: self.raise_at, 2: self.clear_at, 3: self.confirm, 4: self.level}

    @classmethod
    def from_obj(cls, obj, name: str = "alarm") -> "Alarm":
        """Validate a decoded alarm map."""
        obj = fields.as_map(obj, name)
        need = fields.require
        return cls(need(obj, 0, "measure"), need(obj, 1, "raise"), need(obj, 2, "clear"),
                   need(obj, 3, "confirm"), need(obj, 4, "level"))


def _period(value, name):
    if fields.uint(value, name, 86400) == 0:
        raise ProtocolError("bad_field", "%s must be at least 1 second" % name)
    return value


def _deadband(value, name):
    if fields.number(value, name) < 0:
        raise ProtocolError("bad_field", "%s must not be negative" % name)
    return value


def _calibration(value, name):
    if not isinstance(value, list) or len(value) != 2:
        raise ProtocolError("bad_field", "%s must be [scale, offset]" % name)
    return [fields.number(value[0], name + " scale"), fields.number(value[1], name + " offset")]


class Config(Command):
    """Desired state `version` (>= 1): alarms by name, sample periods, heartbeat, deadbands, calibration.

    Every table is keyed by measurement name (alarms: by alarm name); a measurement without an entry keeps
    the firmware's default.
    """

    KIND = "config"

    def __init__(self, cid, version, alarms=None, sample=None, heartbeat=None, deadband=None,
                 calibration=None) -> None:
        super().__init__(cid)
        if fields.uint(version, "version") == 0:
            raise ProtocolError("bad_field", "config version starts at 1")
        self.version = version
        self.alarms = fields.table(alarms or {}, "alarms", lambda item, name: _alarm(item, name))
        self.sample = fields.table(sample or {}, "sample", _period)
        self.heartbeat = None if heartbeat is None else _period(heartbeat, "heartbeat")
        self.deadband = fields.table(deadband or {}, "deadband", _deadband)
        self.calibration = fields.table(calibration or {}, "calibration", _calibration)

    def to_obj(self) -> dict:
        """Key 2 version, 3 alarms, 4 sample periods, 5 heartbeat, 6 deadbands, 7 calibration."""
        out = self.header()
        out[2] = self.version
        if self.alarms:
            out[3] = {name: alarm.to_obj() for name, alarm in self.alarms.items()}
        for key, table in ((4, self.sample), (6, self.deadband), (7, self.calibration)):
            if table:
                out[key] = table
        fields.put(out, 5, self.heartbeat)
        return out

    @classmethod
    def from_obj(cls, obj) -> "Config":
        """Validate a decoded config map."""
        obj, _, cid = cls.read_header(obj, "config")
        return cls(cid, fields.require(obj, 2, "version"), obj.get(3), obj.get(4), obj.get(5), obj.get(6),
                   obj.get(7))


def _alarm(item, name):
    return item if isinstance(item, Alarm) else Alarm.from_obj(item, name)
