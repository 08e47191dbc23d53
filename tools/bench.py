"""`make bench`: run every benchmark and print each figure beside the reference measured in the same run.

Each benchmark module offers `run() -> dict`; a figure that compares against a reference (cbor2 under
CPython, mosquitto_sub, the line rate) carries both numbers and their ratio, never a bare wall time.
Results also go to build/bench.json for the record.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: Benchmark modules, in the order they run; a module missing from the tree is reported, not skipped silently.
BENCHMARKS = [
    "tools.bench_payload",
    "tools.bench_cbor",
    "tools.bench_agent",
    "tools.bench_agent_hil",
    "tools.bench_fleet",
    "tools.bench_store",
    "tools.bench_registry",
    "tools.bench_health",
    "tools.bench_ota",
    "tools.bench_ingest",
    "tools.bench_ingest_memory",
    "tools.bench_endurance",
]


def _print_section(name: str, result: dict) -> None:
    print("\n== %s" % name)
    for line in result.get("lines", []):
        print("  " + line)


def main(argv: list[str] | None = None) -> int:
    selected = argv if argv else BENCHMARKS
    results: dict[str, object] = {}
    failed = 0
    for name in selected:
        started = time.perf_counter()
        try:
            module = importlib.import_module(name)
            result = module.run()
        except Exception as error:  # a broken benchmark must not hide the others' figures
            failed += 1
            print("\n== %s\n  FAILED: %s: %s" % (name, type(error).__name__, error))
            results[name] = {"error": str(error)}
            continue
        result.setdefault("lines", [])
        result["seconds"] = round(time.perf_counter() - started, 2)
        results[name] = result
        _print_section(name, result)
    out = REPO / "build" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print("\nresults written to %s" % out.relative_to(REPO))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
