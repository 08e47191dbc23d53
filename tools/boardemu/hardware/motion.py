"""What the manhole cover's accelerometer feels: gravity in the tilted sensor frame, vibration,
sensor noise, and short transients (an impact when the cover drops back, free fall when it is lifted
and let go). All in g; the sensor's Z axis points up when the cover lies flat, so it reads +1 g."""

from __future__ import annotations

import math

IMPACT_S = 0.02
IMPACT_HZ = 80.0


class CoverMotion:
    """accel(t) for the LIS3DH; `world` gives tilt, vibration and noise; `rng` the randomness."""

    def __init__(self, world, rng):
        self._world = world
        self._rng = rng
        self._transients = []  # (start, end, kind, magnitude)

    def impact(self, t: float, g: float) -> None:
        """A shock of peak `g` along Z starting at t (a damped ring for 20 ms)."""
        self._transients.append((t, t + IMPACT_S, "impact", g))

    def freefall(self, t: float, seconds: float) -> None:
        """No gravity felt from t for `seconds`."""
        self._transients.append((t, t + seconds, "freefall", 0.0))

    def expire(self, t: float) -> None:
        self._transients = [tr for tr in self._transients if tr[1] > t - 1.0]

    def accel(self, t: float):
        v = self._world.value
        tilt, az = math.radians(v("tilt_deg", t)), math.radians(v("azimuth_deg", t))
        gx, gy, gz = math.sin(tilt) * math.cos(az), math.sin(tilt) * math.sin(az), math.cos(tilt)
        for start, end, kind, mag in self._transients:
            if start <= t < end:
                if kind == "freefall":
                    gx = gy = gz = 0.0
                else:
                    dt = t - start
                    gz += mag * math.exp(-dt / (IMPACT_S / 3)) * math.cos(2 * math.pi * IMPACT_HZ * dt)
        sigma = math.hypot(v("vibration_g", t), v("accel_noise_mg", t) / 1000.0)
        g = self._rng.gauss
        return (gx + g(0, sigma), gy + g(0, sigma), gz + g(0, sigma))
