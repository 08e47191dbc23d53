"""What the agent does with an offer from the fleet (`cmd/…/ota`, SPEC.md "OTA"), loaded per offer.

A cid already closed has its outcome reported again (the fleet may have missed it); on trial nothing is
taken (agent/ota_boot.py confirms first); the release the board runs is reported done, an older one
refused (DOWNGRADE). Otherwise the update is taken: its state is written to /app/ota (phase "update"),
/app/step tells firmware/main.py to run update mode (agent/ota_mode.py) at the next boot, and the board
restarts. An update whose update mode ended without an outcome (it crashed) is closed as failed.

Self-contained (the state file's format is agent/ota_state.py's): a running agent has a few KB to spare.
"""

import json
import os
from binascii import hexlify

from agent import flashio
from protocols import up_status

_MAX_ENVELOPE = 16512  # protocols/manifest.py MAX_MANIFEST + 128


def _head(p, i):
    # (major type, argument, next index) of the CBOR head at p[i]
    first = p[i]
    arg = first & 31
    i += 1
    if arg >= 24:
        n = 1 << (arg - 24)
        if n > 8:
            raise ValueError
        arg = int.from_bytes(p[i:i + n], "big")
        i += n
    return first >> 5, arg, i


def _offer(p):
    # [version, cid, firmware, release, size, sha256, cancel] of an offer (a CBOR map of those keys),
    # None when it is not one
    got = [None] * 7
    try:
        kind, n, i = _head(p, 0)
        for _ in range(n if kind == 5 else 0):
            kind, key, i = _head(p, i)
            kind, value, i = _head(p, i)
            if kind in (2, 3):
                value, i = bytes(p[i:i + value]), i + value
                if kind == 3:
                    value = str(value, "utf-8")
            elif kind == 7:
                value = value == 21  # true
            elif kind:
                return None
            if key < 7:
                got[key] = value
    except (ValueError, IndexError, UnicodeError):
        return None
    if i != len(p) or None in got[:6] or type(got[2]) is not str or type(got[5]) is not bytes or len(got[5]) != 32:
        return None
    return got


async def handle(agent, payload):
    """Act on an offer (an empty payload, the fleet clearing it, needs nothing); never raises."""
    try:
        await _handle(agent, getattr(agent, "app_dir", "/app"), payload)
    except Exception as error:  # noqa: BLE001 - the command task must outlive a bad offer or file
        print("ota: offer: %r" % (error,))


async def _handle(agent, app, payload):
    offer = _offer(payload) if payload else None
    if offer is None:
        return
    _, cid, firmware, release, size, sha, cancel = offer
    try:
        state = json.loads(flashio.read(app + "/ota"))
    except (TypeError, ValueError):
        state = {}
    if _words(app + "/rollback") is not None or _words(app + "/trial") is not None:
        return  # after an update's restart: agent/ota_boot.py settles it first
    if cid == state.get("closed"):
        end = state["end"]
        if not cancel:
            await _report(agent, cid, end[0], end[1], end[2])
        return
    active = (_words(app + "/active") or ["a"])[0]
    new = app + ("/a" if active == "b" else "/b")
    if state.get("cid") == cid and state.get("ran"):  # update mode ran and ended without an outcome (crashed)
        await _end(agent, app, new, cid, "CANCELLED" if cancel else "TRANSFER_FAILED", firmware)
        return
    if cancel:
        return
    running = _release(app + "/" + active)
    if release == running:
        await _report(agent, cid, 4, None, firmware)  # done
    elif release < running:
        await _end(agent, app, None, cid, "DOWNGRADE", firmware)
    elif size > _MAX_ENVELOPE:
        await _end(agent, app, None, cid, "BAD_MANIFEST", firmware)
    else:
        _remove(new)  # what an earlier release or update left there
        _save(app, {"cid": cid, "phase": "update", "offer": [release, size, hexlify(sha).decode(), firmware]})
        with open(app + "/step.new", "w") as f:
            f.write("update")
        os.rename(app + "/step.new", app + "/step")  # firmware/main.py runs update mode at the next boot
        await _report(agent, cid, 1, None, firmware, 0)  # downloading
        await agent.reboot()


def _words(path):
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return None


def _release(slot):
    # the release seq of the slot's manifest.json ("release", before "version" at its end); 0: none
    try:
        with open(slot + "/manifest.json") as f:
            f.seek(max(0, f.seek(0, 2) - 200))
            tail = f.read()
    except OSError:
        return 0
    at = tail.rfind('"release":')
    return int(tail[at + 10:tail.index(",", at)]) if at >= 0 else 0


def _remove(path):
    try:
        names = os.listdir(path)
    except OSError:
        flashio.remove(path)
        return
    for name in names:
        _remove(path + "/" + name)
    os.rmdir(path)


def _save(app, state):
    flashio.write(app + "/ota", json.dumps(state).encode())


async def _end(agent, app, new, cid, reason, target):
    if new is not None:
        _remove(new)
    _save(app, {"closed": cid, "end": [5, reason, target]})  # failed
    await _report(agent, cid, 5, reason, target)


async def _report(agent, cid, state, reason, target, percent=None):
    seq = agent.sequence
    n = seq.next()
    await agent.publish_now("ota", up_status.ota_progress(seq.boot, n, cid, state, percent, reason, target), n)
