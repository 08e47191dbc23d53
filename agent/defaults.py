"""Firmware defaults per sensor kind, in the config document's shape (SPEC.md "Config"), so a config
from the fleet overrides them entry by entry.

Units are the wire catalogue's (SPEC.md "Telemetry"): tilt deg, level mm, wind/gust/wind10 m/s, load N;
plus the agent-side quantities accel m/s^2 and rise cm/min (agent/calibrate.py UNITS; note that the sensor
reports level in cm: the agent converts to mm before alarms and telemetry).

The numbers and why:
- manhole-tilt. "tilt" alarm at 15 deg, cleared at 12 deg: a seated cover reads < 1 deg, a cover lifted
  off its seat or pushed aside reads well past 15; 3 deg of hysteresis is six times the 0.5 deg noise of a
  filtered LIS3DH. Confirm 10 s: a lorry rocking a loose cover tilts it for < 2 s. "lift" when |a| falls
  below 3.9 m/s^2 (0.4 g, the driver's free-fall limit, agent/manhole.py LIFT_G) and "impact" past
  15.7 m/s^2 (1.6 g, IMPACT_G): both are momentary, so they raise on the first sample and clear after
  60 s back near 1 g (8.8 m/s^2 = 0.9 g, 11.8 m/s^2 = 1.2 g). Impact is a warning, lift an alarm.
- water-level. Warning "flood_warn" at 150 mm (15 cm: water over the kerb, 10-15 cm in most streets),
  "flood" alarm at 270 mm (27 cm: the door-sill height of a car, and where walking gets dangerous);
  each clears 30 mm lower. Confirm 30 s both ways: a passing car's bow wave lasts a few seconds.
- wind-load. "storm" at a gust of 24.5 m/s (lower bound of Beaufort 10), cleared at 20.8 m/s (lower
  bound of Beaufort 9); the gust is already a 3-s mean (WMO), so it raises at once and clears after 60 s.
  Load: the 5 kN cell of agent/wind.py; "load_warn" at 3000 N (60 %), "overload" at 4000 N (80 %),
  each cleared 400-500 N lower, confirmed over 3 s so one gust spike does not alarm.
- Sampling: the fast period is the sensor's (manhole 100 ms, others 1 s); the slow (quiet-day) period,
  config key 4, is 10 s for the cover (the activity interrupt wakes it anyway), 60 s for water and wind.
- Heartbeat (SenML ut): 900 s, as in SPEC.md's example; deadbands: a change worth a message.
"""

MANHOLE = "manhole-tilt"
WATER = "water-level"
WIND = "wind-load"
KINDS = (MANHOLE, WATER, WIND)

HEARTBEAT_S = 900

#: kind -> measurements it produces
MEASURES = {
    MANHOLE: ("tilt", "accel"),
    WATER: ("level", "rise"),
    WIND: ("wind", "gust", "wind10", "load"),
}

#: kind -> fast sampling period, ms (the sensor's own FAST_MS)
FAST_MS = {MANHOLE: 100, WATER: 1000, WIND: 1000}


def _alarm(measure, raise_at, clear_at, confirm, level, clear_confirm=None):
    entry = {0: measure, 1: raise_at, 2: clear_at, 3: confirm, 4: level}
    if clear_confirm is not None:
        entry[5] = clear_confirm
    return entry


def config_for(kind):
    """A new dict: the default config document of `kind` (version 0 = firmware defaults)."""
    if kind == MANHOLE:
        alarms = {"tilt": _alarm("tilt", 15, 12, 10, 2),
                  "lift": _alarm("accel", 3.9, 8.8, 0, 2, 60),
                  "impact": _alarm("accel", 15.7, 11.8, 0, 1, 60)}
        sample, deadband = {"tilt": 10, "accel": 10}, {"tilt": 0.5, "accel": 1.0}
    elif kind == WATER:
        alarms = {"flood_warn": _alarm("level", 150, 120, 30, 1),
                  "flood": _alarm("level", 270, 240, 30, 2)}
        sample, deadband = {"level": 60, "rise": 60}, {"level": 5, "rise": 0.5}
    elif kind == WIND:
        alarms = {"storm": _alarm("gust", 24.5, 20.8, 0, 2, 60),
                  "load_warn": _alarm("load", 3000, 2600, 3, 1),
                  "overload": _alarm("load", 4000, 3500, 3, 2)}
        sample = {"wind": 60, "gust": 60, "wind10": 60, "load": 60}
        deadband = {"wind": 0.5, "gust": 0.5, "wind10": 0.5, "load": 50}
    else:
        from agent.errors import AgentError

        raise AgentError("unknown sensor kind %r: use one of %s" % (kind, ", ".join(KINDS)))
    return {2: 0, 3: alarms, 4: sample, 5: HEARTBEAT_S, 6: deadband, 7: {}}
