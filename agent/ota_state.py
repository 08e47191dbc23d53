"""What the parts of an over-the-air update share: the files it keeps beside the slots.

Files, under /app next to the slots (fleet/flash.py), each replaced atomically (temp + rename):

    /app/active     "a" | "b": the slot main.py runs; switched last
    /app/ota        the update's state (JSON, flashio CRC): the "cid" under way, its "phase" ("update",
                    then "staged" once switched), its "offer" [release, envelope size, envelope sha256
                    hex, firmware], "ran" once update mode started on it; or the last "closed" cid and
                    its "end" [state, reason, target]. A
                    closed cid is never acted on again: when its retained offer comes back (every
                    reconnect), its outcome is reported again instead.
    /app/step       "update": main.py runs update mode (agent/ota_mode.py) instead of the agent
    /app/trial      "new previous tries cid version": the new slot runs on trial (firmware/boot.py)
    /app/rollback   "reason cid version": boot.py went back to the previous slot
    /app/crashes    crashes in a row of a confirmed slot (firmware/main.py: safe mode past a limit)

The running agent's parts (agent/ota_offer.py, agent/ota_boot.py) read and write these files themselves,
in little code; update mode (agent/ota_mode.py, ota_check.py, ota_install.py) uses this module.
In a slot, besides the bundle's files: release.cbor (the signed envelope of its release), manifest.json
(its last keys "release" and "version": agent/identity.py reports the version) and, while an update
downloads, the pulled `<path>.z`. `app` is the folder of the slots ("/app" on a board, a temporary
folder in tests).
"""

import json
import os

from agent import flashio

APP = "/app"
DOWNLOADING, VERIFYING, STAGED, DONE, FAILED, ROLLED_BACK = 1, 2, 3, 4, 5, 6  # protocols/ota.py states


def words(path):
    """The blank-separated words of a small text file, or None when it is missing."""
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return None


def put(path, text):
    """Replace the file at `path` by `text` atomically (temp + rename, as firmware/boot.py does)."""
    with open(path + ".new", "w") as f:
        f.write(text)
    os.rename(path + ".new", path)


def slots(app):
    """(active slot folder, inactive slot folder)."""
    found = words(app + "/active")
    active = found[0] if found else "a"
    return app + "/" + active, app + "/" + ("a" if active == "b" else "b")


def release_of(slot):
    """The release seq the slot holds (its manifest.json's "release"), 0 when it came by `fleet flash`."""
    try:
        with open(slot + "/manifest.json") as f:
            end = f.seek(0, 2)
            f.seek(max(0, end - 200))
            tail = f.read()
    except OSError:
        return 0
    at = tail.rfind('"release":')
    digits = ""
    for char in tail[at + 10:].lstrip() if at >= 0 else "":
        if not "0" <= char <= "9":
            break
        digits += char
    return int(digits) if digits else 0


def load(app):
    """The state (see the module docstring)."""
    try:
        state = json.loads(flashio.read(app + "/ota"))
    except (TypeError, ValueError):
        state = None
    return state if isinstance(state, dict) else {}


def save(app, state):
    flashio.write(app + "/ota", json.dumps(state).encode())


def close(app, state, cid, final, reason, target):
    """Update `cid` ended in `final` (with `reason`): its offer is never acted on again."""
    state.clear()
    state.update(closed=cid, end=[final, reason, target])
    save(app, state)


def size(path):
    """Bytes in the file at `path`, -1 when there is none."""
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def remove(path):
    """Remove `path` and, if it is a folder, everything in it; nothing there is no error."""
    try:
        names = os.listdir(path)
    except OSError:
        flashio.remove(path)
        return
    for name in names:
        remove(path + "/" + name)
    os.rmdir(path)


def mkdirs(folder):
    """Make `folder` and its parents."""
    at = 0
    while at >= 0:
        at = folder.find("/", at + 1)
        try:
            os.mkdir(folder if at < 0 else folder[:at])
        except OSError:
            pass  # exists
