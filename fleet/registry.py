"""The device registry: the `Registry` interface and `TinyRegistry`, its TinyDB implementation.

A server database can implement `Registry` later; everything else in the fleet talks to the interface.

TinyRegistry keeps one JSON file (FLEET_HOME/registry.json, mode 0600: it holds credential hashes).
- Atomic: the file is only ever replaced by a rename (`fleet.home.write_atomic`), so a crash leaves the
  old registry or the new one, never an unreadable mix.
- Concurrent `fleet` processes: every read-modify-write holds an exclusive flock on `registry.json.lock`
  and reads the file afresh inside it (a TinyDB is opened per transaction, so no cache outlives the lock).
  Plain reads take no lock: a rename is atomic, so they see one whole version.

Records leaving the registry never carry the credential hash (`credential` is just {"username"}); only
`password_entries()` hands hashes out, to write the broker's password file.
"""

from __future__ import annotations

import abc
import copy
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage
from tinydb.table import Table

from fleet.credentials import check_username, is_mosquitto_hash
from fleet.errors import FleetError
from fleet.home import fleet_home, private_dir, write_atomic

REGISTRY_FILE = "registry.json"
TABLE = "devices"

Record = dict[str, Any]

KINDS = ("manhole-tilt", "water-level", "wind-load")
STATES = ("provisioning", "pending-selftest", "active", "retired")
#: Every field of a device record and its default; `id`, `kind` and `site` have none.
DEFAULTS: dict[str, Any] = {
    "lat": None, "lon": None, "board": None, "uid": None, "firmware": None, "config_version": 0,
    "calibration": {}, "credential": None, "history": [], "state": "provisioning",
    "config": None,  # desired config: {version, doc, sent_at, ...} (fleet/config_edit.py), None: defaults
}


class Registry(abc.ABC):
    """What the fleet needs from a device registry. Records are plain dicts: id, kind, site, lat, lon,
    board, uid, firmware, config_version, calibration {}, credential {username, hash}, history
    [{at, action, detail}], state, created, updated (times ISO-8601 UTC, "2025-01-31T12:00:00Z")."""

    @abc.abstractmethod
    def add(self, record: Record) -> Record:
        """Register a new device and return it (defaults filled, a "registered" history entry).

        FleetError for a duplicate id, or a board uid / MQTT username held by another non-retired device."""

    @abc.abstractmethod
    def get(self, device_id: str) -> Record:
        """One device; FleetError when the id is unknown."""

    @abc.abstractmethod
    def update(self, device_id: str, **fields: Any) -> Record:
        """Change fields of one device (not id, created or history) and return it; sets `updated`.

        `credential` is replaced whole: pass {"username", "hash"}; {"username"} alone drops the hash
        (what retiring does), so never pass back the hash-less credential a read returned."""

    @abc.abstractmethod
    def append_history(self, device_id: str, action: str, detail: Any = "") -> Record:
        """Add {at, action, detail} to a device's history and return it; `detail` is text or JSON data."""

    @abc.abstractmethod
    def find(self, kind: str | None = None, site: str | None = None, state: str | None = None) -> list[Record]:
        """Devices matching every filter given, sorted by id."""

    @abc.abstractmethod
    def all(self) -> list[Record]:
        """Every device, sorted by id."""

    @abc.abstractmethod
    def password_entries(self) -> list[tuple[str, str, str]]:
        """(device id, username, hash) of every non-retired device holding a credential, sorted by id.

        The only way hashes leave the registry: for the broker's password file."""


def public(record: Record) -> Record:
    """A deep copy of `record` without the credential hash: what may be shown, exported or logged."""
    out = copy.deepcopy(record)
    if isinstance(out.get("credential"), dict):
        out["credential"] = {"username": out["credential"].get("username")}
    return dict(sorted(out.items()))


