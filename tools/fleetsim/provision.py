"""Register simulated devices in a fleet home, with credentials, and write the broker's passwd and ACL.

`fleet provision` registers one board at a time through `Registry.add`, which rewrites and fsyncs the
whole registry file: fine for a technician, quadratic for ten thousand devices (tools/bench_registry.py).
This registers the batch with `Registry.add_many`, ONE transaction with the same schema and uniqueness
rules, then rewrites passwd and acl once (`fleet.broker.write_broker_files`).

The secrets go to a devices file (JSON, mode 0600) that `fleet-sim run --devices` reads; the registry
keeps only their hashes, as for real boards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fleet.errors import FleetError

#: registry kind -> the short tag in simulated device ids
TAGS = {"water-level": "wl", "manhole-tilt": "mh", "wind-load": "wd"}
MIXED = "mixed"
DEVICES_FILE = "fleetsim-devices.json"


def device_ids(count: int, kind: str, prefix: str = "sim", first: int = 1) -> list[tuple[str, str]]:
    """[(id, kind)] of `count` devices; kind "mixed" cycles through the three kinds."""
    kinds = list(TAGS) if kind == MIXED else [kind]
    if kind != MIXED and kind not in TAGS:
        raise FleetError("unknown kind %r; use one of %s or %s" % (kind, ", ".join(TAGS), MIXED))
    out = []
    for n in range(first, first + count):
        chosen = kinds[(n - first) % len(kinds)]
        out.append(("%s-%s-%05d" % (prefix, TAGS[chosen], n), chosen))
    return out


def provision(home: Path, count: int, kind: str, prefix: str = "sim", first: int = 1,
              out: Path | None = None, reload: bool = True, firmware: str = "sim-1.0",
              board: str = "fleetsim") -> dict[str, Any]:
    """Register the devices (as `board`, which an OTA campaign matches against its release's), write broker
    files (and SIGHUP a running broker when `reload`), write the devices file. Returns figures: seconds per
    step and where the files are."""
    from fleet.broker import reload_broker, write_broker_files
    from fleet.credentials import device_credential
    from fleet.home import fleet_name, write_atomic
    from fleet.registry import open_registry

    if count < 1:
        raise FleetError("--count must be at least 1")
    fleet = fleet_name(home)
    began = time.perf_counter()
    devices, records = [], []
    for device_id, device_kind in device_ids(count, kind, prefix, first):
        secret, credential = device_credential(device_id)
        records.append({"id": device_id, "kind": device_kind, "site": "simulated " + device_id,
                        "credential": credential, "state": "active", "board": board, "firmware": firmware})
        devices.append({"id": device_id, "kind": device_kind, "username": credential["username"], "password": secret})
    made = time.perf_counter()
    registry = open_registry(home)
    try:
        registry.add_many(records)  # one locked transaction for the whole batch (module docstring)
    except FleetError:  # say how many clash, and what to do
        held = {r["id"] for r in registry.all()}
        clash = [r["id"] for r in records if r["id"] in held]
        if not clash:
            raise
        raise FleetError("%d of these ids are registered already (first: %s); use another --prefix or --first"
                         % (len(clash), clash[0])) from None
    registered = time.perf_counter()
    files = write_broker_files(registry, home=home)
    reloaded = reload_broker(files.folder) if reload else False
    brokered = time.perf_counter()
    path = out or home / DEVICES_FILE
    host = "127.0.0.1" if files.bind in ("0.0.0.0", "::", "") else files.bind
    existing = load_devices(path)["devices"] if path.exists() else []
    doc = {"fleet": fleet, "broker": {"host": host, "port": files.port}, "devices": existing + devices}
    write_atomic(path, json.dumps(doc, indent=0).encode(), 0o600)
    return {"devices": len(devices), "fleet": fleet, "devices_file": str(path), "broker_dir": str(files.folder),
            "broker_reloaded": reloaded, "credentials_s": round(made - began, 3),
            "registry_s": round(registered - made, 3), "broker_files_s": round(brokered - registered, 3),
            "total_s": round(brokered - began, 3)}


def load_devices(path: Path) -> dict[str, Any]:
    """The devices file: {fleet, broker {host, port}, devices [{id, kind, username, password}]}."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FleetError("no devices file %s; make one with `fleet-sim provision`" % path) from None
    except (OSError, ValueError) as error:
        raise FleetError("cannot read the devices file %s (%s)" % (path, error)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("devices"), list):
        raise FleetError("%s is not a fleet-sim devices file; make one with `fleet-sim provision`" % path)
    return doc
