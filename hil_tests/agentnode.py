"""Put the agent on an emulated board and watch what it publishes, for the agent's HIL tests.

`install()` writes the built bundle, laid out as `fleet flash` leaves it (root files, the app in slot
/app/a, /app/active; `fleet.flash.board_layout`), and an identity file straight into the board's
littlefs2 image while its power is off (littlefs-python, the same on-flash format the VM mounts), then
powers it on so `main.py` starts the agent. Flashing over the serial line is `fleet flash`'s job and is
tested in test_fleet_flash.py; here the agent's behaviour is under test. `Observer` (tests/observer.py)
watches the broker.
"""

from __future__ import annotations

import json
from pathlib import Path

from littlefs import LittleFS

from firmware.build import build_bundle
from fleet.flash import Bundle, board_layout

BLOCK = 4096
_BUNDLES: dict[str, Path] = {}


def bundle(tmp_root: Path) -> Path:
    """The emulator bundle, built once per test process."""
    if "emulator" not in _BUNDLES:
        out = tmp_root / "bundle-emulator"
        build_bundle("emulator", "0.1.0-hil", out)
        _BUNDLES["emulator"] = out
    return _BUNDLES["emulator"]


def write_flash(image: Path, files: dict[str, bytes]) -> None:
    """Write `files` (path -> bytes) into a littlefs2 image, creating folders as needed."""
    data = bytearray(image.read_bytes())
    fs = LittleFS(block_size=BLOCK, block_count=len(data) // BLOCK, mount=False)
    fs.context.buffer = data
    fs.mount()
    for path, content in sorted(files.items()):
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            folder = "/" + "/".join(parts[:depth])
            try:
                fs.mkdir(folder)
            except FileExistsError:
                pass
        with fs.open(path, "wb") as handle:
            handle.write(content)
    fs.unmount()
    image.write_bytes(bytes(data))


def install(board, bundle_dir: Path, identity: dict) -> None:
    """Install the agent bundle (in slot a) and `identity` on `board` (power cycled) and boot it."""
    files = board_layout(Bundle(bundle_dir), "a")
    files["/device.json"] = json.dumps(identity).encode()
    board.power_cut()
    write_flash(board.flash_image, files)
    board.power_on()