class _AtomicJSONStorage(Storage):
    """TinyDB storage on one JSON file, replaced atomically on every write.

    Reads the file once and keeps it for its own (short, locked) lifetime."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._data: dict[str, dict[str, Any]] | None = None

    def read(self) -> dict[str, dict[str, Any]] | None:
        if self._data is None:
            self._data = _load(self.path)
        return self._data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        write_atomic(self.path, text.encode("utf-8"), 0o600)
        self._data = data


def _load(path: Path) -> dict[str, dict[str, Any]] | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise FleetError("cannot read the registry %s (%s)" % (path, error.strerror)) from None
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise FleetError("the registry %s is corrupt (%s); restore it from a backup, or move it aside "
                         "to start an empty registry" % (path, error)) from None
    if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
        raise FleetError("the registry %s is not a TinyDB file; restore it from a backup, or move it "
                         "aside to start an empty registry" % path)
    return data


class TinyRegistry(Registry):
    """`Registry` on a TinyDB JSON file at `path`, safe against crashes and concurrent processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._swept = False

    # -- transactions --------------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Table]:
        db = TinyDB(str(self.path), storage=_AtomicJSONStorage)
        try:
            yield db.table(TABLE, cache_size=0)
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[Table]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
            self._sweep()
            with self._read() as table:
                yield table
        finally:
            os.close(fd)

    def _sweep(self) -> None:
        """Remove temporary files a writer killed mid-write left behind (we hold the lock: none is live)."""
        if not self._swept:
            for stale in self.path.parent.glob("." + self.path.name + ".*.tmp"):
                stale.unlink(missing_ok=True)
            self._swept = True

    # -- the interface ------------------------------------------------------------------------------

    def add(self, record: Record) -> Record:
        new = new_record(record)
        with self._write() as table:
            old = table.get(Query().id == new["id"])
            if old is not None:
                raise FleetError("device id %r is already in the registry (state %s); choose another id"
                                 % (new["id"], _field(old, "state")))
            _check_unique(table, new)
            table.insert(new)
        return public(new)

    def get(self, device_id: str) -> Record:
        with self._read() as table:
            return public(_one(table, device_id))

    def update(self, device_id: str, **fields: Any) -> Record:
        for name in ("id", "created", "history"):
            if name in fields:
                raise FleetError("a device's %s cannot be changed with update()" % name)
        with self._write() as table:
            record = copy.deepcopy(_one(table, device_id))
            record.update(fields)
            record["updated"] = now_utc()
            validate(record)
            _check_unique(table, record)
            table.update(record, Query().id == device_id)
        return public(record)

    def append_history(self, device_id: str, action: str, detail: Any = "") -> Record:
        if not isinstance(action, str) or not action:
            raise FleetError("a history entry needs an action, e.g. 'flashed'")
        with self._write() as table:
            record = copy.deepcopy(_one(table, device_id))
            record["updated"] = now_utc()
            record["history"].append({"at": record["updated"], "action": action, "detail": detail})
            validate(record)
            table.update({"history": record["history"], "updated": record["updated"]},
                         Query().id == device_id)
        return public(record)

    def find(self, kind: str | None = None, site: str | None = None, state: str | None = None) -> list[Record]:
        wanted = {k: v for k, v in (("kind", kind), ("site", site), ("state", state)) if v is not None}
        return [r for r in self.all() if all(r.get(k) == v for k, v in wanted.items())]

    def all(self) -> list[Record]:
        with self._read() as table:
            return sorted((public(dict(doc)) for doc in table.all()), key=lambda r: str(r.get("id")))

    def password_entries(self) -> list[tuple[str, str, str]]:
        with self._read() as table:
            docs = [dict(doc) for doc in table.all()]
        entries = []
        for doc in docs:
            cred = doc.get("credential") or {}
            if doc.get("state") != "retired" and cred.get("username") and cred.get("hash"):
                entries.append((doc["id"], cred["username"], cred["hash"]))
        return sorted(entries)


