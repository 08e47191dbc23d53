"""Unmodified mpremote (default soft-reset behaviour) works against an emulated board."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.hil

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


def mpremote(port, *args, timeout=60):
    proc = subprocess.run([MPREMOTE, "connect", str(port), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, "mpremote %s failed:\n%s%s" % (" ".join(args), proc.stdout, proc.stderr)
    return proc.stdout


def test_mpremote_files_and_run(emulated_board, tmp_path):
    local = tmp_path / "data.txt"
    local.write_text("".join("line %d\n" % i for i in range(300)))
    mpremote(emulated_board.port, "fs", "cp", str(local), ":data.txt")
    listing = mpremote(emulated_board.port, "fs", "ls")
    assert "data.txt" in listing and "boot.py" in listing
    back = tmp_path / "back.txt"
    mpremote(emulated_board.port, "fs", "cp", ":data.txt", str(back))
    assert back.read_bytes() == local.read_bytes()
    script = tmp_path / "script.py"
    script.write_text("import os\nprint('files', sorted(os.listdir()))\n")
    assert mpremote(emulated_board.port, "run", str(script)).strip() == "files ['boot.py', 'data.txt']"
    mpremote(emulated_board.port, "fs", "rm", ":data.txt")
    assert "data.txt" not in mpremote(emulated_board.port, "fs", "ls")


def test_mpremote_exec_stops_a_busy_main_py(emulated_board):
    mpremote(emulated_board.port, "exec", "f = open('main.py', 'w'); f.write('while True:\\n    pass\\n'); f.close()")
    emulated_board.reset()  # main.py now spins forever
    assert mpremote(emulated_board.port, "exec", "print('got in')", timeout=30).strip() == "got in"


def test_mpremote_soft_reset_and_reset(emulated_board):
    soft_before = emulated_board.status()["reset_causes"].get("soft", 0)
    mpremote(emulated_board.port, "soft-reset")
    assert emulated_board.status()["reset_causes"].get("soft", 0) > soft_before
    mpremote(emulated_board.port, "reset")  # machine.reset() 100 ms after mpremote has left
    deadline = time.monotonic() + 15
    while emulated_board.status()["last_reset_cause"] != "hard":
        assert time.monotonic() < deadline, "mpremote reset did not hard-reset the board"
        time.sleep(0.05)
    assert "boot.py" in mpremote(emulated_board.port, "fs", "ls")
