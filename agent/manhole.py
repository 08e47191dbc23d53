"""Manhole cover: tilt from its installed orientation, and lift/impact events (LIS3DH underneath).

Tilt. At rest the accelerometer measures only gravity, a vector of 1 g fixed in the street. When the
cover tilts, that vector turns in the chip's frame by the same angle. calibrate() records the baseline
vector b (mean of N samples at rest, after installation; agent/calibrate.py); the tilt is the angle
between b and the current gravity estimate a:  tilt = atan2(|a x b|, a . b)  (in degrees). atan2 of
cross and dot product is used instead of acos(a.b / |a||b|) because acos loses precision near 0 degrees,
exactly where the alarm threshold sits. The mounting orientation does not matter: no axis has to be
vertical.

The gravity estimate is a low-pass (exponential mean, weight ALPHA = 0.3) of samples whose magnitude is
within REST_BAND_G = 0.1 g of 1 g: a sample during a knock or a lift measures motion plus gravity, so it
does not move the tilt estimate.

Arithmetic. This runs ten times a second, and on MicroPython every float an expression makes is a new
heap object, while small ints are not. So the chip's readings stay integers (mg), |a| is compared
squared (mg^2), the gravity estimate is kept in 1/64 mg and the baseline as a vector of length 1024;
cross and dot product are integers scaled down by 2^12 before squaring, so every intermediate stays a
small int even on a 32-bit port (|g||b| <= 1.1 g * 64 * 1000 * 1024 < 2^27). That leaves a resolution
of about 0.004 degrees, and six floats per sample (|a| in m/s^2, the tilt, its change) instead of
about fifty.

Events. |a| far below 1 g means the cover is falling or being yanked up (free fall reads 0 g): a
"lift" event below LIFT_G = 0.4 g. |a| far above 1 g is a blow (a lorry wheel on a loose cover): an
"impact" above IMPACT_G = 1.6 g; the chip's +-2 g range clips each axis at 2 g, so the magnitude
saturates at 2*sqrt(3) g. One event per excursion, with its magnitude in m/s^2; the excursion ends when
|a| is back within the rest band of 1 g.

Wake-up. The LIS3DH activity interrupt (INT1, latched) fires on any change above WAKE_MG = 160 mg. Its
handler sets `woken` and an asyncio ThreadSafeFlag (`flag`, None where asyncio lacks it, as in CPython);
the agent waits on that flag and cuts the sampler's sleep short (agent/app.py), so a lift is sampled at
once even on the slow schedule.
"""

import math

from agent.errors import SensorFault
from agent.sensing import Sensor

try:
    from micropython import const
except ImportError:  # CPython (tests, tools): const() is the value itself
    from copy import copy as const  # type: ignore[assignment, no-redef]

_WAKE_MG = const(160)
_TILT_MOVING_DEG = const(0.5)  # a change per sample larger than this counts as moving
# LIFT_G, IMPACT_G and the rest band as limits on |a|^2 in mg^2: (400 mg)^2, (1600 mg)^2, (900 mg)^2 and
# (1100 mg)^2. ALPHA = 0.3 is the "* 3 // 10" in sample().
_LIFT_MG2 = const(160000)
_IMPACT_MG2 = const(2560000)
_REST_LO_MG2 = const(810000)
_REST_HI_MG2 = const(1210000)
_MS2_PER_MG = const(0.00980665)  # 9.80665 m/s^2 per g
_DEG_PER_RAD = const(57.29577951308232)
_BASE_LEN = const(1024)  # length of the integer baseline vector
_SHIFT = const(12)  # cross and dot product scaled down by 2^12 before squaring


def tilt_deg(a, b):
    """Angle in degrees between 3-vectors a and b (atan2 of |a x b| and a . b): the geometry of sample(),
    in floats."""
    cx = a[1] * b[2] - a[2] * b[1]
    cy = a[2] * b[0] - a[0] * b[2]
    cz = a[0] * b[1] - a[1] * b[0]
    dot = a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
    return math.degrees(math.atan2(math.sqrt(cx * cx + cy * cy + cz * cz), dot))


