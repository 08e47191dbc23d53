"""Street water level from an ultrasonic ranger looking down from a pole (A02YYUW).

Level. The ranger hangs at a fixed height H above the street (mounting height, measured by
calibrate() as the distance to the dry street). Water of depth h shortens the echo path to d = H - h,
so  level = H - d. It is reported in cm and never below 0 (a dry street reads around H, within the
sensor's +-1 cm; a negative depth has no meaning).

Single echoes. A passing car, a leaf or a raindrop returns one short echo among good ones. A running
median over 5 distances removes any burst shorter than half the window, where a mean would smear it
into the level.

Rate of rise (cm/min) is the least-squares slope of the filtered level against time over the last
2 minutes (at most 32 points):  slope = sum((t-tm)(y-ym)) / sum((t-tm)^2), which uses every point in
the window instead of the two ends, so the ranger's millimetre noise averages out. It needs at least
3 points spanning 5 s. The points are kept in two arrays (ticks as 32-bit ints, levels as doubles),
so they cost no float objects on the heap.
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

_MEDIAN_N = const(5)
_RISE_WINDOW_MS = const(120000)
_RISE_POINTS = const(32)
_RISE_MIN_POINTS = const(3)
_RISE_MIN_SPAN_MS = const(5000)
_RISE_MOVING = const(0.5)  # cm/min: faster than this counts as moving
_STEP_MOVING_CM = const(1.0)  # a change of the level per sample larger than this counts as moving


class Median:
    """Running median of the last n values (n odd); allocates its buffers once."""

    def __init__(self, n=_MEDIAN_N):
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
    """Least-squares slope of y against t (ms, ticks) over a time window, in y units per minute.

    The points live in two arrays allocated once: 12 bytes a point, where lists would cost 32 (a list
    slot for each value and a boxed float for each y).
    """

    def __init__(self, points=_RISE_POINTS, window_ms=_RISE_WINDOW_MS):
        self._t = array("i", bytes(4 * points))  # ticks_ms wraps at 2**30: a 32-bit int holds it
        self._y = array("d", bytes(8 * points))
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
        if n < _RISE_MIN_POINTS or oldest < _RISE_MIN_SPAN_MS:
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

    KIND = "water-level"
    FAST_MS = 2000
    SLOW_MS = 60000

    def __init__(self, ranger, calibration=None):
        Sensor.__init__(self)
        self._ranger = ranger
        self.mount_mm = (calibration or {}).get("mount_mm")
        self._median = Median()
        self._slope = Slope()
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
        """Moving while the level rises or falls faster than 0.5 cm/min or jumps by a centimetre."""
        rise = self._values.get("rise")
        return self._step > _STEP_MOVING_CM or (rise is not None and abs(rise) > _RISE_MOVING)


def make(board, calibration):
    """The sensor of a water-level node (make_sensor()): the A02YYUW on the board's level UART."""
    from agent.a02yyuw import A02YYUW

    return WaterSensor(A02YYUW(board.level_uart()), calibration)
