"""`fleet build` as a person runs it: a reproducible bundle with a manifest, clear errors otherwise."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

FLEET = [sys.executable, "-m", "fleet.cli.main"]


def fleet(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(FLEET + list(args), capture_output=True, text=True, cwd=cwd, check=False)


def digest_tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bundle_is_reproducible_and_its_manifest_is_true(tmp_path):
    first = fleet("build", "--board", "emulator", "--version", "9.9.9", "-o", str(tmp_path / "a"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "built emulator bundle 9.9.9" in first.stdout
    second = fleet("build", "--board", "emulator", "--version", "9.9.9", "-o", str(tmp_path / "b"), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert digest_tree(tmp_path / "a") == digest_tree(tmp_path / "b")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["board"] == "emulator" and manifest["mpy"] == "6.3"
    files = {entry["path"]: entry for entry in manifest["files"]}
    assert {"boot.py", "main.py", "board.py", "agent/app.mpy", "protocols/cbor.mpy"} <= set(files)
    for path, entry in files.items():
        data = (tmp_path / "a" / path).read_bytes()
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
        if path.endswith(".mpy"):
            assert data[:2] == b"M\x06"  # .mpy version 6


def test_unknown_board_is_one_clear_line(tmp_path):
    result = fleet("build", "--board", "arduino", cwd=tmp_path)
    assert result.returncode == 2
    assert "Invalid value for '--board'" in result.stderr and "Traceback" not in result.stderr
