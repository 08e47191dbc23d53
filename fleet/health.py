"""The health of one device: healthy, degraded, stale, offline or never seen, with the reasons why.

Pure: `evaluate` judges a device from its registry record, what the store knows of it (`DeviceStatus`,
None when never seen), its sequence gaps and the time now; it reads no clock and opens nothing.

States, the first that applies wins:
- **never seen**: registered, but the store has no message from it.
- **offline**: the broker published the last will of its current boot (the store keeps the will only
  when its boot id is that of the last birth, SPEC.md "State").
- **stale**: silent for more than 2x its heartbeat. The heartbeat is the smallest SenML `ut` the device
  declared (its longest promised silence); before it declared any, the heartbeat of the desired config
  in the registry, else the firmware default (agent.defaults.HEARTBEAT_S). Judged per device because
  sleeping nodes disconnect on purpose: a silence is only news past the device's own promise.
- **degraded**: it talks, but its last health report or its history shows one of: battery below
  3400 mV, lowest free heap since boot below 8 KB, an outbox whose depth rose at each of its last 4
  health reports, a sensor fault since its previous health report, or 3 or more births in the last 24 h.
- **healthy**: none of the above.
An offline or stale device also lists its degraded reasons after the first one. Notes follow the reasons
and never change the state: a sensor fault earlier in the boot, an unregistered device.

A sensor fault: the last health names the boot's last fault (SPEC "Health" key 12) however long ago it
was, so one transient fault (a load cell's first read after power-on) would degrade the device all boot.
The agent also counts each fault under its code in the error counters (key 11), so the fault is news when
its counter changed since the previous report of the same boot (`DeviceStatus.previous_health`), when
the report is the first of its boot, or when the report has no counter for it (at most 8 are sent). Safe
mode (`safe_mode`) is counted once, at setup, and reads no sensor all boot: it degrades whatever the
counter says.

Critical (`fleet health` exits 1): offline and stale devices, and a never-seen device whose identity
was written more than an hour ago (state pending-selftest or active; the time is the registry's latest
"identity written" history entry, else its `created`): such a board has had an hour to boot and talk.
A device still in state "provisioning" never got its identity, so silence is expected and not critical.
Degraded is not critical: it asks for a visit, not for a page at night.

Gaps (sequence numbers missing within the current boot) never change the state: QoS 1 redelivery makes
short-lived gaps normal, and a will's reserved seq stays unused whenever a session ends cleanly (a
sleeping node). They are counted in `Assessment.missing` for whoever wants to look.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

from agent.defaults import HEARTBEAT_S
from fleet.store.model import DeviceStatus, Gap

HEALTHY = "healthy"
DEGRADED = "degraded"
STALE = "stale"
OFFLINE = "offline"
NEVER_SEEN = "never seen"
STATES = (HEALTHY, DEGRADED, STALE, OFFLINE, NEVER_SEEN)

LOW_BATTERY_MV = 3400  # a Li-ion cell under ~3.4 V has little left before brown-out of a 3.3 V rail
LOW_HEAP_BYTES = 8 * 1024  # the agent loads code per call; under 8 KB free a config change may not fit
OUTBOX_TREND_LEN = 4  # health reports whose outbox depth must rise at each step
RESETS_24H = 3  # births in 24 h that count as repeated resets
STALE_FACTOR = 2  # silent past this many heartbeats: stale
NEVER_SEEN_GRACE_S = 3600.0  # an identity written this long ago without a message is critical
IDENTITY_ACTION = "identity written"  # the registry history entry written when the board got its identity
SENSOR_FAULT = "sensor_fault"  # a fault since the previous health report: degraded
EARLIER_SENSOR_FAULT = "earlier_sensor_fault"  # none since then, only earlier in the boot: a note
# agent/ota_boot.py Idle (safe mode): counted once, at setup, yet no sensor is read all boot.
LASTING_FAULTS = frozenset({"safe_mode"})


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a device is in its state, or a note on it: a stable `code` for scripts and a `text` for people."""

    code: str
    text: str


@dataclass(frozen=True, slots=True)
class Assessment:
    """The verdict on one device."""

    state: str
    reasons: tuple[Reason, ...]
    critical: bool
    heartbeat: int  # the heartbeat (s) the stale rule used
    missing: int = 0  # sequence numbers missing within the current boot (informational)


def evaluate(record: Mapping[str, Any] | None, status: DeviceStatus | None, gaps: Iterable[Gap],
             now: float) -> Assessment:
    """Judge one device; `record` is its registry record (None: seen but not registered)."""
    heartbeat = heartbeat_of(record, status)
    extra = [] if record is not None else [Reason("unregistered", "not in the registry")]
    if status is None or status.last_seen is None:
        reason = Reason("never_seen", "no message received since it was registered")
        return Assessment(NEVER_SEEN, (reason, *extra), _never_seen_critical(record, now), heartbeat)
    missing = sum(g.last - g.first + 1 for g in gaps if g.device == status.device and g.boot == status.boot)
    degraded = degraded_reasons(status, now)
    extra = [*notes(status), *extra]
    if status.online is False:
        when = status.offline_at if status.offline_at is not None else status.last_seen
        first = Reason("offline", "last will of boot %s, %s ago" % (status.boot, human_duration(now - when)))
        return Assessment(OFFLINE, (first, *degraded, *extra), True, heartbeat, missing)
    silent = now - status.last_seen
    if silent > STALE_FACTOR * heartbeat:
        first = Reason("stale", "silent for %s (limit %s: %dx heartbeat %d s)" % (
            human_duration(silent), human_duration(STALE_FACTOR * heartbeat), STALE_FACTOR, heartbeat))
        return Assessment(STALE, (first, *degraded, *extra), True, heartbeat, missing)
    state = DEGRADED if degraded else HEALTHY
    return Assessment(state, (*degraded, *extra), False, heartbeat, missing)


