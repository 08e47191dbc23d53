"""What the agent costs in heap once imported: module by module, as `.mpy`, in the MicroPython VM.

Usage: `python -m tools.heapreport [--kind water-level] [--json]`. Builds the emulator bundle, starts
the VM with the emulator's machine and network already loaded (on a board they are firmware, not heap),
then imports the agent's modules in the order the agent does and prints the heap each one keeps after a
collection, the part of it that went to interned names (qstrs: their text, and the pools that index them,
which MicroPython grows by doubling, so the module that crosses a pool's end pays for the next pool),
and the total. What the agent loads per call (TRANSIENT) is left out: it is not resident.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from firmware.build import REPO, build_bundle
from tools.boardemu.vmproc import VM_DIR, micropython_binary

#: The sensor modules each kind adds (agent/sensing.py imports them when it builds the sensor).
KIND_MODULES = {
    "manhole-tilt": ("agent.lis3dh", "agent.manhole"),
    "water-level": ("agent.a02yyuw", "agent.water"),
    "wind-load": ("agent.anemometer", "agent.hx711", "agent.wind"),
}
FIRMWARE = ("_emulink", "_emubus", "machine", "network", "asyncio")
#: Loaded only for a call through agent.transient (start-up, a command, a config) and dropped after it.
TRANSIENT = ("agent.identity", "agent.startup", "agent.command_read", "agent.reconfig", "agent.outbox_open",
             "agent.config_apply", "agent.config_check", "agent.defaults", "agent.calibrate",
             "agent.health_report", "protocols.messages", "protocols.topic", "protocols.cbor_lite",
             "protocols.cbor_decode", "agent.tls_context", "agent.command_run", "agent.connected", "agent.mqtt_session", "protocols.up_status")
#: Module name prefixes loaded per call too: over-the-air updates (agent/ota.py, each step per call).
TRANSIENT_PREFIXES = ("agent.ota",)

_PROBE = """
import gc, micropython, sys
def used():
    gc.collect()
    return gc.mem_alloc()
for name in %r:
    __import__(name)
base = used()
print("base", base)
micropython.qstr_info()
for name in %r:
    before = used()
    __import__(name)
    print("mod", name, used() - before)
    micropython.qstr_info()
print("total", used() - base)
micropython.qstr_info()
"""


def import_order(entries: list[str], skip: tuple[str, ...] = ()) -> list[str]:
    """Agent and protocol modules that importing and running `entries` keeps loaded, dependencies first.

    Imports inside functions count too (the agent imports its alarm and filter code when it builds
    them), except those of `skip` and of TRANSIENT.
    """
    order: list[str] = []

    def visit(name: str) -> None:
        path = REPO / (name.replace(".", "/") + ".py")
        if name in order or name in skip or name in TRANSIENT or name.startswith(TRANSIENT_PREFIXES) \
                or not path.exists():
            return
        order.append(name)  # placeholder against cycles; moved to its post-order place below
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    visit(alias.name)
            elif isinstance(node, ast.ImportFrom) and node.module:
                visit(node.module)
                for alias in node.names:
                    visit(node.module + "." + alias.name)
        order.remove(name)
        order.append(name)

    for entry in entries:
        visit(entry)
    return order


def measure(kind: str, heap: str = "512k") -> dict:
    """{"modules": [(name, bytes)], "total": bytes, "qstr": text} for one kind's agent."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        build_bundle("emulator", "0.0.0-heap", bundle)
        others = tuple(m for k, mods in KIND_MODULES.items() if k != kind for m in mods)
        modules = ["board", *import_order([*KIND_MODULES[kind], "agent.app"], others)]
        env = dict(os.environ, MICROPYPATH="%s:.frozen:%s" % (VM_DIR, bundle))
        code = _PROBE % (list(FIRMWARE), modules)
        run = subprocess.run([micropython_binary(), "-X", "heapsize=" + heap, "-c", code], env=env,
                             capture_output=True, text=True, timeout=60, cwd=tmp)
    if run.returncode:
        raise RuntimeError("heap probe failed:\n" + run.stdout + run.stderr)
    report: dict = {"kind": kind, "modules": []}
    qstr_bytes = None  # the qstrs' share of the heap (pools and text) after the last import
    qstr_base = None
    for line in run.stdout.splitlines():
        words = line.split()
        if words[:1] == ["mod"]:
            report["modules"].append([words[1], int(words[2]), 0])
        elif words[:1] == ["total"]:
            report["total"] = int(words[1])
        elif line.startswith("qstr pool"):
            report["qstr"] = line
            now = int(line.rsplit("n_total_bytes=", 1)[1])
            if report["modules"] and qstr_bytes is not None and "total" not in report:
                report["modules"][-1][2] = now - qstr_bytes
            qstr_bytes = now
            qstr_base = now if qstr_base is None else qstr_base
    report["qstr_bytes"] = (qstr_bytes or 0) - (qstr_base or 0)
    report["modules"] = [tuple(module) for module in report["modules"]]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(KIND_MODULES), action="append")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reports = [measure(kind) for kind in (args.kind or sorted(KIND_MODULES))]
    if args.json:
        json.dump(reports, sys.stdout, indent=1)
        return
    for report in reports:
        print("%s: %.1f KB resident, of which %.1f KB interned names (%s)" % (
            report["kind"], report["total"] / 1024, report["qstr_bytes"] / 1024, report.get("qstr", "")))
        print("  %-24s %6s %6s" % ("module", "bytes", "qstr"))
        for name, size, qstr in report["modules"]:
            print("  %-24s %6d %6d" % (name, size, qstr))


if __name__ == "__main__":
    main()
