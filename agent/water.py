"""Street water level from an ultrasonic ranger looking down from a pole (A02YYUW).

Level. The ranger hangs at a fixed height H above the street (mounting height, measured by
calibrate() as the distance to the dry street). Water of depth h shortens the echo path to d = H - h,
so  level = H - d. It is reported in cm and never below 0 (a dry street reads around H, within the
sensor's +-1 cm; a negative depth has no meaning).

Single echoes. A passing car, a leaf or a raindrop returns one short echo among good ones. A running
median over `median_n` (odd, default 5) distances removes any burst shorter than half the window,
where a mean would smear it into the level.

Rate of rise (cm/min) is the least-squares slope of the filtered level against time over the last
`rise_window_ms` (at most `rise_points` points):  slope = sum((t-tm)(y-ym)) / sum((t-tm)^2), which
uses every point in the window instead of the two ends, so the ranger's millimetre noise averages out.
It needs at least RISE_MIN_POINTS points spanning RISE_MIN_SPAN_MS.
"""

try:
    from time import sleep_ms, ticks_diff, ticks_ms
except ImportError:
    from time import monotonic_ns, sleep  # type: ignore[attr-defined]

    def ticks_ms():
        return monotonic_ns() // 1000000

    def ticks_diff(a, b):  # type: ignore[no-redef]
        return a - b

    def sleep_ms(ms):  # type: ignore[misc]
        sleep(ms / 1000)


from agent.sensing import WATER, Sensor
from agent.sensor_fault import SensorFault

MEDIAN_N = 5
RISE_WINDOW_MS = 120000
RISE_POINTS = 32
RISE_MIN_POINTS = 3
RISE_MIN_SPAN_MS = 5000
RISE_MOVING = 0.5  # cm/min: faster than this counts as moving
STEP_MOVING_CM = 1.0  # a change of the level per sample larger than this counts as moving


class Median:
    """Running median of the last n values (n odd); allocates its buffers once."""

    def __init__(self, n=MEDIAN_N):
        if n < 1 or n % 2 == 0:
            raise ValueError("median window must be odd and >= 1")
        self._ring = [0] * n
        self._sorted = [0] * n
        self._i = 0
        self.count = 0

    def push(self, value):
        """Add a value; return the median of the values held (the middle of those so far)."""
        ring = self._ring
        n = len(ring)
        ring[self._i] = value
        self._i = (self._i + 1) % n
        if self.count < n:
            self.count += 1
        m = self.count
        s = self._sorted
        for k in range(m):  # insertion sort into the scratch list: no allocation
            v = ring[k]
            j = k
            while j > 0 and s[j - 1] > v:
                s[j] = s[j - 1]
                j -= 1
            s[j] = v
        return s[m // 2]


class Slope:
    """Least-squares slope of y against t (ms, ticks) over a time window, in y units per minute."""

    def __init__(self, points=RISE_POINTS, window_ms=RISE_WINDOW_MS):
        self._t = [0] * points
        self._y = [0.0] * points
        self._i = 0
        self.count = 0
        self.window_ms = window_ms

    def add(self, t_ms, y):
        """Add the point (t_ms, y)."""
        self._t[self._i] = t_ms
        self._y[self._i] = y
        self._i = (self._i + 1) % len(self._t)
        if self.count < len(self._t):
            self.count += 1

    def per_minute(self, now_ms):
        """Slope in units/min over the points inside the window, or None with too few points."""
        n = 0
        st = sy = 0.0
        oldest = 0
        for k in range(self.count):
            age = ticks_diff(now_ms, self._t[k])
            if age <= self.window_ms:
                n += 1
                st += age
                sy += self._y[k]
                if age > oldest:
                    oldest = age
        if n < RISE_MIN_POINTS or oldest < RISE_MIN_SPAN_MS:
            return None
        tm, ym = st / n, sy / n
        num = den = 0.0
        for k in range(self.count):
            age = ticks_diff(now_ms, self._t[k])
            if age <= self.window_ms:
                dt = age - tm
                num += dt * (self._y[k] - ym)
                den += dt * dt
        # age runs backwards in time, hence the minus sign
        return -num / den * 60000.0 if den > 0 else None


class WaterSensor(Sensor):
    """Water level over the street from `ranger` (an A02YYUW); calibration {"mount_mm": H}."""

    KIND = WATER
    FAST_MS = 2000
    SLOW_MS = 60000

    def __init__(self, ranger, calibration=None, median_n=MEDIAN_N, rise_points=RISE_POINTS,
                 rise_window_ms=RISE_WINDOW_MS, sleep=None, ticks=None):
        Sensor.__init__(self)
        self._ranger = ranger
        self.mount_mm = (calibration or {}).get("mount_mm")
        self._median = Median(median_n)
        self._slope = Slope(rise_points, rise_window_ms)
        self._sleep = sleep or sleep_ms
        self._ticks = ticks or ticks_ms
        self._step = 0.0

    def sample(self, now_ms):
        """Take the newest valid distance (if a frame came) through the median into level and rise."""
        try:
            mm = self._ranger.poll(now_ms)
        except SensorFault as fault:
            self.fault = fault.code
            raise
        if mm is None:
            return
        dist = self._median.push(mm)
        self._values["dist"] = float(dist)
        if self.mount_mm is None:
            return  # not calibrated: the level has no reference yet
        level = (self.mount_mm - dist) / 10.0
        if level < 0.0:
            level = 0.0
        prev = self._values.get("level")
        self._step = 0.0 if prev is None else abs(level - prev)
        self._values["level"] = level
        self._slope.add(now_ms, level)
        rise = self._slope.per_minute(now_ms)
        if rise is not None:
            self._values["rise"] = rise

    def changing(self):
        """Moving while the level rises or falls faster than RISE_MOVING or jumps by a centimetre."""
        rise = self._values.get("rise")
        return self._step > STEP_MOVING_CM or (rise is not None and abs(rise) > RISE_MOVING)

    def calibrate(self, readings=9, timeout_ms=5000):
        """Measure the mounting height over the dry street: median of `readings` valid distances."""
        med = Median(readings)
        got = 0
        dist = None
        start = self._ticks()
        while got < readings:
            now = self._ticks()
            if ticks_diff(now, start) > timeout_ms:
                raise SensorFault("level_calibration", "%d of %d readings in %d ms" % (got, readings, timeout_ms))
            mm = self._ranger.poll(now)
            if mm is not None:
                dist = med.push(mm)
                got += 1
            else:
                self._sleep(50)
        self.mount_mm = dist
        return {"mount_mm": dist}
