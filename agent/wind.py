"""Billboard wind: speed, gust and 10-minute mean from a cup anemometer, load from an HX711 cell.

Speed. v = f * factor (anemometer.py); each sample covers the time since the previous one and is
booked as that many 1-second values (rounded, at least 1), so a slow schedule still fills the
seconds ring; the fast schedule samples every second, the resolution of the gust definition.

Gust (WMO Guide to Instruments and Methods of Observation, No. 8, Vol. I §5.8.3): the highest 3-second
running mean of the speed in the reporting period, which is the 10 minutes of the mean. Every second
the mean of the last three 1-s values is taken; the highest per minute is kept for the last 9 whole
minutes plus the current one, so "gust" is the highest 3-s mean of the last 9 to 10 minutes.

10-minute mean: a ring of the last 600 1-s values in cm/s (array of 16-bit, 1.2 KB) with a running sum.

Load. F = (counts - tare) / scale: tare is the count with no wind (calibrate() averages it), scale the
counts per newton. Default scale 720 counts/N: a 2 mV/V cell rated 5 kN at 4.3 V excitation gives
8.6 mV at full load, and the HX711 at gain 128 resolves 2^23 counts per 20 mV.
"""

from array import array

try:
    from time import ticks_diff

    from micropython import const
except ImportError:  # CPython (tests, tools): a clock that does not wrap; const() is the value itself
    from copy import copy as const  # type: ignore[assignment, no-redef]
    from operator import sub as ticks_diff  # type: ignore[assignment, no-redef]

from agent.errors import SensorFault
from agent.sensing import Sensor

_SECONDS = const(600)  # 10 minutes of 1-s values
_MINUTES = const(10)
_SCALE = const(720.0)  # counts per newton
_LOAD_SILENCE_MS = const(2000)  # an HX711 converts at 10 or 80 Hz: 2 s of looks without data is a fault
_MOVING_WIND = const(8.0)  # m/s (Beaufort 5): from here the gusts matter, sample every second
_MOVING_STEP = const(1.0)  # m/s change of the 3-s mean between samples


class WindStats:
    """1-second speed values -> 3-s running mean, gust (max 3-s mean) and 10-minute mean."""

    def __init__(self):
        self._sec = array("H", bytes(2 * _SECONDS))  # cm/s
        self._i = 0
        self.count = 0
        self._sum = 0
        self._minute = array("H", bytes(2 * _MINUTES))  # highest 3-s mean per minute, cm/s
        self._m = 0
        self._in_minute = 0
        self.mean3 = None

    def push(self, speed):
        """Book one 1-second value (m/s)."""
        cs = int(speed * 100 + 0.5)
        if cs > 65535:
            cs = 65535
        sec = self._sec
        self._sum += cs - sec[self._i]
        sec[self._i] = cs
        self._i = (self._i + 1) % _SECONDS
        if self.count < _SECONDS:
            self.count += 1
        if self.count >= 3:
            i = self._i
            m3 = (sec[(i - 1) % _SECONDS] + sec[(i - 2) % _SECONDS] + sec[(i - 3) % _SECONDS]) // 3
            self.mean3 = m3 / 100.0
            if m3 > self._minute[self._m]:
                self._minute[self._m] = m3
        self._in_minute += 1
        if self._in_minute >= 60:
            self._in_minute = 0
            self._m = (self._m + 1) % _MINUTES
            self._minute[self._m] = 0

    def gust(self):
        """Highest 3-s mean (m/s) of the last 9-10 minutes, None before the first 3 s."""
        if self.mean3 is None:
            return None
        return max(self._minute) / 100.0

    def mean10(self):
        """Mean speed (m/s) of the last 10 minutes (of what has been seen when less)."""
        if self.count == 0:
            return None
        return self._sum / self.count / 100.0


class WindSensor(Sensor):
    """Wind from `anemometer` (an Anemometer) and load from `cell` (an HX711, or None)."""

    KIND = "wind-load"
    FAST_MS = 1000
    SLOW_MS = 5000

    def __init__(self, anemometer, cell=None, calibration=None):
        Sensor.__init__(self)
        cal = calibration or {}
        self._anemo = anemometer
        if "wind_factor" in cal:
            anemometer.factor = cal["wind_factor"]
        self._cell = cell
        self.tare = cal.get("tare", 0.0)
        self.scale = cal.get("scale", _SCALE)
        self.stats = WindStats()
        self._prev_ms = None
        self._silent_ms = None  # when a look first found the HX711 with no conversion ready
        self._step = 0.0
        self._ready = False

    def setup(self):
        """Attach the anemometer IRQ; power the HX711 up."""
        self._ready = False
        self._anemo.setup()
        if self._cell is not None:
            self._cell.setup()
        self._ready = True

    def sample(self, now_ms):
        """Book the wind since the last sample, then read the load if a conversion is ready."""
        if not self._ready:
            self.setup()
        values = self._values
        elapsed = 0 if self._prev_ms is None else ticks_diff(now_ms, self._prev_ms)
        if self._prev_ms is None:
            self._prev_ms = now_ms
            self._anemo.poll(now_ms)  # sets the reference edge and time
        elif elapsed >= 500:  # earlier is too early for a 1-s value: the pulses stay counted
            speed = self._anemo.speed(now_ms)
            self._prev_ms = now_ms
            stats = self.stats
            before = stats.mean3
            for _ in range(min((elapsed + 500) // 1000, _SECONDS)):
                stats.push(speed)
            values["wind"] = speed
            values["wind10"] = stats.mean10()
            if stats.mean3 is not None:
                values["gust"] = stats.gust()
            self._step = 0.0 if before is None or stats.mean3 is None else abs(stats.mean3 - before)
        cell = self._cell
        if cell is None:
            return
        try:
            if cell.ready():
                # The chip answered. A word discarded as garbled (None) is the driver's to count: a run of
                # them is its own fault, hx711_garbage.
                self._silent_ms = None
                raw = cell.read_raw()
                if raw is not None:
                    values["load"] = (raw - self.tare) / self.scale
                return
            # Silence is timed from the first look that found no conversion, not from the last word: a
            # node busy elsewhere (a config change, a reconnect) for seconds has not heard a silent chip.
            first = self._silent_ms
            if first is None:
                self._silent_ms = now_ms
            elif ticks_diff(now_ms, first) > _LOAD_SILENCE_MS:
                self._silent_ms = now_ms  # report once per silence period, not on every sample
                raise SensorFault("hx711_timeout", "no conversion for %d ms" % ticks_diff(now_ms, first), True)
        except SensorFault as fault:
            self.fault = fault.code
            raise

    def changing(self):
        """Moving in fresh wind (>= 8 m/s) or while the 3-s mean jumps by 1 m/s between samples."""
        wind = self._values.get("wind", 0.0)
        return wind >= _MOVING_WIND or self._step >= _MOVING_STEP


def make(board, calibration):
    """The sensor of a wind-load node (make_sensor()). Optional board attributes: disable_irq() and
    enable_irq(state) (machine's, to protect the HX711 read) and HX711_MAX_HIGH_US."""
    from agent.anemometer import Anemometer
    from agent.hx711 import HX711

    clock, data = board.hx711_pins()
    cell = HX711(clock, data, disable_irq=getattr(board, "disable_irq", None),
                 enable_irq=getattr(board, "enable_irq", None),
                 max_high_us=getattr(board, "HX711_MAX_HIGH_US", None))
    return WindSensor(Anemometer(board.anemometer_pin()), cell, calibration)
