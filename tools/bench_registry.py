"""The registry at city scale: provisioning and looking up 10,000 devices in `TinyRegistry`.

Every write rewrites the whole JSON file, so one `add` costs O(registry) and adding N devices one by one
O(N^2). Figures, each against the reference measured in the same run, a plain `json.load` of the same
10,000-device file (the least any read of the whole registry costs):
- `add_many` of 10,000 devices into an empty registry (one transaction);
- `add` one by one, sampled: the mean of the adds that take the registry from 9,950 to 10,000 devices
  and of its first 50; 10,000 adds one by one are EXTRAPOLATED from these two points, the cost of an add
  being linear in the registry's size (parse, check, rewrite);
- `get` of one device, warm (the registry instance has read this version of the file) and cold (the
  first read in a process); `find` of one site and of one kind (a third of the fleet); `all`.

    python -m tools.bench_registry [N]       # N devices (default 10000)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SAMPLE = 50  # adds timed one by one at each end
KINDS = ("water-level", "manhole-tilt", "wind-load")


def records(n: int, first: int = 0) -> list[dict[str, Any]]:
    """`n` device records as `fleet-sim provision` writes them, each with its own credential hash."""
    from fleet.credentials import device_credential

    out = []
    for index in range(first, first + n):
        device_id = "sim-%05d" % index
        out.append({"id": device_id, "kind": KINDS[index % 3], "site": "street %d" % index, "state": "active",
                    "credential": device_credential(device_id)[1], "board": "fleetsim", "firmware": "sim-1.0",
                    "uid": "board-%06x" % index})
    return out


def timed(call: Callable[[], object], repeat: int = 5) -> float:
    """Median seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def add_one_by_one(registry: Any, batch: list[dict[str, Any]]) -> float:
    """Mean seconds of one `add`, over `batch` added one by one."""
    started = time.perf_counter()
    for record in batch:
        registry.add(record)
    return (time.perf_counter() - started) / len(batch)


def measure(folder: Path, n: int) -> dict[str, Any]:
    """Every figure of the module docstring, in seconds, for an n-device registry in `folder`."""
    from fleet.registry import TinyRegistry

    made = records(n)
    path = folder / "registry.json"
    started = time.perf_counter()
    TinyRegistry(path).add_many(made)
    add_many_s = time.perf_counter() - started
    reference_s = timed(lambda: json.loads(path.read_bytes()))

    grown = TinyRegistry(folder / "grown.json")
    grown.add_many(made[:n - SAMPLE])
    add_full_s = add_one_by_one(grown, made[n - SAMPLE:])
    add_empty_s = add_one_by_one(TinyRegistry(folder / "small.json"), made[:SAMPLE])
    # c(size) = a + b * size through the two sampled means; sum it over sizes 0 .. n-1
    slope = (add_full_s - add_empty_s) / (n - SAMPLE)
    one_by_one_s = n * (add_empty_s - slope * (SAMPLE - 1) / 2) + slope * n * (n - 1) / 2

    target = made[n // 2]["id"]
    cold_get_s = statistics.median(_cold_get(path, target) for _ in range(5))
    registry = TinyRegistry(path)
    registry.get(target)
    return {
        "devices": n, "file_bytes": path.stat().st_size, "reference_json_load_s": reference_s,
        "add_many_s": add_many_s, "add_at_full_s": add_full_s, "add_at_empty_s": add_empty_s,
        "one_by_one_extrapolated_s": one_by_one_s,
        "get_warm_s": timed(lambda: registry.get(target), 20), "get_cold_s": cold_get_s,
        "find_site_s": timed(lambda: registry.find(site=made[n // 2]["site"]), 20),
        "find_kind_s": timed(lambda: registry.find(kind="wind-load")),
        "find_kind_count": len(registry.find(kind="wind-load")),
        "all_s": timed(registry.all),
    }


def _cold_get(path: Path, device_id: str) -> float:
    from fleet.registry import TinyRegistry

    started = time.perf_counter()
    TinyRegistry(path).get(device_id)  # a new instance: nothing read yet, as in a fresh `fleet` process
    return time.perf_counter() - started


def lines(f: dict[str, Any]) -> list[str]:
    """The figures as `make bench` prints them: each beside the json.load reference."""
    ref = f["reference_json_load_s"]

    def vs(seconds: float) -> str:
        return "%.2f ms = %.3f x json.load" % (seconds * 1e3, seconds / ref)

    return [
        "registry of %d devices (%.1f MB): reference json.load of the file %.1f ms"
        % (f["devices"], f["file_bytes"] / 1e6, ref * 1e3),
        "add_many of %d devices: %.2f s = %.1f x json.load" % (f["devices"], f["add_many_s"], f["add_many_s"] / ref),
        "add one at %d devices: %s (at 0: %.1f ms); %d one by one: ~%.0f s EXTRAPOLATED (linear in size) "
        "= %.0f x add_many" % (f["devices"], vs(f["add_at_full_s"]), f["add_at_empty_s"] * 1e3, f["devices"],
                               f["one_by_one_extrapolated_s"], f["one_by_one_extrapolated_s"] / f["add_many_s"]),
        "get one device: warm %s; cold (first read in a process) %s" % (vs(f["get_warm_s"]), vs(f["get_cold_s"])),
        "find(site) of one device: %s; find(kind) of %d devices: %s; all: %s"
        % (vs(f["find_site_s"]), f["find_kind_count"], vs(f["find_kind_s"]), vs(f["all_s"])),
    ]


def run(n: int = 10_000) -> dict[str, Any]:
    """`make bench` entry."""
    with tempfile.TemporaryDirectory() as folder:
        figures = measure(Path(folder), n)
    return {**figures, "lines": lines(figures)}


if __name__ == "__main__":
    for line in run(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)["lines"]:
        print(line)
