"""A board's identity and settings, kept in DIR/board.json so that restarting on DIR is the same board."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tools.boardemu import BoardEmuError

KINDS = ("manhole-tilt", "water-level", "wind-load")
CONFIG_FILE = "board.json"
FLASH_FILE = "flash.img"
BLOCK_SIZE = 4096  # ESP32 flash sector; the littlefs block size (see vm/_emuboot.py)

DEFAULT_BAUD = 115200
DEFAULT_HEAP = "110k"  # free heap of an ESP32 without PSRAM
DEFAULT_FLASH = "2M"  # the filesystem partition of a 4 MB ESP32 module
# NOR flash timing (sector erase and one <=128-byte littlefs program), typical of ESP32 modules' flash;
# they make writes take real time, so a power cut can land inside one and tear it.
DEFAULT_ERASE_US = 30000
DEFAULT_PROG_US = 300

_SIZE = re.compile(r"^(\d+)\s*([kKmM]?)$")


def parse_size(text: str, what: str) -> int:
    """'110k' -> 112640, '2M' -> 2097152; BoardEmuError naming `what` when it is not a size."""
    match = _SIZE.match(str(text).strip())
    if not match:
        raise BoardEmuError("%s %r is not a size: write a number with an optional k or M, like 110k" % (what, text))
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    return int(match.group(1)) * scale


class BoardConfig:
    """What makes a board itself: kind, unique id, serial speed, heap, flash geometry, RFC 2217 port."""

    def __init__(self, kind, uid, baud, heap, flash_size, rfc2217_port=None,
                 erase_us=DEFAULT_ERASE_US, prog_us=DEFAULT_PROG_US):
        if kind not in KINDS:
            raise BoardEmuError("unknown board kind %r: choose one of %s" % (kind, ", ".join(KINDS)))
        if not re.fullmatch(r"[0-9a-f]{12}", str(uid)):
            raise BoardEmuError("board id %r is not 12 hex digits: fix or delete board.json" % (uid,))
        if not isinstance(baud, int) or not 300 <= baud <= 4_000_000:
            raise BoardEmuError("baud rate %r is out of range: use 300 to 4000000" % (baud,))
        heap_bytes = parse_size(heap, "heap size")
        if heap_bytes < 16 * 1024:
            raise BoardEmuError("heap size %s is too small for MicroPython: use at least 16k" % heap)
        flash_bytes = parse_size(flash_size, "flash size")
        if flash_bytes % BLOCK_SIZE or flash_bytes < 16 * BLOCK_SIZE:
            raise BoardEmuError("flash size %s must be a multiple of 4k and at least 64k" % flash_size)
        if rfc2217_port is not None and not 0 <= int(rfc2217_port) <= 65535:
            raise BoardEmuError("RFC 2217 port %r is out of range: use 1 to 65535, or 0 for any free one"
                                % (rfc2217_port,))
        self.kind = kind
        self.uid = uid
        self.baud = baud
        self.heap = str(heap)
        self.heap_bytes = heap_bytes
        self.flash_size = str(flash_size)
        self.flash_bytes = flash_bytes
        self.rfc2217_port = None if rfc2217_port is None else int(rfc2217_port)
        self.erase_us = int(erase_us)
        self.prog_us = int(prog_us)

    def to_json(self) -> dict:
        """The board.json document."""
        return {
            "kind": self.kind, "uid": self.uid, "baud": self.baud, "heap": self.heap,
            "flash_size": self.flash_size, "rfc2217_port": self.rfc2217_port,
            "flash_erase_us": self.erase_us, "flash_prog_us": self.prog_us,
        }

    @classmethod
    def from_json(cls, doc: dict) -> BoardConfig:
        """Build from a board.json document; BoardEmuError when it is damaged."""
        try:
            return cls(doc["kind"], doc["uid"], doc["baud"], doc["heap"], doc["flash_size"],
                       doc.get("rfc2217_port"), doc.get("flash_erase_us", DEFAULT_ERASE_US),
                       doc.get("flash_prog_us", DEFAULT_PROG_US))
        except (KeyError, TypeError, ValueError) as exc:
            raise BoardEmuError("board.json is damaged (%s): fix or delete it" % exc) from exc


def new_uid() -> str:
    """Six random bytes shaped like an ESP32 base MAC (Espressif OUI 24:0a:c4), as 12 hex digits."""
    return "240ac4" + os.urandom(3).hex()


def load(state_dir: Path) -> BoardConfig | None:
    """The board kept in `state_dir`, or None when the folder holds no board yet."""
    path = Path(state_dir) / CONFIG_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise BoardEmuError("%s is not JSON (%s): fix or delete it" % (path, exc)) from exc
    return BoardConfig.from_json(doc)


def save(state_dir: Path, config: BoardConfig) -> None:
    """Write board.json atomically (a crash never leaves half a file)."""
    path = Path(state_dir) / CONFIG_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config.to_json(), indent=2) + "\n")
    os.replace(tmp, path)


def resolve(state_dir: Path, kind=None, baud=None, heap=None, flash_size=None, rfc2217_port=None) -> BoardConfig:
    """The board for `state_dir`: the saved one updated with what was given, or a new one.

    Kind and flash size are the hardware: a different value for an existing board is an error.
    """
    saved = load(state_dir)
    if saved is None:
        if kind is None:
            raise BoardEmuError("%s holds no board yet: give --kind (%s)" % (state_dir, ", ".join(KINDS)))
        config = BoardConfig(kind, new_uid(), DEFAULT_BAUD if baud is None else baud, heap or DEFAULT_HEAP,
                             flash_size or DEFAULT_FLASH, rfc2217_port)
    else:
        if kind is not None and kind != saved.kind:
            raise BoardEmuError("%s holds a %s board, not %s: use another --dir" % (state_dir, saved.kind, kind))
        if flash_size is not None and parse_size(flash_size, "flash size") != saved.flash_bytes:
            raise BoardEmuError("%s has %s of flash; its size cannot change: use another --dir"
                                % (state_dir, saved.flash_size))
        doc = saved.to_json()
        doc.update({k: v for k, v in (("baud", baud), ("heap", heap), ("rfc2217_port", rfc2217_port))
                    if v is not None})
        config = BoardConfig.from_json(doc)
    save(state_dir, config)
    return config


def create_flash(path: Path, size: int) -> None:
    """A blank flash image: erased NOR flash reads 0xFF; the VM formats it on first boot."""
    if path.exists():
        return
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        block = b"\xff" * BLOCK_SIZE
        for _ in range(size // BLOCK_SIZE):
            f.write(block)
    os.replace(tmp, path)
