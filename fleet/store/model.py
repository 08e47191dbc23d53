"""The fleet store's data model: what the ingest writes and what the read side returns.

All times are float Unix seconds (UTC). Contract: /tmp/cityfleet/ISSUE6.md "Data model".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A reading older than this at arrival is historical (a backfilled outbox entry).
HISTORICAL_AFTER_S = 120.0
# The store keeps at most this much of a quarantined payload.
QUARANTINE_PAYLOAD_CAP = 1024


@dataclass(slots=True)
class Reading:
    """One resolved SenML record of one device, stored at its own time."""

    device: str
    name: str
    time: float
    value: float | str | bool | None
    unit: str | None
    boot: int
    seq: int
    received: float
    historical: bool = False  # time < received - 120


@dataclass(slots=True)
class Inbound:
    """One decoded, valid device message on its way to the store."""

    device: str
    kind: str  # telemetry|event|health|state|ack|ota
    boot: int
    seq: int
    received: float
    message: object  # the decoded protocols object (Event, Health, State, Ack, OtaProgress, Telemetry)
    readings: list[Reading] = field(default_factory=list)
    ut: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Quarantined:
    """A message that failed to decode or validate; the store caps the payload at 1024 bytes."""

    received: float
    topic: str
    reason: str
    detail: str
    payload: bytes


@dataclass(slots=True)
class FleetAlarm:
    """An alarm transition found by the ingest's own threshold check (source "fleet")."""

    device: str
    alarm: str
    state: int  # 1 raise, 0 clear
    level: int
    value: float
    threshold: float
    since: float
    time: float


@dataclass(slots=True)
class Batch:
    """What one store transaction writes."""

    messages: list[Inbound] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    fleet_alarms: list[FleetAlarm] = field(default_factory=list)


@dataclass(slots=True)
class BatchResult:
    """Counts of one ingest() call."""

    stored: int
    duplicates: int
    readings: int
    quarantined: int


@dataclass(slots=True)
class AlarmRow:
    """One alarm, open (cleared_at None) or closed."""

    id: int
    device: str
    alarm: str
    level: int
    source: str  # "device" | "fleet"
    raised_at: float  # time the condition began
    raise_value: float
    threshold: float
    cleared_at: float | None
    clear_value: float | None
    acked_by: str | None
    acked_at: float | None
    note: str | None
    boot: int | None


@dataclass(slots=True)
class DeviceStatus:
    """What the store knows of one device's state (only devices ever seen)."""

    device: str
    first_seen: float | None
    last_seen: float | None
    boot: int | None
    online: bool | None  # True after a birth, False after a will of the last birth's boot
    offline_at: float | None
    firmware: str | None
    config_version: int | None
    reset_cause: int | None
    sensor: str | None
    ut: dict[str, int]
    health: dict[str, Any] | None  # the last Health message, keys only when present
    health_at: float | None
    births_24h: int
    outbox_trend: list[int]  # outbox depth of the last 4 health messages of the current boot, oldest first
    # The Health message before `health` in the same boot (same keys), None when `health` is the first of
    # its boot: its error counters (key 11) tell whether the last sensor fault is still happening.
    previous_health: dict[str, Any] | None = None


@dataclass(slots=True)
class Gap:
    """Sequence numbers first..last missing within one boot of one device."""

    device: str
    boot: int
    first: int
    last: int


@dataclass(slots=True)
class FeedItem:
    """One line of the fleet's event feed."""

    id: int
    time: float
    device: str
    kind: str  # alarm|clear|online|offline|ack|quarantine
    text: str


@dataclass(slots=True)
class SummaryRow:
    """Statistics of one reading name of one device over one interval starting at `start`."""

    device: str
    name: str
    start: float
    count: int
    min: float
    max: float
    mean: float