def heartbeat_of(record: Mapping[str, Any] | None, status: DeviceStatus | None) -> int:
    """Seconds the device promised between reports: its smallest declared `ut`, else the desired
    config's heartbeat (key "5" of the registry's config doc), else agent.defaults.HEARTBEAT_S."""
    if status is not None:
        declared = [int(ut) for ut in status.ut.values() if isinstance(ut, (int, float)) and ut > 0]
        if declared:
            return min(declared)
    desired = (record or {}).get("config") or {}
    doc = desired.get("doc") if isinstance(desired, dict) else None
    value = doc.get("5") if isinstance(doc, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return HEARTBEAT_S


def degraded_reasons(status: DeviceStatus, now: float) -> list[Reason]:
    """Every degradation the device's status shows, in a fixed order."""
    reasons = []
    health = status.health or {}
    battery = health.get("battery")
    if _number(battery) and battery < LOW_BATTERY_MV:
        reasons.append(Reason("low_battery", "battery %d mV (< %d mV)" % (battery, LOW_BATTERY_MV)))
    heap_low = health.get("heap_low")
    if _number(heap_low) and heap_low < LOW_HEAP_BYTES:
        reasons.append(Reason("low_heap", "lowest free heap %d B since boot (< %d B)"
                              % (heap_low, LOW_HEAP_BYTES)))
    trend = list(status.outbox_trend)[-OUTBOX_TREND_LEN:]
    if len(trend) == OUTBOX_TREND_LEN and all(a < b for a, b in zip(trend, trend[1:], strict=False)):
        reasons.append(Reason("outbox_growing", "outbox growing: %s messages over the last %d health reports"
                              % (" -> ".join(str(n) for n in trend), OUTBOX_TREND_LEN)))
    fault = sensor_fault(status)
    if fault is not None and fault.code == SENSOR_FAULT:
        reasons.append(fault)
    if status.births_24h >= RESETS_24H:
        reasons.append(Reason("resets", "%d boots in the last 24 h" % status.births_24h))
    return reasons


def notes(status: DeviceStatus) -> list[Reason]:
    """What is worth knowing of the device's status without changing its state."""
    fault = sensor_fault(status)
    return [fault] if fault is not None and fault.code == EARLIER_SENSOR_FAULT else []


def sensor_fault(status: DeviceStatus) -> Reason | None:
    """The last health's sensor fault (None: none since boot): SENSOR_FAULT when it happened since the
    previous health report of the boot, else EARLIER_SENSOR_FAULT (see the module's docstring)."""
    health = status.health or {}
    fault = health.get("fault")
    if not fault:
        return None
    if fault in LASTING_FAULTS:
        return Reason(SENSOR_FAULT, "sensor fault %s: no sensor is read in this boot" % fault)
    if status.previous_health is None:
        return Reason(SENSOR_FAULT, "sensor fault %s in the first health report of this boot" % fault)
    count = _fault_count(health, fault)
    if count is None:
        # The counters keep at most 8 codes (agent/health_report.py): without this one, whether the fault
        # is still happening cannot be told, so the old rule holds: a reported fault degrades.
        return Reason(SENSOR_FAULT, "sensor fault %s in its last health (no error counter for it)" % fault)
    # A code missing from the previous counters was not counted yet (or fell past the 8): taken as 0,
    # so an unknown past degrades rather than hides the fault.
    before = _fault_count(status.previous_health, fault) or 0
    if count == before:
        return Reason(EARLIER_SENSOR_FAULT, "sensor fault %s last seen earlier in this boot (%d time%s)"
                      % (fault, count, "" if count == 1 else "s"))
    return Reason(SENSOR_FAULT, "sensor fault %s since its previous health report (count %d -> %d)"
                  % (fault, before, count))


def _fault_count(health: Mapping[str, Any], code: str) -> int | None:
    counters = health.get("errors")
    count = counters.get(code) if isinstance(counters, dict) else None
    return int(count) if _number(count) else None


def _never_seen_critical(record: Mapping[str, Any] | None, now: float) -> bool:
    if record is None or record.get("state") not in ("pending-selftest", "active"):
        return False
    written = [h.get("at") for h in record.get("history") or () if h.get("action") == IDENTITY_ACTION]
    since = parse_registry_time(written[-1] if written else record.get("created"))
    return since is not None and now - since > NEVER_SEEN_GRACE_S


def parse_registry_time(text: Any) -> float | None:
    """Unix seconds of a registry time ("2025-01-31T12:00:00Z"); None when missing or unreadable."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()  # the registry writes UTC


def human_duration(seconds: float) -> str:
    """A short duration for people: 45s, 12m, 2h05m, 3d04h."""
    s = max(0, int(seconds))
    if s < 60:
        return "%ds" % s
    if s < 3600:
        return "%dm" % (s // 60)
    if s < 86400:
        return "%dh%02dm" % (s // 3600, s % 3600 // 60)
    return "%dd%02dh" % (s // 86400, s % 86400 // 3600)


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
