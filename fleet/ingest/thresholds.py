"""The fleet's own alarm check: each device's readings against its configured thresholds, so a device
whose own alarm logic is wrong or stale is still caught (issue 6; alarms of source "fleet").

Rules are those of SPEC.md "Config" key 3 and agent/alarm.py: raise > clear watches high values (raised
at value >= raise, cleared at value <= clear), raise < clear low ones; a transition needs an unbroken
run past its threshold lasting `confirm` seconds (key 3) to raise and key 5 seconds (default: key 3) to
clear; key 4 is the level. Thresholds are in the wire's units (SPEC.md "Measurements": level mm, tilt
deg, load N, gust m/s), as the readings are.

The fleet sees reported values, not every sample: a node reports a value when it moved past its
deadband, and at its heartbeat otherwise. So a reported value is taken to hold until the next report of
the same device (sample and hold): a run past a threshold is confirmed at since + confirm once a later
report of that device shows the node was still reporting without having moved back (any measurement of
it, since all of one sample go in one pack). A steady, silent node is thus judged at its next report at
the latest (heartbeat). Readings older than one already seen for that measurement (a backfill overtaken
by live data) are left out: the rules need time order.

A device's config: agent/defaults.py `config_for(kind)` overlaid by the registry's desired document
(tables merged by name, as the agent does), kind from the registry, else from the device's birth.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fleet.store.model import AlarmRow, FleetAlarm, Inbound

HEARTBEAT_S = 900.0  # agent/defaults.py HEARTBEAT_S, for a device whose config cannot be read

#: The sensor kind a birth names (State key 7) -> registry kind (agent/app.py KIND_NAMES).
BIRTH_KINDS = {"manhole": "manhole-tilt", "water": "water-level", "billboard": "wind-load"}
_TABLES = (3, 4, 6, 7)


@dataclass(slots=True)
class Rule:
    """One alarm of a device's config (SPEC.md "Config" key 3 entry)."""

    name: str
    measure: str
    raise_at: float
    clear_at: float
    confirm: float
    clear_confirm: float
    level: int

    @property
    def above(self) -> bool:
        return self.raise_at > self.clear_at


def rules(doc: dict[int, Any]) -> dict[str, Rule]:
    """The valid alarm rules of an effective config document (integer keys); bad entries are skipped."""
    out = {}
    for name, entry in (doc.get(3) or {}).items():
        rule = _rule(str(name), entry)
        if rule is not None:
            out[rule.name] = rule
    return out


def _rule(name: str, entry: Any) -> Rule | None:
    if not isinstance(entry, dict):
        return None
    entry = {int(k): v for k, v in entry.items() if str(k).isdigit()}
    measure, raise_at, clear_at = entry.get(0), entry.get(1), entry.get(2)
    confirm, level = entry.get(3, 0), entry.get(4, 2)
    clear_confirm = entry.get(5, confirm)
    numbers = (raise_at, clear_at, confirm, clear_confirm)
    if not isinstance(measure, str) or not all(_finite(v) for v in numbers) or raise_at == clear_at \
            or confirm < 0 or clear_confirm < 0 or level not in (1, 2):
        return None
    return Rule(name, measure, raise_at, clear_at, confirm, clear_confirm, level)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def effective_config(kind: str, desired: dict[int, Any] | None = None) -> dict[int, Any]:
    """The config a `kind` node runs once it applied `desired`: the firmware defaults overlaid entry by entry
    (agent/config_apply.py `merge`); ValueError for an unknown kind."""
    from agent.defaults import KINDS, config_for

    if kind not in KINDS:
        raise ValueError("unknown sensor kind %r" % kind)
    out = config_for(kind)
    for key, value in (desired or {}).items():
        if key in _TABLES and isinstance(value, dict):
            out.setdefault(key, {}).update(value)
        else:
            out[key] = value
    return out


@dataclass(slots=True)
class _State:
    """Where one rule of one device stands: `since` is the start of a run past the threshold in play."""

    active: bool = False
    since: float | None = None
    held: float = 0.0  # the last value of the measure, held until the next report
    last: float = -math.inf  # time of the last reading fed