def now_utc() -> str:
    """The current time as the registry writes it: ISO-8601 UTC to the second, "...Z"."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_record(given: Record) -> Record:
    """A complete record from the fields given (defaults for the rest), validated; with "registered"."""
    if not isinstance(given, dict):
        raise FleetError("a device record is a dict, not %s" % type(given).__name__)
    now = now_utc()
    record = {**copy.deepcopy(DEFAULTS), **copy.deepcopy(given), "created": now, "updated": now}
    record["history"] = list(record["history"]) + [{"at": now, "action": "registered", "detail": ""}]
    validate(record)
    return record


def validate(record: Record) -> None:
    """FleetError naming the first field of `record` that breaks the schema."""
    from protocols.errors import ProtocolError
    from protocols.topics import DEVICE_MAX, check_id

    unknown = set(record) - set(DEFAULTS) - {"id", "kind", "site", "created", "updated"}
    if unknown:
        raise FleetError("unknown device field(s) %s; known: %s"
                         % (", ".join(sorted(unknown)), ", ".join(["id", "kind", "site", *DEFAULTS])))
    try:
        check_id(record.get("id"), "device", DEVICE_MAX)
    except ProtocolError as error:
        raise FleetError("bad device id %r: %s" % (record.get("id"), error.detail)) from None
    if record.get("kind") not in KINDS:
        raise FleetError("unknown kind %r; use one of %s" % (record.get("kind"), ", ".join(KINDS)))
    if record["state"] not in STATES:
        raise FleetError("unknown state %r; use one of %s" % (record["state"], ", ".join(STATES)))
    if not isinstance(record.get("site"), str) or not record["site"].strip():
        raise FleetError("device %s needs a site (where it is mounted)" % record["id"])
    for name in ("lat", "lon"):
        if record[name] is not None and (isinstance(record[name], bool)
                                         or not isinstance(record[name], (int, float))):
            raise FleetError("%s must be a number, not %r" % (name, record[name]))
    if not isinstance(record["calibration"], dict) or not isinstance(record["history"], list):
        raise FleetError("calibration must be a dict and history a list")
    _validate_credential(record["credential"])
    desired = record.get("config")
    if desired is not None and not (isinstance(desired, dict) and isinstance(desired.get("doc"), dict)
                                    and isinstance(desired.get("version"), int) and desired["version"] >= 1):
        raise FleetError("config must be None or {version >= 1, doc {...}, sent_at}, not %r" % (desired,))


def _validate_credential(cred: Any) -> None:
    if cred is None:
        return
    if not isinstance(cred, dict) or set(cred) - {"username", "hash"}:
        raise FleetError("a credential is {username, hash}, not %r" % (sorted(cred) if isinstance(cred, dict)
                                                                        else type(cred).__name__))
    check_username(cred.get("username"))
    # Never echo the value: it is a hash of a secret.
    if cred.get("hash") is not None and not is_mosquitto_hash(cred["hash"]):
        raise FleetError("the credential hash is not a Mosquitto $7$ hash; make it with mosquitto_hash()")


def _field(doc: Any, name: str) -> Any:
    return doc.get(name) if isinstance(doc, dict) else None


def _one(table: Table, device_id: str) -> Record:
    doc = table.get(Query().id == device_id)
    if doc is None:
        raise FleetError("no device %r in the registry; `fleet devices` lists them" % (device_id,))
    return dict(doc)


def _check_unique(table: Table, record: Record) -> None:
    """A board (uid) and an MQTT username belong to at most one device that is not retired."""
    if record["state"] == "retired":
        return
    username = (record.get("credential") or {}).get("username")
    for other in table.all():
        if other.get("id") == record["id"] or other.get("state") == "retired":
            continue
        if record.get("uid") and other.get("uid") == record["uid"]:
            raise FleetError("board %s is already registered as device %r (state %s); retire that device "
                             "first" % (record["uid"], other.get("id"), other.get("state")))
        if username and (other.get("credential") or {}).get("username") == username:
            raise FleetError("MQTT username %r already belongs to device %r; use another" % (username,
                                                                                            other.get("id")))


def open_registry(home: Path | None = None) -> Registry:
    """The fleet's registry: TinyRegistry on <home or FLEET_HOME>/registry.json."""
    return TinyRegistry((private_dir(home) if home else fleet_home()) / REGISTRY_FILE)
