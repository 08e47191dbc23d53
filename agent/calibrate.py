"""Calibration at installation: what provisioning measures once, with the sensor in place.

This runs on the board only while it is being provisioned (fleet provision calls `run(sensor)` through
the REPL), so it lives here and not in the sensor modules: the running node never loads it.

- manhole-tilt: the baseline gravity vector, the mean of `samples` readings at rest about 20 ms apart;
  refused ("manhole_not_at_rest", transient) when the mean is not within 0.1 g of 1 g (the cover moved).
- water-level: the mounting height over the dry street, the median of `readings` valid distances;
  "level_calibration" when they do not come within `timeout_ms`.
- wind-load: the load cell's tare, the mean of `readings` conversions with no wind load; span() then
  sets the scale (counts per newton) from a known load applied after the tare.

`sleep` and `ticks` stand in for time.sleep_ms / time.ticks_ms in tests.
"""

import math

from agent.errors import SensorFault

try:
    from time import sleep_ms, ticks_diff, ticks_ms
except ImportError:  # CPython (tests, tools): a millisecond clock that does not wrap
    from operator import sub as ticks_diff  # type: ignore[assignment, no-redef]
    from time import monotonic_ns, sleep  # type: ignore[attr-defined]

    ticks_ms = lambda: monotonic_ns() // 1000000  # noqa: E731
    sleep_ms = lambda ms: sleep(ms / 1000)  # noqa: E731

#: The sensors' quantities (Sensor.values()) and their units, for a technician's eyes (fleet provision).
UNITS = {"tilt": "deg", "accel": "m/s2", "level": "cm", "rise": "cm/min", "dist": "mm",
         "wind": "m/s", "gust": "m/s", "wind10": "m/s", "load": "N"}


def run(sensor, *args, **kw):
    """The calibration of `sensor`'s kind; returns the dict make_sensor() takes back at the next start."""
    if sensor.KIND == "manhole-tilt":
        return manhole(sensor, *args, **kw)
    if sensor.KIND == "water-level":
        return water(sensor, *args, **kw)
    if sensor.KIND == "wind-load":
        return wind(sensor, *args, **kw)
    return {}


def manhole(sensor, samples=32, sleep=None):
    """Record the baseline orientation of a ManholeSensor (agent/manhole.py)."""
    sleep = sleep or sleep_ms
    if not sensor._ready:
        sensor.setup()
    sx = sy = sz = 0.0
    for _ in range(samples):
        x, y, z = sensor._accel.read_g()
        sx += x
        sy += y
        sz += z
        sleep(20)
    bx, by, bz = sx / samples, sy / samples, sz / samples
    mag = math.sqrt(bx * bx + by * by + bz * bz)
    if abs(mag - 1.0) > 0.1:
        raise SensorFault("manhole_not_at_rest", "mean |a| = %.2f g" % mag, True)
    sensor.set_base(bx, by, bz)
    return {"base_x": bx, "base_y": by, "base_z": bz}


def water(sensor, readings=9, timeout_ms=5000, sleep=None, ticks=None):
    """Measure the mounting height of a WaterSensor (agent/water.py) over the dry street."""
    from agent.water import Median

    sleep = sleep or sleep_ms
    ticks = ticks or ticks_ms
    med = Median(readings)
    got = 0
    dist = None
    start = ticks()
    while got < readings:
        now = ticks()
        if ticks_diff(now, start) > timeout_ms:
            raise SensorFault("level_calibration", "%d of %d readings in %d ms" % (got, readings, timeout_ms))
        mm = sensor._ranger.poll(now)
        if mm is not None:
            dist = med.push(mm)
            got += 1
        else:
            sleep(50)
    sensor.mount_mm = dist
    return {"mount_mm": dist}


def wind(sensor, readings=10):
    """Tare the load cell of a WindSensor (agent/wind.py); without a cell, just the anemometer factor."""
    cell = sensor._cell
    if cell is None:
        return {"wind_factor": sensor._anemo.factor}
    cell.setup()
    sensor.tare = average(cell, readings)
    return {"tare": sensor.tare, "scale": sensor.scale, "wind_factor": sensor._anemo.factor}


def span(sensor, newtons, readings=10):
    """Set a WindSensor's scale from a known load of `newtons` applied after tare."""
    if sensor._cell is None or newtons == 0:
        raise ValueError("span calibration needs a load cell and a non-zero known load")
    sensor.scale = (average(sensor._cell, readings) - sensor.tare) / newtons
    return {"tare": sensor.tare, "scale": sensor.scale, "wind_factor": sensor._anemo.factor}


def average(cell, n=10, timeout_ms=500):
    """Mean of n good conversions of an HX711 (agent/hx711.py); discarded ones are retried, up to 2n."""
    total = 0
    good = 0
    for _ in range(2 * n):
        value = cell.read(timeout_ms)
        if value is not None:
            total += value
            good += 1
            if good == n:
                break
    if good == 0:
        raise SensorFault("hx711_garbage", "no good conversion in %d reads" % (2 * n))
    return total / good
