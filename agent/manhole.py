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

Events. |a| far below 1 g means the cover is falling or being yanked up (free fall reads 0 g): a
"lift" event below LIFT_G = 0.4 g. |a| far above 1 g is a blow (a lorry wheel on a loose cover): an
"impact" above IMPACT_G = 1.6 g; the chip's +-2 g range clips each axis at 2 g, so the magnitude
saturates at 2*sqrt(3) g. One event per excursion, with its magnitude in m/s^2; the excursion ends when
|a| is back within the rest band of 1 g.

Wake-up. The LIS3DH activity interrupt (INT1, latched) fires on any change above WAKE_MG = 160 mg. Its
handler sets `woken` and an asyncio ThreadSafeFlag (`flag`, None where asyncio lacks it, as in CPython)
that the sampler awaits besides its timer, so a lift is sampled at once even on the slow schedule.
"""

import math

from agent.errors import SensorFault
from agent.sensing import Sensor

try:
    from micropython import const
except ImportError:  # CPython (tests, tools): const() is the value itself
    from copy import copy as const  # type: ignore[assignment, no-redef]

_G = const(9.80665)  # m/s^2 per g
_LIFT_G = const(0.4)
_IMPACT_G = const(1.6)
_REST_BAND_G = const(0.1)
_ALPHA = const(0.3)
_WAKE_MG = const(160)
_TILT_MOVING_DEG = const(0.5)  # a change per sample larger than this counts as moving


def tilt_deg(a, b):
    """Angle in degrees between 3-vectors a and b (atan2 of |a x b| and a . b)."""
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
        self.base = (cal.get("base_x", 0.0), cal.get("base_y", 0.0), cal.get("base_z", 1.0))
        self._accel = accel
        self._pin = int_pin
        self._ready = False
        self._gravity = None  # low-passed gravity vector in g, a list reused
        self._excursion = None  # "lift" / "impact" while one lasts
        self._tilt_prev = None
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
        """Read one acceleration vector; update tilt, |a| and the events."""
        try:
            if not self._ready:
                self.setup()
            if self.woken:
                self.woken = False
                self._accel.clear_int()
            x, y, z = self._accel.read_g()
        except SensorFault as fault:
            self._ready = False
            self.fault = fault.code
            raise
        mag = math.sqrt(x * x + y * y + z * z)
        self._values["accel"] = mag * _G
        rest = abs(mag - 1.0) <= _REST_BAND_G
        kind = "lift" if mag < _LIFT_G else "impact" if mag > _IMPACT_G else None
        if kind is not None and kind != self._excursion:
            self._event(kind, mag * _G)
            self._excursion = kind
        elif kind is None and rest:
            self._excursion = None
        if not rest:
            self._changing = True
            return
        g = self._gravity
        if g is None:
            self._gravity = [x, y, z]
        else:
            g[0] += _ALPHA * (x - g[0])
            g[1] += _ALPHA * (y - g[1])
            g[2] += _ALPHA * (z - g[2])
        tilt = tilt_deg(self._gravity, self.base)
        self._values["tilt"] = tilt
        prev = self._tilt_prev
        self._changing = prev is not None and abs(tilt - prev) > _TILT_MOVING_DEG
        self._tilt_prev = tilt

    def changing(self):
        """Moving while the tilt changes, during an excursion, or after a wake-up not yet sampled."""
        return self._changing or self._excursion is not None or self.woken


def make(board, calibration):
    """The sensor of a manhole-tilt node (make_sensor()): the LIS3DH on the board's I2C, its INT1 pin."""
    from agent.lis3dh import LIS3DH

    return ManholeSensor(LIS3DH(board.i2c()), board.accel_int_pin(), calibration)
