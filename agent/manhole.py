"""Manhole cover: tilt from its installed orientation, and lift/impact events (LIS3DH underneath).

Tilt. At rest the accelerometer measures only gravity, a vector of 1 g fixed in the street. When the
cover tilts, that vector turns in the chip's frame by the same angle. calibrate() records the baseline
vector b (mean of N samples at rest, after installation); the tilt is the angle between b and the
current gravity estimate a:  tilt = atan2(|a x b|, a . b)  (in degrees). atan2 of cross and dot
product is used instead of acos(a.b / |a||b|) because acos loses precision near 0 degrees, exactly
where the alarm threshold sits. The mounting orientation does not matter: no axis has to be vertical.

The gravity estimate is a low-pass (exponential mean, weight `alpha`) of samples whose magnitude is
within `rest_band_g` of 1 g: a sample during a knock or a lift measures motion plus gravity, so it
does not move the tilt estimate.

Events. |a| far below 1 g means the cover is falling or being yanked up (free fall reads 0 g): a
"lift" event below `lift_g`. |a| far above 1 g is a blow (a lorry wheel on a loose cover): an
"impact" above `impact_g`; the chip's +-2 g range clips each axis at 2 g, so the magnitude saturates
at 2*sqrt(3) g. One event per excursion, with its magnitude in m/s^2; the excursion ends when |a| is
back within `rest_band_g` of 1 g.

Wake-up. The LIS3DH activity interrupt (INT1, latched) fires on any change above `wake_mg`. Its handler
sets `woken` and an asyncio ThreadSafeFlag (`flag`, None where asyncio lacks it, as in CPython) that
the sampler awaits besides its timer, so a lift is sampled at once even on the slow schedule.
"""

import math

from agent.sensing import MANHOLE, Sensor
from agent.sensor_fault import SensorFault

G = 9.80665  # m/s^2 per g
LIFT_G = 0.4
IMPACT_G = 1.6
REST_BAND_G = 0.1
ALPHA = 0.3
WAKE_MG = 160
TILT_MOVING_DEG = 0.5  # a change per sample larger than this counts as moving
CAL_SAMPLES = 32


def tilt_deg(a, b):
    """Angle in degrees between 3-vectors a and b (atan2 of |a x b| and a . b)."""
    cx = a[1] * b[2] - a[2] * b[1]
    cy = a[2] * b[0] - a[0] * b[2]
    cz = a[0] * b[1] - a[1] * b[0]
    dot = a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
    return math.degrees(math.atan2(math.sqrt(cx * cx + cy * cy + cz * cz), dot))


def _make_flag():
    try:
        from asyncio import ThreadSafeFlag
    except ImportError:
        return None
    return ThreadSafeFlag()


def _sleep_ms(ms):
    try:
        from time import sleep_ms
    except ImportError:
        from time import sleep

        sleep(ms / 1000)
        return
    sleep_ms(ms)


class ManholeSensor(Sensor):
    """Tilt and lift/impact from `accel` (an LIS3DH); `int_pin` is its INT1 line or None."""

    KIND = MANHOLE
    FAST_MS = 100
    SLOW_MS = 10000

    def __init__(self, accel, int_pin=None, calibration=None, lift_g=LIFT_G, impact_g=IMPACT_G,
                 rest_band_g=REST_BAND_G, alpha=ALPHA, wake_mg=WAKE_MG, sleep=None):
        Sensor.__init__(self)
        cal = calibration or {}
        self.base = (cal.get("base_x", 0.0), cal.get("base_y", 0.0), cal.get("base_z", 1.0))
        self._accel = accel
        self._pin = int_pin
        self.lift_g = lift_g
        self.impact_g = impact_g
        self.rest_band_g = rest_band_g
        self.alpha = alpha
        self.wake_mg = wake_mg
        self._sleep = sleep or _sleep_ms
        self._ready = False
        self._gravity = None  # low-passed gravity vector in g, a list reused
        self._excursion = None  # "lift" / "impact" while one lasts
        self._tilt_prev = None
        self._changing = False
        self.woken = False
        self.wakes = 0
        self.flag = _make_flag() if int_pin is not None else None
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
            self._accel.enable_activity_int(self.wake_mg)
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
        self._values["accel"] = mag * G
        self._track_events(mag)
        if abs(mag - 1.0) <= self.rest_band_g:
            g = self._gravity
            if g is None:
                self._gravity = [x, y, z]
            else:
                a = self.alpha
                g[0] += a * (x - g[0])
                g[1] += a * (y - g[1])
                g[2] += a * (z - g[2])
            tilt = tilt_deg(self._gravity, self.base)
            self._values["tilt"] = tilt
            prev = self._tilt_prev
            self._changing = prev is not None and abs(tilt - prev) > TILT_MOVING_DEG
            self._tilt_prev = tilt
        else:
            self._changing = True

    def _track_events(self, mag):
        if mag < self.lift_g:
            kind = "lift"
        elif mag > self.impact_g:
            kind = "impact"
        else:
            kind = None
        if kind is not None and kind != self._excursion:
            self._event(kind, mag * G)
            self._excursion = kind
        elif kind is None and abs(mag - 1.0) <= self.rest_band_g:
            self._excursion = None

    def changing(self):
        """Moving while the tilt changes, during an excursion, or after a wake-up not yet sampled."""
        return self._changing or self._excursion is not None or self.woken

    def calibrate(self, samples=CAL_SAMPLES):
        """Record the baseline orientation: mean of `samples` readings at rest (about 20 ms apart).

        Raises SensorFault "manhole_not_at_rest" when the mean is not close to 1 g (the cover moved).
        """
        if not self._ready:
            self.setup()
        sx = sy = sz = 0.0
        for _ in range(samples):
            x, y, z = self._accel.read_g()
            sx += x
            sy += y
            sz += z
            self._sleep(20)
        bx, by, bz = sx / samples, sy / samples, sz / samples
        mag = math.sqrt(bx * bx + by * by + bz * bz)
        if abs(mag - 1.0) > self.rest_band_g:
            raise SensorFault("manhole_not_at_rest", "mean |a| = %.2f g" % mag, True)
        self.base = (bx, by, bz)
        self._gravity = [bx, by, bz]
        self._tilt_prev = None
        self._values["tilt"] = 0.0
        return {"base_x": bx, "base_y": by, "base_z": bz}
