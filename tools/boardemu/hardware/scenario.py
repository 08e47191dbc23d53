"""Scenario files: a time series of physical quantities plus timed faults, played in real time or faster.

Format (JSON object; times in scenario seconds from the start):

    {"name": "rainstorm", "description": "...", "duration_s": 1800,
     "series": {"level_cm": [[0, 0], [600, 30], [1800, 0]], "ripple_cm": [[0, 0.3]]},
     "events": [{"t": 300, "set": {"level_corrupt_rate": 0.05}},
                {"t": 900, "net": "down"}, {"t": 960, "net": "up"},
                {"t": 1200, "impact_g": 3.0}, {"t": 1300, "freefall_ms": 250}]}

A series is a list of [t, value] points, linearly interpolated, held at the first value before the
first point and at the last value after the last one. Events: "set" (any quantity or chip fault
switch, e.g. {"lis3dh": "missing"}), "net" ("down"/"up"), "impact_g" (a 20 ms shock on the
accelerometer), "freefall_ms" (the accelerometer reads ~0 g for that long). `duration_s` defaults to
the last point or event. While a scenario plays, the quantities it has series for follow them; a
`set` of such a quantity takes it back from the scenario.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from pathlib import Path

from tools.boardemu.hardware.physics import parse

_EVENT_KINDS = ("set", "net", "impact_g", "freefall_ms")


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("%s: expected a number, got %r" % (where, value))
    return float(value)


class Scenario:
    """A validated scenario; build it with Scenario.load(path) or Scenario(dict)."""

    def __init__(self, data, origin: str = "scenario"):
        if not isinstance(data, dict):
            raise ValueError("%s: the file must hold a JSON object" % origin)
        unknown = set(data) - {"name", "description", "duration_s", "series", "events"}
        if unknown:
            raise ValueError("%s: unknown keys %s" % (origin, ", ".join(sorted(unknown))))
        self.name = str(data.get("name", Path(origin).stem))
        self.description = str(data.get("description", ""))
        self.series = {}
        for name, points in (data.get("series") or {}).items():
            self.series[name] = self._series(name, points, origin)
        self.events = sorted((self._event(e, origin, i) for i, e in enumerate(data.get("events") or [])),
                             key=lambda e: e["t"])
        last = max([pts[0][-1] for pts in self.series.values()] + [e["t"] for e in self.events] + [0.0])
        self.duration_s = _number(data.get("duration_s", last), origin + ": duration_s")
        if self.duration_s < 0:
            raise ValueError("%s: duration_s must not be negative" % origin)

    @classmethod
    def load(cls, path) -> Scenario:
        """Read and validate a scenario file; ValueError with the file name when it is bad."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ValueError("cannot read scenario %s: %s" % (path, exc.strerror or exc)) from None
        except json.JSONDecodeError as exc:
            raise ValueError("scenario %s is not valid JSON: %s" % (path, exc)) from None
        return cls(data, str(path))

    @staticmethod
    def _series(name, points, origin):
        where = "%s: series %s" % (origin, name)
        if not isinstance(points, list) or not points:
            raise ValueError("%s: needs a non-empty list of [t, value] points" % where)
        times, values = [], []
        for point in points:
            if not isinstance(point, list) or len(point) != 2:
                raise ValueError("%s: each point is [t, value], got %r" % (where, point))
            t = _number(point[0], where)
            if times and t < times[-1]:
                raise ValueError("%s: times must not go backwards (%g after %g)" % (where, t, times[-1]))
            value = parse(name, point[1])
            if not isinstance(value, float):
                raise ValueError("%s: only numeric quantities can have a series" % where)
            times.append(t)
            values.append(value)
        return times, values

    @staticmethod
    def _event(event, origin, index):
        where = "%s: event %d" % (origin, index)
        if not isinstance(event, dict) or "t" not in event:
            raise ValueError("%s: an event is an object with a time \"t\"" % where)
        kinds = [k for k in event if k != "t"]
        if len(kinds) != 1 or kinds[0] not in _EVENT_KINDS:
            raise ValueError("%s: needs exactly one of %s" % (where, ", ".join(_EVENT_KINDS)))
        kind, arg = kinds[0], event[kinds[0]]
        if kind == "set":
            if not isinstance(arg, dict):
                raise ValueError("%s: set takes an object of quantities" % where)
            arg = {name: parse(name, value) for name, value in arg.items()}
        elif kind == "net":
            if arg not in ("up", "down"):
                raise ValueError("%s: net is \"up\" or \"down\"" % where)
        else:
            arg = _number(arg, where)
        return {"t": _number(event["t"], where), "kind": kind, "arg": arg}

    def value(self, name: str, st: float) -> float:
        """Series `name` at scenario time st (linear interpolation, held at both ends)."""
        times, values = self.series[name]
        i = bisect.bisect_right(times, st)
        if i == 0:
            return values[0]
        if i == len(times):
            return values[-1]
        t0, t1 = times[i - 1], times[i]
        v0, v1 = values[i - 1], values[i]
        return v0 if t1 == t0 else v0 + (v1 - v0) * (st - t0) / (t1 - t0)


class Player:
    """Plays a Scenario from monotonic time `start` at `speed` x real time; fires events via `fire`."""

    def __init__(self, scenario: Scenario, speed: float, fire, start: float | None = None):
        if not speed > 0:
            raise ValueError("scenario speed must be positive, got %r" % speed)
        self.scenario = scenario
        self.speed = float(speed)
        self.start = time.monotonic() if start is None else start
        self._fire = fire
        self._next = 0  # index of the next event to fire
        self._released: set = set()
        self._lock = threading.Lock()

    def scenario_time(self, t: float) -> float:
        """Scenario seconds elapsed at monotonic time t."""
        return max(0.0, (t - self.start) * self.speed)

    def drives(self, name: str) -> bool:
        """True while this scenario supplies quantity `name`."""
        return name in self.scenario.series and name not in self._released

    def release(self, names) -> None:
        """Stop driving these quantities (the user set them)."""
        with self._lock:
            self._released.update(names)

    def value(self, name: str, t: float) -> float:
        """Quantity `name` at monotonic time t."""
        return self.scenario.value(name, self.scenario_time(t))

    def next_due(self) -> float | None:
        """Monotonic time of the next event, or None when all fired."""
        with self._lock:
            if self._next >= len(self.scenario.events):
                return None
            return self.start + self.scenario.events[self._next]["t"] / self.speed

    def tick(self, t: float) -> None:
        """Fire every event due by monotonic time t, in order."""
        while True:
            with self._lock:
                events = self.scenario.events
                if self._next >= len(events) or self.start + events[self._next]["t"] / self.speed > t:
                    return
                event = events[self._next]
                self._next += 1
            self._fire(event)

    def status(self, t: float) -> dict:
        """Name, progress and whether it finished."""
        st = self.scenario_time(t)
        return {"name": self.scenario.name, "t_s": round(min(st, self.scenario.duration_s), 2),
                "duration_s": self.scenario.duration_s, "speed": self.speed,
                "finished": st >= self.scenario.duration_s and self._next >= len(self.scenario.events)}
