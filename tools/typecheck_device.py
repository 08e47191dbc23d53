"""Type-check device-side code (agent/, firmware/, protocols/) against the MicroPython stubs.

mypy normally checks against CPython's typeshed, which would accept `time.monotonic()` or `os.path`
although neither exists on the board. Here we point mypy at `micropython-stdlib-stubs` as its typeshed
and put `micropython-esp32-stubs` on MYPYPATH, so a call that doesn't exist on an ESP32 is an error.
Errors inside the stub packages themselves are not ours and are filtered out.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHECKED = ("agent", "firmware/boards", "firmware/boot.py", "firmware/main.py", "protocols")
#: Device code is mostly unannotated, so mypy's inference on it (an empty list, a value narrowed by a
#: helper) is noise. What this check is for stays on: modules, attributes, calls and signatures that
#: don't exist on the board (attr-defined, name-defined, call-arg, call-overload, import errors).
QUIET = ("operator", "index", "var-annotated", "assignment", "misc")
WORK = REPO / "build" / "device-typeshed"


def _stub_files(dist: str) -> list[Path]:
    files = metadata.distribution(dist).files or []
    return [Path(str(f.locate())) for f in files if str(f).endswith(".pyi")]


def prepare() -> tuple[Path, Path]:
    """Lay out a typeshed of MicroPython's stdlib and a folder of the ESP32 port's modules."""
    site = Path(sysconfig.get_paths()["purelib"])
    typeshed, port = WORK / "typeshed", WORK / "esp32"
    shutil.rmtree(WORK, ignore_errors=True)
    shutil.copytree(site / "stdlib", typeshed / "stdlib")
    # mypy insists on finding mypy_extensions in the custom typeshed.
    shutil.copytree(site / "mypy" / "typeshed" / "stubs" / "mypy-extensions", typeshed / "stubs" / "mypy-extensions")
    port.mkdir(parents=True)
    for stub in _stub_files("micropython-esp32-stubs"):
        if stub.parent == site:
            shutil.copy2(stub, port / stub.name)
    shutil.copytree(site / "_mpy_shed", port / "_mpy_shed")
    return typeshed, port


def main() -> int:
    typeshed, port = prepare()
    targets = [name for name in CHECKED if (REPO / name).is_file() or any((REPO / name).rglob("*.py"))]
    if not targets:
        print("device type check: nothing to check")
        return 0
    cmd = [
        sys.executable, "-m", "mypy", "--custom-typeshed-dir", str(typeshed), "--python-version", "3.11",
        "--no-site-packages", "--ignore-missing-imports", "--no-warn-unused-ignores", "--check-untyped-defs", "--no-error-summary",
        "--explicit-package-bases", "--cache-dir", str(WORK / "cache"),
        *("--disable-error-code=" + code for code in QUIET), *targets,
    ]
    env = {"MYPYPATH": str(port), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, check=False)
    ours = [line for line in result.stdout.splitlines() if line.startswith(tuple(targets))]
    errors = [line for line in ours if ": error:" in line]
    for line in ours:
        print(line)
    if result.returncode not in (0, 1) or "Traceback" in result.stderr:
        print(result.stderr, file=sys.stderr)
        return 2
    print("device type check (MicroPython stubs): %d error(s) in %s" % (len(errors), ", ".join(targets)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
