"""The fleet store's interface: what the ingest writes and what the read side asks (ISSUE6 "Store").

Two implementations share one SQL core (`fleet.store.sqlstore`): SQLite (embedded default) and
PostgreSQL. One process writes (the ingest); any number of processes read at the same time.
All times are float Unix seconds (UTC).
"""

from __future__ import annotations

import abc
from typing import Any

from fleet.store.model import AlarmRow, Batch, BatchResult, DeviceStatus, FeedItem, Gap, Reading, SummaryRow

#: One quarantine entry as `Store.quarantine` lists it: (id, received, topic, reason, detail, size).
QuarantineEntry = tuple[int, float, str, str, str, int]


class Store(abc.ABC):
    """The fleet's storage. Methods are safe to call from several threads (calls are serialised)."""

    url: str = ""

    # ---- write side (the ingest) ----
    @abc.abstractmethod
    def ingest(self, batch: Batch) -> BatchResult:
        """Store `batch` in ONE transaction: all of it or, on any exception, nothing.

        Each message is deduplicated by (device, boot, seq): a key seen before (in the store or earlier in
        this batch) counts as a duplicate and stores nothing. New messages store by kind: telemetry ->
        readings at their own time and `ut` into the status; event -> opens/closes the device's alarm;
        health -> history row and status; state -> birth (online) or will (offline only when its boot is
        the last birth's); ack -> acks row and reported config version; ota -> progress row. Every stored
        message updates last_seen. Quarantined rows keep at most 1024 payload bytes. Fleet alarms
        open/close source="fleet" alarms. Alarm changes, online/offline and quarantine add feed items."""

    @abc.abstractmethod
    def ack_alarm(self, alarm_id: int, by: str, note: str | None = None, at: float | None = None) -> AlarmRow:
        """Acknowledge alarm `alarm_id` as operator `by` (at `at`, default now) and return it.

        FleetError when no alarm has that id."""

    # ---- read side ----
    @abc.abstractmethod
    def readings(self, device: str, since: float | None = None, until: float | None = None,
                 name: str | None = None, limit: int | None = None) -> list[Reading]:
        """Readings of `device` with since <= time < until, ordered by time, seq.

        With `limit`, the latest `limit` readings of that range (still oldest first)."""

    @abc.abstractmethod
    def summary(self, device: str, interval_s: float, since: float | None = None,
                until: float | None = None) -> list[SummaryRow]:
        """Count, min, max and mean of each numeric reading name per interval (start = floor(time/interval) *
        interval), ordered by start then name."""

    @abc.abstractmethod
    def alarms(self, active: bool = False, device: str | None = None) -> list[AlarmRow]:
        """Alarms newest first (by raised_at); `active` keeps only those not cleared."""

    @abc.abstractmethod
    def open_fleet_alarms(self) -> list[AlarmRow]:
        """Open alarms raised by the fleet's own threshold check, so a restarted ingest resumes its state."""

    @abc.abstractmethod
    def status(self, device: str | None = None, now: float | None = None) -> list[DeviceStatus]:
        """Status of every device ever seen (or of `device`), ordered by device id.

        `now` (default the clock) is the end of the 24 h window of `births_24h`."""

    @abc.abstractmethod
    def gaps(self, device: str | None = None) -> list[Gap]:
        """Sequence numbers missing between the lowest and highest seen within each boot of each device."""

    @abc.abstractmethod
    def quarantine(self, limit: int = 50) -> list[QuarantineEntry]:
        """The latest quarantined messages, newest first: (id, received, topic, reason, detail, size)."""

    @abc.abstractmethod
    def quarantine_count(self) -> int:
        """How many messages were ever quarantined."""

    @abc.abstractmethod
    def quarantine_payload(self, entry_id: int) -> bytes | None:
        """The stored (capped) payload of quarantine entry `entry_id`, None when there is none."""

    @abc.abstractmethod
    def feed(self, after_id: int = 0, limit: int = 100) -> list[FeedItem]:
        """Feed items with id > after_id, oldest first, at most `limit`."""

    @abc.abstractmethod
    def acks(self, device: str, cid: int | None = None) -> list[dict[str, Any]]:
        """Acks of `device` (of command `cid` when given) in arrival order: dicts with device, boot, seq,
        cid, status, reasons, config, result, received."""

    @abc.abstractmethod
    def ota(self, device: str, cid: int | None = None) -> list[dict[str, Any]]:
        """OTA progress of `device` (of offer `cid` when given) in arrival order: dicts with device, boot,
        seq, cid, state, percent, reason, target, received."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection; the store is unusable afterwards."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