class ManholeSensor(Sensor):
    """Tilt and lift/impact from `accel` (an LIS3DH); `int_pin` is its INT1 line or None."""

    KIND = "manhole-tilt"
    FAST_MS = 100
    SLOW_MS = 10000

    def __init__(self, accel, int_pin=None, calibration=None):
        Sensor.__init__(self)
        cal = calibration or {}
        self._accel = accel
        self._pin = int_pin
        self._ready = False
        self._excursion = None  # "lift" / "impact" while one lasts
        self._changing = False
        self.woken = False
        self.wakes = 0
        self.flag = None
        if int_pin is not None:
            try:
                from asyncio import ThreadSafeFlag

                self.flag = ThreadSafeFlag()
            except ImportError:  # CPython's asyncio: the sampler sees `woken` at its next sample
                pass
        self._handler = self._on_int  # bound once: the IRQ must not allocate
        self.set_base(cal.get("base_x", 0.0), cal.get("base_y", 0.0), cal.get("base_z", 1.0), False)

    def set_base(self, x, y, z, level=True):
        """Take (x, y, z) in g as the baseline orientation (calibration); `level`: the cover is there now,
        so the tilt is 0 and the gravity estimate starts from the baseline."""
        self.base = (x, y, z)
        k = _BASE_LEN / (math.sqrt(x * x + y * y + z * z) or 1.0)
        self._b = [round(x * k), round(y * k), round(z * k)]
        # The low-passed gravity vector in 1/64 mg (ints, updated in place); None until a sample at rest.
        self._gravity = [round(x * 64000), round(y * 64000), round(z * 64000)] if level else None
        self._tilt_prev = None
        if level:
            self._values["tilt"] = 0.0

    def _on_int(self, pin):
        self.woken = True
        self.wakes += 1
        if self.flag is not None:
            self.flag.set()

    def setup(self):
        """Start the chip, arm the activity interrupt and attach its IRQ handler."""
        self._ready = False
        self._accel.setup()
        if self._pin is not None:
            self._accel.enable_activity_int(_WAKE_MG)
            self._pin.irq(trigger=self._pin.IRQ_RISING, handler=self._handler)
        self._ready = True

    def sample(self, now_ms):
        """Read one acceleration vector; update tilt, |a| and the events (see Arithmetic above)."""
        try:
            if not self._ready:
                self.setup()
            if self.woken:
                self.woken = False
                self._accel.clear_int()
            r = self._accel.read_raw()  # mg, a list the driver reuses
        except SensorFault as fault:
            self._ready = False
            self.fault = fault.code
            raise
        x, y, z = r[0], r[1], r[2]
        m2 = x * x + y * y + z * z
        accel = math.sqrt(m2) * _MS2_PER_MG
        self._values["accel"] = accel
        rest = _REST_LO_MG2 <= m2 <= _REST_HI_MG2
        kind = "lift" if m2 < _LIFT_MG2 else "impact" if m2 > _IMPACT_MG2 else None
        if kind is not None and kind != self._excursion:
            self._event(kind, accel)
            self._excursion = kind
        elif kind is None and rest:
            self._excursion = None
        if not rest:
            self._changing = True
            return
        g = self._gravity
        if g is None:
            g = self._gravity = [x << 6, y << 6, z << 6]
        else:  # g += ALPHA * (a - g), ALPHA = 3/10
            g[0] += ((x << 6) - g[0]) * 3 // 10
            g[1] += ((y << 6) - g[1]) * 3 // 10
            g[2] += ((z << 6) - g[2]) * 3 // 10
        b = self._b
        cx = (g[1] * b[2] - g[2] * b[1]) >> _SHIFT
        cy = (g[2] * b[0] - g[0] * b[2]) >> _SHIFT
        cz = (g[0] * b[1] - g[1] * b[0]) >> _SHIFT
        dot = (g[0] * b[0] + g[1] * b[1] + g[2] * b[2]) >> _SHIFT
        tilt = math.atan2(math.sqrt(cx * cx + cy * cy + cz * cz), dot) * _DEG_PER_RAD
        self._values["tilt"] = tilt
        prev = self._tilt_prev
        if prev is None:
            self._changing = False
        else:
            step = tilt - prev
            self._changing = step > _TILT_MOVING_DEG or step < -_TILT_MOVING_DEG
        self._tilt_prev = tilt

    def changing(self):
        """Moving while the tilt changes, during an excursion, or after a wake-up not yet sampled."""
        return self._changing or self._excursion is not None or self.woken


def make(board, calibration):
    """The sensor of a manhole-tilt node (make_sensor()): the LIS3DH on the board's I2C, its INT1 pin."""
    from agent.lis3dh import LIS3DH

    return ManholeSensor(LIS3DH(board.i2c()), board.accel_int_pin(), calibration)
