"""The sensing interface every kind sensor implements, and make_sensor() that builds one from a board.

A kind sensor owns its drivers and turns chip readings into physical quantities:

    setup()            configure the chips; raises SensorFault (chip missing, wrong identity)
    sample(now_ms)     read the chips, update the filters; raises SensorFault. `now_ms` is
                       time.ticks_ms() (it wraps: differences go through ticks_diff)
    values()           dict quantity name -> float, only the quantities known so far (a new dict)
    events()           list of momentary events (name, value) since the last call, e.g. ("lift", 2.1);
                       bounded: at most MAX_EVENTS are kept, the overflow is counted in events_dropped
    moving()           True while a value changes or sits near an alarm threshold (set_thresholds):
                       the scheduler samples fast then
    calibrate()        measure at installation (blocking, a second or so); returns the calibration
                       dict to store, which make_sensor() takes back at the next start
    interval_ms(fast)  default sampling period for the fast and the slow rate

A SensorFault from sample() is for the caller to record (health: last sensor fault) and retry on the
next sample; the sensors re-run setup() after an I/O fault, so a chip that comes back is reconfigured.

Quantities (UNITS): manhole "tilt" deg, "accel" m/s2; water "level" cm, "rise" cm/min, "dist" mm;
wind "wind" m/s, "gust" m/s, "wind10" m/s, "load" N.
"""

from agent.errors import AgentError

MANHOLE = "manhole-tilt"
WATER = "water-level"
WIND = "wind-load"
KINDS = (MANHOLE, WATER, WIND)

UNITS = {"tilt": "deg", "accel": "m/s2", "level": "cm", "rise": "cm/min", "dist": "mm",
         "wind": "m/s", "gust": "m/s", "wind10": "m/s", "load": "N"}

MAX_EVENTS = 8


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
        self.near_margin = 0.15  # "near": within 15 % of a threshold
        self.fault = None  # code of the last SensorFault

    def setup(self):
        """Configure the chips."""

    def sample(self, now_ms):
        """Read the chips and update the filters."""
        raise NotImplementedError

    def values(self):
        """Quantity name -> float, for the quantities known so far."""
        return dict(self._values)

    def events(self):
        """Momentary events since the last call, oldest first."""
        out = self._events
        self._events = []
        return out

    def _event(self, name, value):
        if len(self._events) >= MAX_EVENTS:
            self.events_dropped += 1
            return
        self._events.append((name, value))

    def set_thresholds(self, thresholds):
        """Alarm levels to watch (quantity name -> level); near() is True close to any of them."""
        self._thresholds = dict(thresholds)

    def near(self):
        """True when a value is within near_margin of a watched threshold."""
        for name, level in self._thresholds.items():
            value = self._values.get(name)
            if value is None:
                continue
            if abs(value - level) <= self.near_margin * abs(level):
                return True
        return False

    def changing(self):
        """True while a value is moving (kind-specific)."""
        return False

    def moving(self):
        """True while a value changes or sits near a threshold."""
        return self.changing() or self.near()

    def calibrate(self):
        """Measure at installation; returns the calibration dict."""
        return {}

    def interval_ms(self, fast):
        """Default sampling period (ms) for the fast or the slow rate."""
        return self.FAST_MS if fast else self.SLOW_MS


def make_sensor(kind, board, calibration=None):
    """The kind sensor for `kind` on `board` (firmware/boards/<board>/board.py), chips not touched yet.

    `calibration` is the dict a previous calibrate() returned (or None). Optional board attributes:
    disable_irq()/enable_irq(state) (machine's, to protect the HX711 read) and HX711_MAX_HIGH_US.
    """
    calibration = calibration or {}
    if kind == MANHOLE:
        from agent.lis3dh import LIS3DH
        from agent.manhole import ManholeSensor

        return ManholeSensor(LIS3DH(board.i2c()), board.accel_int_pin(), calibration)
    if kind == WATER:
        from agent.a02yyuw import A02YYUW
        from agent.water import WaterSensor

        return WaterSensor(A02YYUW(board.level_uart()), calibration)
    if kind == WIND:
        from agent.anemometer import Anemometer
        from agent.hx711 import HX711, MAX_HIGH_US
        from agent.wind import WindSensor

        clock, data = board.hx711_pins()
        cell = HX711(clock, data, disable_irq=getattr(board, "disable_irq", None),
                     enable_irq=getattr(board, "enable_irq", None),
                     max_high_us=getattr(board, "HX711_MAX_HIGH_US", MAX_HIGH_US))
        return WindSensor(Anemometer(board.anemometer_pin()), cell, calibration)
    raise AgentError("unknown sensor kind %r: use one of %s" % (kind, ", ".join(KINDS)))
