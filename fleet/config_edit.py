"""`--set key=value` edits of a device's desired config document (SPEC.md "Config").

Keys, as an operator types them:

    heartbeat=600                      key 5, seconds
    sample.level=10                    key 4, seconds, per measurement
    deadband.level=5                   key 6, per measurement
    calibration.level=1.0,-12          key 7, [scale, offset], per measurement
    alarm.flood.raise=200              key 3; also .clear .confirm (s) .level (1 warning, 2 alarm) .measure

The document is the fleet's *whole* desired state relative to the firmware defaults: the device replaces
its applied document with each new one (agent/config_apply.py `take`), so every edit starts from the
current desired document. An alarm that document does not name yet starts from the kind's firmware
default of that name (agent/defaults.py), so `alarm.flood.raise=200` alone keeps the default clear,
confirm and level; an alarm unknown to both needs all five fields.

`config_state` puts the desired version against the one the device reports (the store's, else the
last ack `fleet config` waited for), for `fleet device show`.

In memory a document has the wire's integer keys ({3: {...}, 5: 600}); in the registry (JSON) they are
strings ({"3": {...}, "5": 600}), alarm entries included ({"0": "level", "1": 200, ...}).
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

from fleet.errors import FleetError

Doc = dict[int, Any]

#: alarm field typed after `alarm.<name>.` -> key of the alarm entry (SPEC.md "Config" key 3)
ALARM_FIELDS = {"measure": 0, "raise": 1, "clear": 2, "confirm": 3, "level": 4}
#: table typed before `.<measurement>` -> config key
TABLES = {"sample": 4, "deadband": 6, "calibration": 7}
HEARTBEAT = 5
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")  # alarm names, as the agent accepts them
_INT = re.compile(r"[+-]?\d+\Z")
KEYS_HELP = ("heartbeat, sample.<measurement>, deadband.<measurement>, calibration.<measurement>, "
             "alarm.<name>.raise|clear|confirm|level|measure")


def parse_set(text: str) -> tuple[tuple[str, ...], str]:
    """'alarm.flood.raise=200' -> (("alarm", "flood", "raise"), "200"); FleetError when malformed."""
    key, sep, value = text.partition("=")
    path = tuple(key.strip().split("."))
    if not sep or not key.strip():
        raise FleetError("bad --set %r: use KEY=VALUE, keys: %s" % (text, KEYS_HELP))
    shapes = {1: path[0] == "heartbeat", 2: path[0] in TABLES, 3: path[0] == "alarm" and path[-1] in ALARM_FIELDS}
    if not shapes.get(len(path)) or not all(path):
        raise FleetError("unknown config key %r; keys: %s" % (key.strip(), KEYS_HELP))
    return path, value.strip()


def apply_sets(doc: Doc, kind: str, sets: list[str]) -> Doc:
    """A new document: `doc` (the desired one, integer keys) with every KEY=VALUE of `sets` applied, for a
    device of registry `kind`. FleetError naming the first bad key; the whole result is checked too."""
    from agent.defaults import MEASURES, config_for

    if kind not in MEASURES:
        raise FleetError("unknown device kind %r; the registry knows %s" % (kind, ", ".join(MEASURES)))
    out = copy.deepcopy(doc)
    defaults = config_for(kind)[3]
    touched: dict[tuple[str, ...], list[str]] = {}  # the part of the document -> the keys that changed it
    before: dict[str, dict[int, Any]] = {}  # alarm -> its entry before these edits
    for text in sets:
        path, raw = parse_set(text)
        key = ".".join(path)
        if path[0] == "heartbeat":
            out[HEARTBEAT] = _whole(key, raw)
        elif path[0] in TABLES:
            _measure(key, path[1], kind, MEASURES[kind])
            value = _calibration(key, raw) if path[0] == "calibration" else (
                _whole(key, raw) if path[0] == "sample" else _number(key, raw))
            out.setdefault(TABLES[path[0]], {})[path[1]] = value
        else:
            name, field = path[1], path[2]
            if not _NAME.match(name):
                raise FleetError("bad alarm name in %r: 1-32 of a-z 0-9 _ - starting with a letter or digit" % key)
            entry = out.setdefault(3, {}).setdefault(name, copy.deepcopy(defaults.get(name, {})))
            before.setdefault(name, dict(entry))
            if field == "measure":
                entry[0] = _measure(key, raw, kind, MEASURES[kind])
            elif field in ("raise", "clear"):
                entry[ALARM_FIELDS[field]] = _number(key, raw)
            else:
                entry[ALARM_FIELDS[field]] = _whole(key, raw)
        touched.setdefault(path[:2], []).append(key)
    # Checked once all are applied: raise=240 clear=200 may pass through raise == clear on the way.
    for part, keys in touched.items():
        _check_part(out, part, " ".join(dict.fromkeys(keys)))
    for name, old in before.items():
        _check_direction(name, old, out[3][name], touched[("alarm", name)])
    check(out)
    return out


def _check_part(doc: Doc, part: tuple[str, ...], keys: str) -> None:
    """The protocol's own checks (protocols.config) on one part of `doc`; FleetError naming `keys`."""
    from protocols.config import Alarm, Config
    from protocols.errors import ProtocolError

    try:
        if part[0] == "alarm":
            entry = doc[3][part[1]]
            if any(k not in entry for k in ALARM_FIELDS.values()):
                return  # a new alarm without all its fields: check() says which are missing
            Alarm(entry[0], entry[1], entry[2], entry[3], entry[4])
        elif part[0] == "heartbeat":
            Config(0, 1, heartbeat=doc[HEARTBEAT])
        else:
            Config(0, 1, **{part[0]: {part[1]: doc[TABLES[part[0]]][part[1]]}})
    except ProtocolError as error:
        raise FleetError("bad --set %s: %s" % (keys, error.detail or error.reason)) from None


