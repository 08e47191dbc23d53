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
except ImportError:

    def ticks_diff(a, b):  # type: ignore[no-redef]
        return a - b


from agent.sensing import WIND, Sensor
from agent.sensor_fault import SensorFault

SECONDS = 600  # 10 minutes of 1-s values
MINUTES = 10
SCALE = 720.0  # counts per newton
LOAD_SILENCE_MS = 2000  # an HX711 converts at 10 or 80 Hz: 2 s without data is a fault
MOVING_WIND = 8.0  # m/s (Beaufort 5): from here the gusts matter, sample every second
MOVING_STEP = 1.0  # m/s change of the 3-s mean between samples


class WindStats:
    """1-second speed values -> 3-s running mean, gust (max 3-s mean) and 10-minute mean."""

    def __init__(self):
        self._sec = array("H", bytes(2 * SECONDS))  # cm/s
        self._i = 0
        self.count = 0
        self._sum = 0
        self._minute = array("H", bytes(2 * MINUTES))  # highest 3-s mean per minute, cm/s
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
        self._i = (self._i + 1) % SECONDS
        if self.count < SECONDS:
            self.count += 1
        if self.count >= 3:
            i = self._i
            m3 = (sec[(i - 1) % SECONDS] + sec[(i - 2) % SECONDS] + sec[(i - 3) % SECONDS]) // 3
            self.mean3 = m3 / 100.0
            if m3 > self._minute[self._m]:
                self._minute[self._m] = m3
        self._in_minute += 1
        if self._in_minute >= 60:
            self._in_minute = 0
            self._m = (self._m + 1) % MINUTES
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

    KIND = WIND
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
        self.scale = cal.get("scale", SCALE)
        self.stats = WindStats()
        self._prev_ms = None
        self._load_ms = None
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
        self._sample_wind(now_ms)
        if self._cell is not None:
            try:
                self._sample_load(now_ms)
            except SensorFault as fault:
                self.fault = fault.code
                raise

    def _sample_wind(self, now_ms):
        if self._prev_ms is None:
            self._prev_ms = now_ms
            self._anemo.poll(now_ms)  # sets the reference edge and time
            return
        elapsed = ticks_diff(now_ms, self._prev_ms)
        if elapsed < 500:
            return  # too early for a 1-s value; the pulses stay counted for the next sample
        speed = self._anemo.speed(now_ms)
        self._prev_ms = now_ms
        secs = (elapsed + 500) // 1000
        stats = self.stats
        before = stats.mean3
        for _ in range(min(secs, SECONDS)):
            stats.push(speed)
        self._values["wind"] = speed
        self._values["wind10"] = stats.mean10()
        if stats.mean3 is not None:
            self._values["gust"] = stats.gust()
        self._step = 0.0 if before is None or stats.mean3 is None else abs(stats.mean3 - before)

    def _sample_load(self, now_ms):
        if self._load_ms is None:
            self._load_ms = now_ms
        cell = self._cell
        if cell.ready():
            raw = cell.read_raw()
            if raw is not None:
                self._values["load"] = (raw - self.tare) / self.scale
                self._load_ms = now_ms
                return
        silent = ticks_diff(now_ms, self._load_ms)
        if silent > LOAD_SILENCE_MS:
            self._load_ms = now_ms  # report once per silence period, not on every sample
            raise SensorFault("hx711_timeout", "no conversion for %d ms" % silent, True)

    def changing(self):
        """Moving in fresh wind (>= MOVING_WIND) or while the 3-s mean jumps by MOVING_STEP."""
        wind = self._values.get("wind", 0.0)
        return wind >= MOVING_WIND or self._step >= MOVING_STEP

    def calibrate(self, readings=10):
        """Tare the load cell (mean of `readings` conversions with no wind load)."""
        if self._cell is None:
            return {"wind_factor": self._anemo.factor}
        self._cell.setup()
        self.tare = self._cell.average(readings)
        return {"tare": self.tare, "scale": self.scale, "wind_factor": self._anemo.factor}

    def calibrate_span(self, newtons, readings=10):
        """Set the scale from a known load of `newtons` applied after tare; returns the calibration."""
        if self._cell is None or newtons == 0:
            raise ValueError("span calibration needs a load cell and a non-zero known load")
        self.scale = (self._cell.average(readings) - self.tare) / newtons
        return {"tare": self.tare, "scale": self.scale, "wind_factor": self._anemo.factor}
