"""The physical world around one emulated board: named quantities, their defaults, limits and parsing.

Every quantity is a number (or, for the chip fault switches, a word) that `boardemu set NAME=VALUE`,
`Hardware.set()` and scenario files change. The chip models read them through `World.value(name, t)`,
which returns the scenario's interpolated value while a scenario drives that quantity and the set
value otherwise. Wind gusts are a smooth, deterministic function of time layered on top of the mean
wind (`gust_mps` is their amplitude), so an anemometer and a load cell read the same gust.
"""

from __future__ import annotations

import math
import threading

#: Chip fault switches: "ok", "missing" (no answer) or "garbage" (answers nonsense).
CHIP_STATES = ("ok", "missing", "garbage")
CHIPS = ("lis3dh", "a02yyuw", "hx711", "anemometer")

# name: (default, low, high, unit and meaning)
QUANTITIES = {
    # manhole-tilt: the cover and its LIS3DH
    "tilt_deg": (0.0, 0.0, 180.0, "cover tilt from level, degrees"),
    "azimuth_deg": (0.0, -360.0, 360.0, "direction of the tilt in the sensor's X/Y plane, degrees"),
    "vibration_g": (0.0, 0.0, 8.0, "RMS vibration per axis (traffic, lifting), g"),
    "accel_noise_mg": (2.0, 0.0, 100.0, "LIS3DH output noise, RMS mg"),
    # water-level: the street and the A02YYUW above it
    "level_cm": (0.0, -500.0, 500.0, "water surface above the street, cm"),
    "mount_height_cm": (250.0, 5.0, 600.0, "sensor face above the street, cm"),
    "ripple_cm": (0.3, 0.0, 50.0, "surface ripple, RMS cm"),
    "level_spurious_rate": (0.0, 0.0, 1.0, "fraction of frames carrying a spurious echo"),
    "level_corrupt_rate": (0.0, 0.0, 1.0, "fraction of frames corrupted on the wire"),
    # wind-load: anemometer and HX711 on the billboard's support
    "wind_mps": (0.0, 0.0, 90.0, "mean wind speed, m/s"),
    "gust_mps": (0.0, 0.0, 40.0, "gust amplitude on top of the mean wind, m/s"),
    "anemometer_factor": (0.667, 0.05, 10.0, "m/s per Hz of reed pulses"),
    "area_m2": (6.0, 0.1, 100.0, "billboard area facing the wind, m^2"),
    "load_n": (float("nan"), -1e6, 1e6, "load on the support, N ('auto' = from wind and area)"),
    "hx711_offset": (120000.0, -8e6, 8e6, "HX711 counts at zero load (tare), channel A gain 128"),
    "hx711_scale": (50.0, -1e4, 1e4, "HX711 counts per newton, channel A gain 128"),
    "hx711_noise": (30.0, 0.0, 1e5, "HX711 noise, RMS counts"),
    # every board
    "battery_v": (3.95, 0.0, 5.0, "battery voltage (read on GPIO35 through a 2:1 divider), V"),
    "rssi_dbm": (-67.0, -120.0, 0.0, "link quality the modem reports, dBm"),
}

#: Air density (kg/m^3) and the drag coefficient of a flat plate broadside to the wind.
AIR_DENSITY = 1.225
DRAG_COEFF = 1.2


def parse(name: str, value) -> float | str:
    """The value `value` (str from the CLI, or a number) for quantity `name`; ValueError when bad."""
    if name in CHIPS:
        word = str(value).strip().lower()
        if word not in CHIP_STATES:
            raise ValueError("%s must be one of %s, not %r" % (name, ", ".join(CHIP_STATES), value))
        return word
    if name not in QUANTITIES:
        raise ValueError("unknown quantity %r; known: %s" % (name, ", ".join(sorted(QUANTITIES) + list(CHIPS))))
    _, low, high, _ = QUANTITIES[name]
    if name == "load_n" and str(value).strip().lower() == "auto":
        return float("nan")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("%s needs a number, not %r" % (name, value)) from None
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError("%s=%s is out of range %g..%g (%s)" % (name, value, low, high, QUANTITIES[name][3]))
    return number


def defaults() -> dict:
    """Every quantity at its default (chips all "ok")."""
    values: dict = {name: spec[0] for name, spec in QUANTITIES.items()}
    values.update({chip: "ok" for chip in CHIPS})
    return values


def gust(t: float, seed: int) -> float:
    """A smooth gust shape in about -1..1 at time t (s): three incommensurate waves, phases from seed."""
    p1, p2, p3 = (seed % 97) * 0.31, (seed % 89) * 0.53, (seed % 83) * 0.71
    return (0.5 * math.sin(2 * math.pi * t / 9.7 + p1) + 0.3 * math.sin(2 * math.pi * t / 3.9 + p2)
            + 0.2 * math.sin(2 * math.pi * t / 1.3 + p3))


class World:
    """The current physical quantities; thread-safe. A scenario player may drive some of them."""

    def __init__(self, values: dict | None = None, seed: int = 1):
        self._lock = threading.RLock()
        self._values = defaults()
        for name, value in (values or {}).items():
            try:
                self._values[name] = parse(name, value)
            except ValueError:
                pass  # a setting this version no longer knows (or a hand-edited file): keep the default
        self.seed = seed
        self._driver = None  # object with .drives(name) and .value(name, t), or None

    def set(self, values: dict, release: bool = True) -> dict:
        """Parse and apply `values` (all or nothing); returns the parsed values. A quantity the user
        sets (release=True) is no longer driven by the running scenario."""
        parsed = {name: parse(name, value) for name, value in values.items()}
        with self._lock:
            self._values.update(parsed)
            if release and self._driver is not None:
                self._driver.release(parsed)
        return parsed

    def drive(self, driver) -> None:
        """Let `driver` (a scenario player) supply values from now on; None to stop."""
        with self._lock:
            self._driver = driver

    def value(self, name: str, t: float):
        """The quantity `name` at monotonic time t."""
        with self._lock:
            driver = self._driver
            if driver is not None and driver.drives(name):
                return driver.value(name, t)
            return self._values[name]

    def wind(self, t: float) -> float:
        """Instantaneous wind speed (mean plus gust) in m/s, never negative."""
        v = self.value("wind_mps", t) + self.value("gust_mps", t) * gust(t, self.seed)
        return v if v > 0 else 0.0

    def load(self, t: float) -> float:
        """Load on the billboard support in N: set directly, or drag of the gusting wind on the board."""
        load = self.value("load_n", t)
        if math.isnan(load):
            v = self.wind(t)
            return 0.5 * AIR_DENSITY * DRAG_COEFF * self.value("area_m2", t) * v * v
        return load

    def snapshot(self, t: float) -> dict:
        """Every quantity now, JSON-friendly (load_n 'auto' when derived)."""
        out = {}
        for name in list(QUANTITIES) + list(CHIPS):
            value = self.value(name, t)
            out[name] = "auto" if isinstance(value, float) and math.isnan(value) else value
        out["wind_now_mps"] = round(self.wind(t), 3)
        out["load_now_n"] = round(self.load(t), 1)
        return out

    def settings(self) -> dict:
        """The set values (not the scenario's), for saving in the board's state folder."""
        with self._lock:
            return {k: ("auto" if isinstance(v, float) and math.isnan(v) else v) for k, v in self._values.items()}
