"""What a simulated device measures: the emulator's scenarios (tools/boardemu/scenarios) turned into
wire values per sensor kind, with each device's own small offsets so the fleet is not one curve.

The series, their interpolation and the gust shape are the emulator's (`tools.boardemu.hardware`), so
a simulated billboard in the typhoon reads what an emulated one reads; quantities a scenario has no
series for keep the emulator's defaults. Values are in wire units as the agent reports them
(agent/reporter.py WIRE): level mm (integer), tilt deg, accel m/s2, wind/gust m/s, load N (two decimals).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from tools.boardemu.api import scenario_path
from tools.boardemu.hardware.physics import AIR_DENSITY, DRAG_COEFF, QUANTITIES, gust
from tools.boardemu.hardware.scenario import Scenario

G = 9.81  # m/s2 per g

#: registry kind -> [(wire name, SenML unit or None for a catalogue name)] in pack order
MEASURES: dict[str, list[tuple[str, str | None]]] = {
    "water-level": [("level", None)],
    "manhole-tilt": [("tilt", None), ("accel", "m/s2")],
    "wind-load": [("wind", None), ("gust", "m/s"), ("load", None)],
}
#: registry kind -> the sensor kind a birth names (agent/app.py KIND_NAMES)
SENSOR = {"manhole-tilt": "manhole", "water-level": "water", "wind-load": "billboard"}
KINDS = tuple(MEASURES)


def load(name: str | Path) -> Scenario:
    """A shipped scenario by name (quiet-day, rainstorm, typhoon, manhole-lift) or a JSON file."""
    return Scenario.load(scenario_path(name))


class Variation:
    """One device's place in the city: a time offset into the scenario, a scale on its quantities, a
    noise level and a gust phase. Drawn from `rnd`, so a seed gives the same fleet every run; without
    one, the scenario itself (no offset, scale 1, no noise)."""

    __slots__ = ("offset", "scale", "noise", "seed")

    def __init__(self, rnd: random.Random | None = None, spread_s: float = 60.0) -> None:
        self.offset, self.scale, self.noise, self.seed = 0.0, 1.0, 0.0, 0
        if rnd is not None:
            self.offset = rnd.uniform(-spread_s, spread_s)
            self.scale = rnd.uniform(0.85, 1.15)
            self.noise = rnd.uniform(0.5, 1.5)
            self.seed = rnd.randrange(1 << 16)


class Weather:
    """The scenario as every device of the fleet sees it, at scenario time `st` (looped past its end)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.duration = max(scenario.duration_s, 1.0)

    def quantity(self, name: str, st: float) -> float:
        """Quantity `name` (emulator name and unit) at scenario time st, the emulator's default when the
        scenario has no series for it."""
        if name in self.scenario.series:
            return self.scenario.value(name, st % self.duration)
        return QUANTITIES[name][0]

    def values(self, kind: str, st: float, var: Variation, rnd: random.Random) -> list[tuple[str, float, str | None]]:
        """[(wire name, value, unit)] of a `kind` device at scenario time st."""
        t = st + var.offset
        q = self.quantity
        noise = var.noise
        if kind == "water-level":
            # a fifth of the surface ripple: the agent filters most of it (agent/water.py median); a guess,
            # good enough for load, not a model of the filter
            level_cm = max(0.0, q("level_cm", t) * var.scale + rnd.gauss(0, q("ripple_cm", t) * 0.2 * noise))
            return [("level", int(round(level_cm * 10)), None)]
        if kind == "manhole-tilt":
            tilt = max(0.0, q("tilt_deg", t) * var.scale + abs(rnd.gauss(0, 0.2 * noise)))
            vibration = math.hypot(q("vibration_g", t), q("accel_noise_mg", t) / 1000.0)
            accel = G + rnd.gauss(0, vibration * G * noise)
            return [("tilt", round(tilt, 2), None), ("accel", round(accel, 2), "m/s2")]
        if kind == "wind-load":
            mean = q("wind_mps", t) * var.scale
            gusting = max(0.0, mean + q("gust_mps", t) * var.scale * gust(t, var.seed))
            load = 0.5 * AIR_DENSITY * DRAG_COEFF * QUANTITIES["area_m2"][0] * gusting * gusting
            return [("wind", round(mean, 2), None), ("gust", round(gusting, 2), "m/s"), ("load", round(load, 2), None)]
        raise ValueError("unknown kind %r; use one of %s" % (kind, ", ".join(KINDS)))

    def battery_mv(self, st: float) -> int:
        """Battery voltage in mV (the health message's unit)."""
        return int(round(self.quantity("battery_v", st) * 1000))

    def rssi(self, st: float) -> int:
        """Link quality in dBm, -127..0 as the health message allows."""
        return max(-127, min(0, int(round(self.quantity("rssi_dbm", st)))))