def _check_direction(name: str, old: dict[int, Any], new: dict[int, Any], keys: list[str]) -> None:
    """Refuse an edit of one threshold that turns a high-value alarm into a low-value one (or back): with
    the flood default (raise 270, clear 240) `raise=200` alone would raise on every dry day."""
    if 1 not in old or 2 not in old or {"alarm.%s.raise" % name, "alarm.%s.clear" % name} <= set(keys):
        return
    if (old[1] > old[2]) != (new[1] > new[2]):
        high = old[1] > old[2]
        raise FleetError("bad --set %s: raise %s %s clear %s makes %s watch %s values, not %s ones; set both "
                         "alarm.%s.raise and alarm.%s.clear to move or turn it"
                         % (" ".join(dict.fromkeys(keys)), _fmt(new[1]), "below" if high else "above", _fmt(new[2]),
                            name, "low" if high else "high", "high" if high else "low", name, name))


def _fmt(value: Any) -> str:
    return str(value)  # as typed: 200, 4.2, 1.0 (not %g, which rounds 1234567 to 1.23457e+06)


def check(doc: Doc) -> None:
    """FleetError unless `doc` makes a valid config message (every alarm complete, within the limits)."""
    from protocols.errors import ProtocolError
    from protocols.messages import encode

    for name, entry in sorted(doc.get(3, {}).items()):
        missing = [f for f, k in ALARM_FIELDS.items() if k not in entry]
        if missing:
            raise FleetError("alarm.%s is new: also set %s" % (name, ", ".join("alarm.%s.%s" % (name, f)
                                                                                for f in missing)))
    try:
        encode(build(0xFFFFFFFF, 0xFFFFFFFF, doc))  # the largest header: the size check holds for any cid
    except ProtocolError as error:
        raise FleetError("the config document is not valid: %s" % (error.detail or error.reason)) from None


def build(cid: int, version: int, doc: Doc) -> Any:
    """The config command carrying `doc` as `version`: a protocols.config.Config (validated when built)
    whose message also keeps the agent's extra alarm keys (5 clear confirm, 6/7 samples, agent/config.py)
    that a firmware default brought in, so editing one field of such an alarm does not drop them."""
    from protocols.config import Config

    class _DeviceConfig(Config):
        def to_obj(self) -> dict:
            out = super().to_obj()
            for name, entry in doc.get(3, {}).items():
                out[3][name].update({k: v for k, v in entry.items() if k not in ALARM_FIELDS.values()})
            return out

    return _DeviceConfig(cid, version, doc.get(3), doc.get(4), doc.get(HEARTBEAT), doc.get(6), doc.get(7))


def next_version(desired: int | None, *reported: int | None) -> int:
    """The version of a new document: one above both the desired version and every reported one, so the
    device never takes it for the document it runs (the same version again is a no-op on the device)."""
    return max([desired or 0] + [v for v in reported if v is not None]) + 1


def to_json(doc: Doc) -> dict[str, Any]:
    """The registry's form of a document: integer keys as strings, alarm entries included."""
    out: dict[str, Any] = {}
    for key, value in sorted(doc.items()):
        if key == 3:
            value = {name: {str(k): v for k, v in sorted(entry.items())} for name, entry in sorted(value.items())}
        out[str(key)] = copy.deepcopy(value)
    return out


