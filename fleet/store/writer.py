"""The write side shared by both SQL stores: one `Batch` -> rows, inside the caller's transaction.

Dedupe first (`seen`), then readings in bulk, then the per-kind effects. Device status rows are loaded
once per batch, changed in memory message by message (in arrival order, so a birth and a will in the same
batch apply in order) and written back once per device: a batch of 1000 telemetry messages from 50
devices costs 50 status writes, not 1000.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fleet.store.model import QUARANTINE_PAYLOAD_CAP, Batch, BatchResult, FleetAlarm, Inbound
from fleet.store.schema import DEVICE_COLUMNS

if TYPE_CHECKING:
    from fleet.store.sqlstore import SqlStore

#: Health message attribute -> key of DeviceStatus.health (ISSUE6 "Data model").
HEALTH_KEYS = (("uptime", "uptime"), ("heap_free", "heap"), ("heap_min", "heap_low"), ("flash_free", "flash"),
               ("battery", "battery"), ("rssi", "rssi"), ("outbox", "outbox"), ("dropped", "dropped"),
               ("errors", "errors"), ("fault", "fault"), ("reconnects", "reconnects"),
               ("link_up", "link_up"))
RESETS = {0: "unknown", 1: "power-on", 2: "hard", 3: "watchdog", 4: "deep-sleep wake", 5: "soft"}
TOPIC_CAP = 256
DETAIL_CAP = 512


def clean(text: str | None, cap: int | None = None) -> str | None:
    """Device text made storable: PostgreSQL's TEXT refuses NUL, which CBOR text may carry."""
    if text is None:
        return None
    text = text.replace("\x00", "\ufffd")
    return text[:cap] if cap is not None else text


def value_columns(value: object) -> tuple[float | None, str | None, int | None]:
    """A reading's value as (number, text, flag) columns; a CBOR byte string (SenML vd) is kept as hex."""
    if isinstance(value, bool):
        return None, None, int(value)
    if isinstance(value, int | float):
        return float(value), None, None
    if isinstance(value, str):
        return None, clean(value), None
    if isinstance(value, bytes | bytearray):
        return None, value.hex(), None
    return None, None, None


def to_json(value: object) -> str:
    """JSON text of a decoded CBOR value (bytes as hex: an ack result may hold a byte string)."""
    return json.dumps(value, default=lambda item: item.hex() if isinstance(item, bytes | bytearray) else str(item))


