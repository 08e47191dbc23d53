"""What the simulator sent, per device and boot, so a test can check that what was stored equals it.

The JSON report (`fleet-sim run --report FILE`):

    {"fleet": "city", "broker": "127.0.0.1:1883", "scenario": "rainstorm", ..., "totals": {...},
     "devices": {"sim-wl-00001": {"kind": "water-level", "garbage": 2, "duplicates": 1, "reordered": 0,
        "connects": 2, "outages": 1, "commands": 0,
        "boots": {"1": {"acked": [[0, 41], [43, 97]], "births": [1, 44], "wills": [0], "lost": [[42, 42]],
                        "reserved": [43], "uncertain": [], "readings": 57, "telemetry": 57}}}}}

Per boot: `acked` the sequence numbers the broker acknowledged (PUBACK; every kind), `births` the
acknowledged births among them, `wills` the reserved numbers of wills the broker published for us (we
cut the connection while it ran), `lost` the numbers the device used but never published (health or an
ack while offline, outbox records dropped when full), `reserved` will numbers whose will was never
published (the session ended with DISCONNECT, or never came up), `uncertain` [seq, kind] of messages in
flight when a connection died on its own (the broker may or may not have them), `readings` the readings
in acknowledged telemetry. `garbage` and `duplicates` count acknowledged bad messages and resends of
already acknowledged ones (they use no sequence number); `garbage_unsure` bad messages in flight when a
connection died on its own. Ranges are inclusive [first, last].

A device that was offered an update also has "ota": {"offers", "cancels" (non-empty offers received,
cancels among them), "taken" (the cids it restarted into update mode for), "pulls", "received" (chunk
data bytes taken: each byte once, duplicates dropped), "cuts" (links lost mid-download on purpose),
"restarts" (into and out of update mode), "outcome" ({cid, state: done | failed | rolled_back, reason,
target} of its last update) and "firmware" (the version it runs at the end)}.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from pathlib import Path
from typing import Any


class Ranges:
    """A set of integers kept as sorted inclusive ranges; appending the next number is O(1)."""

    __slots__ = ("starts", "ends")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, n: int) -> bool:
        """Add `n`; False when it was there already."""
        starts, ends = self.starts, self.ends
        if ends and ends[-1] == n - 1:  # the common case: the next number
            ends[-1] = n
            return True
        i = bisect_right(starts, n) - 1
        if i >= 0 and n <= ends[i]:
            return False
        left = i >= 0 and ends[i] == n - 1
        right = i + 1 < len(starts) and starts[i + 1] == n + 1
        if left and right:
            ends[i] = ends[i + 1]
            del starts[i + 1], ends[i + 1]
        elif left:
            ends[i] = n
        elif right:
            starts[i + 1] = n
        else:
            starts.insert(i + 1, n)
            ends.insert(i + 1, n)
        return True

    def __contains__(self, n: int) -> bool:
        i = bisect_right(self.starts, n) - 1
        return i >= 0 and n <= self.ends[i]

    def __len__(self) -> int:
        return sum(e - s + 1 for s, e in zip(self.starts, self.ends, strict=True))

    def pairs(self) -> list[list[int]]:
        """[[first, last], ...] in order."""
        return [[s, e] for s, e in zip(self.starts, self.ends, strict=True)]


class BootLedger:
    """What one boot of one device sent."""

    __slots__ = ("acked", "births", "wills", "lost", "reserved", "uncertain", "readings", "telemetry")

    def __init__(self) -> None:
        self.acked = Ranges()
        self.births: list[int] = []
        self.wills: list[int] = []
        self.lost = Ranges()
        self.reserved: list[int] = []
        self.uncertain: list[list[Any]] = []
        self.readings = 0
        self.telemetry = 0

    def to_json(self) -> dict[str, Any]:
        """The boot's entry of the report."""
        return {"acked": self.acked.pairs(), "births": self.births, "wills": self.wills,
                "lost": self.lost.pairs(), "reserved": self.reserved, "uncertain": self.uncertain,
                "readings": self.readings, "telemetry": self.telemetry}


class OtaLedger:
    """What one device did with OTA offers (made at its first offer)."""

    __slots__ = ("offers", "cancels", "taken", "pulls", "received", "cuts", "restarts", "outcome", "firmware")

    def __init__(self, firmware: str) -> None:
        self.offers = self.cancels = self.pulls = self.received = self.cuts = self.restarts = 0
        self.taken: list[int] = []
        self.outcome: dict[str, Any] | None = None
        self.firmware = firmware

    def to_json(self) -> dict[str, Any]:
        """The device's "ota" entry of the report."""
        return {"offers": self.offers, "cancels": self.cancels, "taken": self.taken, "pulls": self.pulls,
                "received": self.received, "cuts": self.cuts, "restarts": self.restarts, "outcome": self.outcome,
                "firmware": self.firmware}


