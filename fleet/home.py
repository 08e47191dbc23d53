"""The fleet's home folder (FLEET_HOME), the fleet's name, and how every file in it is written.

FLEET_HOME holds the registry, the operations secret and the generated broker files, so it is private
to its user (0700). Files are replaced atomically: written to a temporary file in the same folder,
fsynced, then renamed over the old one, so a crash leaves the old file or the new one, never half.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from fleet.errors import FleetError

DEFAULT_FLEET = "city"
FLEET_FILE = "fleet.json"


def fleet_home() -> Path:
    """The fleet's data folder: $FLEET_HOME, else $XDG_DATA_HOME/cityfleet, else ~/.local/share/cityfleet.

    Created (mode 0700) when missing."""
    env = os.environ.get("FLEET_HOME")
    if env:
        home = Path(env).expanduser()
    else:
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        home = Path(data) / "cityfleet"
    return private_dir(home)


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) if missing; a folder this creates is 0700 whatever the umask."""
    if not path.is_dir():
        try:
            path.mkdir(parents=True, mode=0o700, exist_ok=True)
            os.chmod(path, 0o700)  # mkdir's mode is masked by the umask
        except OSError as error:
            raise FleetError("cannot create folder %s (%s); set FLEET_HOME to a writable folder"
                             % (path, error.strerror)) from None
    return path


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data`: temp file in the same folder, fsync, rename, fsync the folder.

    Readers see the old content or the new, never a mix; `mode` is set before the rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # The rename itself lives in the folder's metadata: without this a power cut may undo it.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def fleet_name(home: Path | None = None) -> str:
    """The fleet id used in topics (`dt/<fleet>/...`), from FLEET_HOME/fleet.json; "city" by default."""
    path = (home or fleet_home()) / FLEET_FILE
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return DEFAULT_FLEET
    except (OSError, ValueError) as error:
        raise FleetError("cannot read %s (%s); fix it or delete it to use the fleet name %r"
                         % (path, error, DEFAULT_FLEET)) from None
    name = stored.get("fleet") if isinstance(stored, dict) else None
    return _checked_name(name, path)


def set_fleet_name(name: str, home: Path | None = None) -> None:
    """Store the fleet id in FLEET_HOME/fleet.json after checking it is a valid topic segment."""
    path = (home or fleet_home()) / FLEET_FILE
    _checked_name(name, None)
    write_atomic(path, (json.dumps({"fleet": name}, indent=1) + "\n").encode(), 0o600)


def _checked_name(name: object, path: Path | None) -> str:
    from protocols.errors import ProtocolError
    from protocols.topics import FLEET_MAX, check_id

    try:
        return check_id(name, "fleet", FLEET_MAX)
    except ProtocolError as error:
        where = " in %s" % path if path else ""
        raise FleetError("bad fleet name %r%s: %s; set another with set_fleet_name"
                         % (name, where, error.detail or error)) from None