class BatchWriter:
    """Applies one batch to `db` inside its open write transaction."""

    def __init__(self, db: SqlStore) -> None:
        self.db = db
        self.devices: dict[str, dict[str, Any]] = {}
        self.feed: list[tuple[float, str, str, str]] = []
        self.rows: dict[str, list[tuple[Any, ...]]] = {"health": [], "births": [], "acks": [], "ota": []}

    def write(self, batch: Batch) -> BatchResult:
        """Store the batch and count what happened."""
        unique: dict[tuple[str, int, int], Inbound] = {}
        for message in batch.messages:
            unique.setdefault((message.device, message.boot, message.seq), message)
        fresh = self.db._claim([(m.device, m.boot, m.seq, _seen_kind(m), m.received) for m in unique.values()])
        new = [m for key, m in unique.items() if key in fresh]
        readings = [(r.device, r.name, r.time, *value_columns(r.value), clean(r.unit), r.boot, r.seq,
                     r.received, int(r.historical)) for m in new for r in m.readings]
        if readings:
            self.db._add_readings(readings)
        self._load_devices({m.device for m in new})
        for message in new:
            self._apply(message)
        for alarm in batch.fleet_alarms:
            self._fleet_alarm(alarm)
        for item in batch.quarantined:
            payload = bytes(item.payload)
            topic = clean(item.topic, TOPIC_CAP) or ""
            self.db._execute("INSERT INTO quarantine (received, topic, reason, detail, size, payload) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             (item.received, topic, clean(item.reason, TOPIC_CAP), clean(item.detail, DETAIL_CAP),
                              len(payload), payload[:QUARANTINE_PAYLOAD_CAP]))
            parts = topic.split("/")
            self._say(item.received, parts[2] if len(parts) == 4 else "?", "quarantine",
                      "quarantined %s: %s (%d bytes)" % (topic, item.reason, len(payload)))
        self._flush()
        return BatchResult(stored=len(new), duplicates=len(batch.messages) - len(new),
                           readings=len(readings), quarantined=len(batch.quarantined))

    # ---- per message ----
    def _apply(self, m: Inbound) -> None:
        dev = self.devices[m.device]
        dev["first_seen"] = m.received if dev["first_seen"] is None else min(dev["first_seen"], m.received)
        dev["last_seen"] = m.received if dev["last_seen"] is None else max(dev["last_seen"], m.received)
        msg: Any = m.message
        if m.kind == "telemetry":
            dev["ut"].update(m.ut)
        elif m.kind == "event":
            self._event(m, msg)
        elif m.kind == "health":
            self._health(m, msg, dev)
        elif m.kind == "state":
            self._state(m, msg, dev)
        elif m.kind == "ack":
            self.rows["acks"].append((m.device, m.boot, m.seq, msg.cid, msg.status,
                                      None if msg.reasons is None else to_json(msg.reasons), msg.config,
                                      None if msg.result is None else to_json(msg.result), m.received))
            if msg.config is not None:
                dev["config_version"] = msg.config
        elif m.kind == "ota":
            self.rows["ota"].append((m.device, m.boot, m.seq, msg.cid, msg.state, msg.percent,
                                     clean(msg.reason), clean(msg.target), m.received))
        elif m.kind == "pull":
            pass  # an OTA pull (SPEC "OTA"): its dedupe key is all that is kept, so seq shows no gap
        else:
            raise ValueError("unknown message kind %r from %s" % (m.kind, m.device))

    def _event(self, m: Inbound, event: Any) -> None:
        from protocols.read_up import began

        received: Any = m.received  # began() is typed for int seconds; a float receipt time resolves the same
        at = float(began(event, received))
        alarm = clean(event.alarm) or ""
        if event.state:
            self._open(m.device, alarm, event.level, "device", at, float(event.value), float(event.threshold),
                       m.boot)
        else:
            self._close(m.device, alarm, "device", at, float(event.value), float(event.threshold))

    def _fleet_alarm(self, a: FleetAlarm) -> None:
        if a.state:
            self._open(a.device, a.alarm, a.level, "fleet", a.since, a.value, a.threshold, None)
        else:
            self._close(a.device, a.alarm, "fleet", a.since, a.value, a.threshold)

    def _health(self, m: Inbound, health: Any, dev: dict[str, Any]) -> None:
        data = {key: getattr(health, attr) for attr, key in HEALTH_KEYS if getattr(health, attr) is not None}
        text = to_json(data)
        self.rows["health"].append((m.device, m.boot, m.seq, m.received, health.outbox, text))
        dev.update(health=text, health_at=m.received, health_boot=m.boot)

    def _state(self, m: Inbound, state: Any, dev: dict[str, Any]) -> None:
        if state.online:
            dev.update(online=1, offline_at=None, boot=m.boot, firmware=clean(state.firmware),
                       config_version=state.config, reset_cause=state.reset, sensor=clean(state.kind))
            self.rows["births"].append((m.device, m.boot, m.seq, m.received, dev["firmware"], state.config,
                                        state.reset))
            self._say(m.received, m.device, "online", "online: boot %d, firmware %s, reset %s"
                      % (m.boot, dev["firmware"], RESETS.get(state.reset, state.reset)))
        elif dev["boot"] == m.boot and self._births_after(m.device, m.boot, m.seq) <= 1:
            # SPEC "State": a late will of an older session never marks the newer one offline. Within one
            # boot too (a reconnect: the broker may publish the dropped session's will after the new
            # birth): a will's seq is reserved at CONNECT just before its session's birth, so only the
            # will with at most one birth of its boot after it is the current session's.
            dev.update(online=0, offline_at=m.received)
            self._say(m.received, m.device, "offline", "offline: last will of boot %d" % m.boot)

    def _births_after(self, device: str, boot: int, seq: int) -> int:
        pending = sum(1 for row in self.rows["births"] if row[0] == device and row[1] == boot and row[2] > seq)
        stored = self.db._all("SELECT COUNT(*) FROM births WHERE device = ? AND boot = ? AND seq > ?",
                              (device, boot, seq))
        return pending + int(stored[0][0])

    # ---- alarms ----
    def _open(self, device: str, alarm: str, level: int, source: str, at: float, value: float,
              threshold: float, boot: int | None) -> None:
        if self._open_id(device, alarm, source) is not None:
            return  # a raise while one is open keeps the open one (a resend, or a re-raise after reboot)
        self.db._execute("INSERT INTO alarms (device, alarm, level, source, raised_at, raise_value, threshold, "
                         "boot) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (device, alarm, level, source, at, value, threshold, boot))
        self._say(at, device, "alarm", "%s raised (%s, level %d): %g, threshold %g"
                  % (alarm, source, level, value, threshold))

    def _close(self, device: str, alarm: str, source: str, at: float, value: float, threshold: float) -> None:
        alarm_id = self._open_id(device, alarm, source)
        if alarm_id is None:
            self._say(at, device, "clear", "%s cleared (%s): %g, threshold %g; it was not open"
                      % (alarm, source, value, threshold))
            return
        self.db._execute("UPDATE alarms SET cleared_at = ?, clear_value = ? WHERE id = ?", (at, value, alarm_id))
        self._say(at, device, "clear", "%s cleared (%s): %g, threshold %g" % (alarm, source, value, threshold))

    def _open_id(self, device: str, alarm: str, source: str) -> int | None:
        rows = self.db._all("SELECT id FROM alarms WHERE device = ? AND alarm = ? AND source = ? "
                            "AND cleared_at IS NULL", (device, alarm, source))
        return int(rows[0][0]) if rows else None

    # ---- status and bulk rows ----
    def _say(self, at: float, device: str, kind: str, text: str) -> None:
        self.feed.append((at, device, kind, text))

    def _load_devices(self, names: set[str]) -> None:
        wanted = sorted(names - self.devices.keys())
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            sql = "SELECT %s FROM devices WHERE device IN (%s)%s" % (
                ", ".join(DEVICE_COLUMNS), ", ".join("?" * len(chunk)), self.db.lock_rows)
            for row in self.db._all(sql, tuple(chunk)):
                dev = dict(zip(DEVICE_COLUMNS, row, strict=True))
                dev["ut"] = json.loads(dev["ut"])
                self.devices[dev["device"]] = dev
        for name in wanted:
            if name not in self.devices:
                self.devices[name] = dict.fromkeys(DEVICE_COLUMNS)
                self.devices[name].update(device=name, ut={})

    def _flush(self) -> None:
        if self.devices:
            columns = ", ".join(DEVICE_COLUMNS)
            updates = ", ".join("%s = excluded.%s" % (c, c) for c in DEVICE_COLUMNS[1:])
            self.db._executemany(
                "INSERT INTO devices (%s) VALUES (%s) ON CONFLICT (device) DO UPDATE SET %s"
                % (columns, ", ".join("?" * len(DEVICE_COLUMNS)), updates),
                [tuple(to_json(d[c]) if c == "ut" else d[c] for c in DEVICE_COLUMNS)
                 for d in self.devices.values()])
        inserts = {
            "health": "health (device, boot, seq, received, outbox, data)",
            "births": "births (device, boot, seq, received, firmware, config, reset_cause)",
            "acks": "acks (device, boot, seq, cid, status, reasons, config, result, received)",
            "ota": "ota (device, boot, seq, cid, state, percent, reason, target, received)",
        }
        for table, target in inserts.items():
            rows = self.rows[table]
            if rows:
                self.db._executemany("INSERT INTO %s VALUES (%s)" % (target, ", ".join("?" * len(rows[0]))), rows)
        if self.feed:
            self.db._executemany("INSERT INTO feed (time, device, kind, text) VALUES (?, ?, ?, ?)", self.feed)


def _seen_kind(message: Inbound) -> str:
    """The kind `seen` records: a state message as "birth" or "will", since the number before a birth is
    the will reserved at CONNECT (not a gap) and the number before a will is not."""
    if message.kind == "state":
        return "birth" if getattr(message.message, "online", False) is True else "will"
    return message.kind