class DeviceLedger:
    """What one device sent, by boot, and its counters."""

    __slots__ = ("kind", "boots", "garbage", "garbage_unsure", "duplicates", "reordered", "connects", "outages",
                 "commands", "ota")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.boots: dict[int, BootLedger] = {}
        self.garbage = self.garbage_unsure = self.duplicates = self.reordered = 0
        self.connects = self.outages = self.commands = 0
        self.ota: OtaLedger | None = None

    def boot(self, boot: int) -> BootLedger:
        """The ledger of boot `boot`, made on first use."""
        entry = self.boots.get(boot)
        if entry is None:
            entry = self.boots[boot] = BootLedger()
        return entry

    def ota_entry(self, firmware: str) -> OtaLedger:
        """The OTA ledger, made on first use for a device running `firmware`."""
        if self.ota is None:
            self.ota = OtaLedger(firmware)
        return self.ota

    def to_json(self) -> dict[str, Any]:
        """The device's entry of the report ("ota" only for a device that was offered an update)."""
        out = {"kind": self.kind, "garbage": self.garbage, "garbage_unsure": self.garbage_unsure,
               "duplicates": self.duplicates,
               "reordered": self.reordered, "connects": self.connects, "outages": self.outages,
               "commands": self.commands, "boots": {str(b): e.to_json() for b, e in sorted(self.boots.items())}}
        if self.ota is not None:
            out["ota"] = self.ota.to_json()
        return out


def expand(pairs: list[list[int]]) -> set[int]:
    """The numbers of inclusive ranges."""
    return {n for first, last in pairs for n in range(first, last + 1)}


def published(boot: dict[str, Any], stored: set[int] | None = None) -> set[int]:
    """Numbers of this boot the broker certainly has: acknowledged, and wills it published; with `stored`
    (what the store holds), the uncertain ones it turned out to have."""
    out = expand(boot["acked"]) | set(boot["wills"])
    if stored is not None:
        out |= {seq for seq, _kind in boot["uncertain"] if seq in stored}
    return out


def expected_gaps(boot: dict[str, Any], stored: set[int] | None = None) -> list[tuple[int, int]]:
    """The gaps (first, last) a store must report for this boot: numbers the device used and never
    published, between the lowest and highest published one, except a reserved will just before a state
    message (SPEC.md "State": the will of a session that ended cleanly is never published)."""
    seen = published(boot, stored)
    if not seen:
        return []
    states = set(boot["births"]) | set(boot["wills"])
    states |= {seq for seq, kind in boot["uncertain"] if kind == "state" and seq in seen}
    missing = expand(boot["lost"]) | {r for r in boot["reserved"] if r + 1 not in states}
    missing |= {seq for seq, _kind in boot["uncertain"] if seq not in seen}
    low, high = min(seen), max(seen)
    gaps: list[tuple[int, int]] = []
    for n in sorted(m for m in missing if low < m < high):
        if gaps and gaps[-1][1] == n - 1:
            gaps[-1] = (gaps[-1][0], n)
        else:
            gaps.append((n, n))
    return gaps


TOTAL_KEYS = ("devices", "acked", "readings", "telemetry", "garbage", "garbage_unsure", "duplicates", "reordered",
              "wills", "lost", "uncertain", "connects", "outages", "commands", "ota_offered", "ota_taken", "ota_done",
              "ota_failed", "ota_rolled_back", "ota_pulls", "ota_received", "ota_cuts")


def totals(devices: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Sums over the devices of a report."""
    out = dict.fromkeys(TOTAL_KEYS, 0)
    out["devices"] = len(devices)
    for entry in devices.values():
        for key in ("garbage", "garbage_unsure", "duplicates", "reordered", "connects", "outages", "commands"):
            out[key] += entry[key]
        for boot in entry["boots"].values():
            out["acked"] += len(expand(boot["acked"]))
            out["readings"] += boot["readings"]
            out["telemetry"] += boot["telemetry"]
            out["wills"] += len(boot["wills"])
            out["lost"] += len(expand(boot["lost"]))
            out["uncertain"] += len(boot["uncertain"])
        ota = entry.get("ota")
        if ota is not None:
            out["ota_offered"] += 1 if ota["offers"] else 0
            out["ota_taken"] += len(ota["taken"])
            if ota["outcome"] is not None:
                out["ota_" + ota["outcome"]["state"]] += 1
            for key in ("pulls", "received", "cuts"):
                out["ota_" + key] += ota[key]
    return out


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from the reports of several processes (each holding a share of the devices)."""
    if not parts:
        raise ValueError("no reports to merge")
    out = {key: value for key, value in parts[0].items() if key not in ("devices", "totals", "process")}
    devices: dict[str, Any] = {}
    for part in parts:
        devices.update(part["devices"])
    out["devices"] = dict(sorted(devices.items()))
    out["totals"] = totals(out["devices"])
    for key in ("publishes", "messages_s", "connected", "rss_mb"):
        out["totals"][key] = sum(part["totals"].get(key, 0) for part in parts)
    out["totals"]["max_lag_s"] = max(part["totals"].get("max_lag_s", 0.0) for part in parts)
    out["processes"] = [part.get("process", {}) for part in parts]
    return out


def write(report: dict[str, Any], path: str | Path) -> None:
    """Write the report as JSON (one device per line would not help: it is read by programs)."""
    Path(path).write_text(json.dumps(report, separators=(",", ":")) + "\n")


def load(path: str | Path) -> dict[str, Any]:
    """Read a report."""
    return json.loads(Path(path).read_text())