def from_json(stored: dict[str, Any]) -> Doc:
    """The document of the registry's form (`to_json`)."""
    out: Doc = {}
    for key, value in stored.items():
        if key == "3":
            value = {name: {int(k): v for k, v in entry.items()} for name, entry in value.items()}
        out[int(key)] = copy.deepcopy(value)
    return out


def desired(record: dict[str, Any]) -> tuple[int, Doc]:
    """(version, document) a registry record desires; (0, {}) when the fleet never sent it a config."""
    stored = record.get("config")
    if not stored:
        return 0, {}
    return int(stored["version"]), from_json(stored["doc"])


def describe(doc: Doc) -> list[str]:
    """A document as the --set entries that make it from the firmware defaults ("heartbeat=600", ...)."""
    out = ["heartbeat=%s" % doc[HEARTBEAT]] if HEARTBEAT in doc else []
    for table, key in TABLES.items():
        for measure, value in sorted(doc.get(key, {}).items()):
            shown = ",".join(_fmt(v) for v in value) if table == "calibration" else _fmt(value)
            out.append("%s.%s=%s" % (table, measure, shown))
    for name, entry in sorted(doc.get(3, {}).items()):
        out += ["alarm.%s.%s=%s" % (name, f, entry[k] if f == "measure" else _fmt(entry[k]))
                for f, k in ALARM_FIELDS.items() if k in entry]
    return out


def _number(key: str, raw: str) -> int | float:
    try:
        value = int(raw) if _INT.match(raw) else float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise FleetError("bad --set %s=%s: not a number" % (key, raw))
    return value


def _whole(key: str, raw: str) -> int:
    if not _INT.match(raw):
        raise FleetError("bad --set %s=%s: a whole number is needed" % (key, raw))
    return int(raw)


def _calibration(key: str, raw: str) -> list[int | float]:
    parts = raw.split(",")
    if len(parts) != 2:
        raise FleetError("bad --set %s=%s: give scale,offset, e.g. %s=1.0,-12" % (key, raw, key))
    return [_number(key, parts[0].strip()), _number(key, parts[1].strip())]


def _measure(key: str, measure: str, kind: str, measures: tuple[str, ...]) -> str:
    if measure not in measures:
        raise FleetError("bad --set %s: a %s device measures %s, not %r" % (key, kind, ", ".join(measures), measure))
    return measure


def config_state(record: dict[str, Any], store_url: str | None = None, home: Path | None = None) -> dict[str, Any]:
    """Desired against reported config of a registry record: {desired, reported, state, reasons, sent_at}.

    state: "defaults" (the fleet never sent one), "in force", "refused" (the device's ack of the desired
    version refused entries), "pending" (not acknowledged yet, e.g. asleep) or "unknown" (never reported).
    Reported is what the store saw last (birth or ack), else the ack `fleet config` waited for."""
    stored = record.get("config") or {}
    answer = stored.get("answer") or {}
    status, acks = _from_store(record["id"], stored.get("cid"), store_url, home)
    reported = status.config_version if status is not None and status.config_version is not None \
        else answer.get("config")
    ack = acks[-1] if acks else (answer if answer.get("cid") == stored.get("cid") else {})
    refused = ack.get("status") in (1, "refused")
    out = {"desired": stored.get("version"), "reported": reported, "sent_at": stored.get("sent_at"),
           "reasons": _reasons(ack.get("reasons")) if refused else []}
    if not stored:
        out["state"] = "defaults"
    elif ack and refused:
        out["state"] = "refused"
    elif reported is not None and reported == stored.get("version"):
        out["state"] = "in force"
    else:
        out["state"] = "pending"
    return out


def _reasons(value: Any) -> list[str]:
    if isinstance(value, str):  # a store may hand its JSON column back as text
        import json

        try:
            value = json.loads(value)
        except ValueError:
            return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def _from_store(device_id: str, cid: int | None, store_url: str | None,
                home: Path | None) -> tuple[Any, list[dict[str, Any]]]:
    """(DeviceStatus or None, the acks of `cid`) from the store; (None, []) without a store."""
    from fleet.home import fleet_home
    from fleet.store import DB_FILE, open_store

    if store_url is None and not ((home or fleet_home()) / DB_FILE).exists():
        return None, []  # no ingest has run here: a read never creates the store

    store = open_store(store_url, home=home)
    try:
        found = store.status(device_id)
        acks = store.acks(device_id, cid) if cid is not None else []
    finally:
        store.close()
    return (found[0] if found else None), acks


def store_config_version(device_id: str, store_url: str | None, home: Path | None = None) -> int | None:
    """The config version the store last saw the device report (birth or ack), or None when unknown."""
    status, _ = _from_store(device_id, None, store_url, home)
    return None if status is None else status.config_version