class Thresholds:
    """Per-device alarm state; `check(inbound)` returns the FleetAlarm transitions its readings cause."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled  # off in shared-subscription workers that see only part of a device (README)
        self._kinds: dict[str, str] = {}  # device -> registry kind
        self._desired: dict[str, dict[int, Any]] = {}  # device -> desired document
        self._rules: dict[str, dict[str, Rule]] = {}  # device -> alarm -> rule (cache)
        self._states: dict[tuple[str, str], _State] = {}
        self._seeded: set[tuple[str, str]] = set()
        self._heartbeats: dict[str, float] = {}  # device -> heartbeat, s (config key 5)

    def set_devices(self, records: Iterable[dict[str, Any]]) -> None:
        """Take kinds and desired config documents from registry records (again whenever they change)."""
        from fleet.config_edit import desired

        for record in records:
            device, kind = record.get("id"), record.get("kind")
            if not isinstance(device, str) or not isinstance(kind, str):
                continue
            try:
                doc = desired(record)[1]
            except (KeyError, TypeError, ValueError, AttributeError):
                doc = {}  # an unreadable desired document: check against the defaults
            if self._kinds.get(device) != kind or self._desired.get(device) != doc:
                self._kinds[device], self._desired[device] = kind, doc
                self._rules.pop(device, None)

    def seed(self, alarms: Iterable[AlarmRow]) -> None:
        """Resume after a restart: the store's open fleet alarms are active (no new raise for them)."""
        for row in alarms:
            if row.source == "fleet" and row.cleared_at is None:
                self._seeded.add((row.device, row.alarm))
                state = self._states.get((row.device, row.alarm))
                if state is not None:
                    state.active = True

    def check(self, inbound: Inbound) -> list[FleetAlarm]:
        """Feed one stored-to-be message; the alarm transitions of its device it confirms, in time order."""
        if not self.enabled:
            return []
        if inbound.kind == "state":
            self._note_birth(inbound)
            return []
        if inbound.kind != "telemetry" or not inbound.readings:
            return []
        device_rules = self._device_rules(inbound.device)
        if not device_rules:
            return []
        out: list[FleetAlarm] = []
        newest = max(r.time for r in inbound.readings)
        for rule in device_rules.values():
            state = self._state(inbound.device, rule.name)
            fed = False
            for reading in sorted((r for r in inbound.readings if r.name == rule.measure), key=lambda r: r.time):
                value = reading.value
                if isinstance(value, (int, float)) and _finite(value) and reading.time >= state.last:
                    self._feed(inbound.device, rule, state, float(value), reading.time, out)
                    fed = True
            if not fed and state.last > -math.inf and newest > state.last:
                self._advance(inbound.device, rule, state, newest, out)
        out.sort(key=lambda a: a.time)
        return out

    def tick(self, now: float) -> list[FleetAlarm]:
        """Runs confirmed by `now` with no new report: a node reports only when a value moves past its
        deadband, so its silence means the value held. Held for two heartbeats at most: past that the
        node is stale, and its silence says nothing."""
        out: list[FleetAlarm] = []
        if not self.enabled:
            return out
        for (device, alarm), state in self._states.items():
            rule = self._device_rules(device).get(alarm) if state.since is not None else None
            if rule is not None:
                hold = 2 * self._heartbeats.get(device, HEARTBEAT_S)
                self._advance(device, rule, state, min(now, state.last + hold), out)
        out.sort(key=lambda a: a.time)
        return out

    def _note_birth(self, inbound: Inbound) -> None:
        sensor = getattr(inbound.message, "kind", None)  # State key 7, births only
        kind = BIRTH_KINDS.get(sensor) if isinstance(sensor, str) else None
        if kind is not None and inbound.device not in self._kinds:
            self._kinds[inbound.device] = kind
            self._rules.pop(inbound.device, None)

    def _device_rules(self, device: str) -> dict[str, Rule]:
        found = self._rules.get(device)
        if found is None:
            kind = self._kinds.get(device)
            try:
                config = effective_config(kind, self._desired.get(device)) if kind else {}
                found = rules(config) if kind else {}
            except ValueError:
                config, found = {}, {}
            heartbeat = config.get(5)
            if isinstance(heartbeat, (int, float)) and heartbeat > 0:
                self._heartbeats[device] = float(heartbeat)
            self._rules[device] = found
        return found

    def _state(self, device: str, alarm: str) -> _State:
        state = self._states.get((device, alarm))
        if state is None:
            state = self._states[(device, alarm)] = _State(active=(device, alarm) in self._seeded)
        return state

    def _feed(self, device: str, rule: Rule, state: _State, value: float, time: float,
              out: list[FleetAlarm]) -> None:
        """One reported value at `time`: the held one lasted until now, then the new one counts."""
        self._advance(device, rule, state, time, out)
        state.held, state.last = value, time
        threshold, need = (rule.clear_at, rule.clear_confirm) if state.active else (rule.raise_at, rule.confirm)
        past = value <= threshold if rule.above == state.active else value >= threshold
        if not past:
            state.since = None
            return
        if state.since is None:
            state.since = time
        if time - state.since >= need:
            self._transition(device, rule, state, time, out)

    def _advance(self, device: str, rule: Rule, state: _State, time: float, out: list[FleetAlarm]) -> None:
        """The held value lasted until `time`: a run that has lasted its confirm time by then is confirmed."""
        if state.since is None:
            return
        need = rule.clear_confirm if state.active else rule.confirm
        if time - state.since >= need:
            self._transition(device, rule, state, state.since + need, out)

    def _transition(self, device: str, rule: Rule, state: _State, time: float, out: list[FleetAlarm]) -> None:
        threshold = rule.clear_at if state.active else rule.raise_at
        state.active = not state.active
        out.append(FleetAlarm(device, rule.name, 1 if state.active else 0, rule.level, state.held, threshold,
                              state.since if state.since is not None else time, time))
        state.since = None
