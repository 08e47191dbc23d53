"""The checks of a downloaded release envelope before anything is installed, and the plan of what to pull.

SPEC.md "OTA": the envelope's SHA-256 must be the offer's, its signature must verify with a key of the
running slot's trust.cbor before the manifest is read, then the manifest must be well formed, newer than
the running release, for this board and `.mpy` version, and fit the free flash. Each failure is a reason
code and nothing of the running install has changed. Run in update mode (agent/ota_mode.py), instead of
the agent: the envelope is held whole and Ed25519 needs several KB of big-int temporaries.
"""

import hashlib
import os
import sys

from agent import ota_manifest as mf
from agent.ota_state import release_of, size
from protocols.cbor_lite import loads

_SPARE = 8  # flash blocks kept free beyond the files: littlefs moves metadata, a folder takes a block


class Plan:
    """What a verified release needs: `seq`, `version`, `pulls` [(file index, path, zsize, size, sha256)]
    of the files to download, `bytes` still to pull. Methodless, so it keeps nothing of this module alive."""

    seq = bytes = 0
    version = ""
    pulls: list = []


def mpy_version():
    """The `.mpy` version this firmware loads, "6.3" (sys.implementation._mpy: version, sub-version)."""
    mpy = getattr(sys.implementation, "_mpy", 0)
    return "%d.%d" % (mpy & 0xFF, mpy >> 8 & 3)


def file_sha(path):
    """SHA-256 of the file at `path`, None when there is none."""
    digest = hashlib.sha256()
    buf = bytearray(512)
    try:
        with open(path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                digest.update(memoryview(buf)[:n])
    except OSError:
        return None
    return digest.digest()


def check(envelope_path, offer_size, offer_sha, active, new, board, mpy=None):
    """A Plan for the envelope at `envelope_path` (in the new slot), or the reason code it is refused for.

    `active`, `new`: the slot folders; `board`: the running board's name ("esp32", "emulator"); `mpy`:
    the `.mpy` version it loads (this firmware's when None)."""
    with open(envelope_path, "rb") as f:
        data = f.read(offer_size + 1)
    if len(data) != offer_size or hashlib.sha256(data).digest() != offer_sha:
        os.remove(envelope_path)  # pulled again if the offer comes again
        return "TRANSFER_FAILED"
    buf = memoryview(data)
    try:
        start, end, kid, signature = mf.envelope(buf)
    except (ValueError, IndexError):
        return "BAD_MANIFEST"
    key = _trusted(active + "/trust.cbor", kid)
    if key is None:
        return "UNTRUSTED_KEY"
    from agent import ed25519

    if not ed25519.verify(key, buf[start:end], signature):
        return "BAD_SIGNATURE"
    buf = buf[start:end]
    try:
        seq, version, board_of, mpy_of, files, count = mf.manifest(buf)
    except (ValueError, IndexError, UnicodeError):
        return "BAD_MANIFEST"
    if seq <= release_of(active):
        return "DOWNGRADE"
    if board_of != board:
        return "BOARD_MISMATCH"
    if mpy_of != (mpy or mpy_version()):
        return "ABI_MISMATCH"
    return _plan(buf, files, count, seq, version, active, new)


def _trusted(path, kid):
    # The key of trust.cbor (an array of raw 32-byte Ed25519 keys) whose id, its SHA-256's first 8 bytes,
    # is `kid`; None when there is none (or no readable trust list: such a slot takes no update).
    try:
        with open(path, "rb") as f:
            keys = loads(f.read(512), 1)
    except (OSError, ValueError):
        return None
    for key in keys if isinstance(keys, list) else ():
        if isinstance(key, bytes) and len(key) == 32 and hashlib.sha256(key).digest()[:8] == kid:
            return key
    return None


def _plan(buf, at, count, seq, version, active, new):
    # Files the new slot lacks are copied from the running slot when it holds them, pulled otherwise.
    # The flash must take every file written (whole blocks) and the largest compressed one beside it.
    stat = os.statvfs(new.rsplit("/", 1)[0] or "/")
    block = stat[0] or 4096
    need = _SPARE
    biggest = 0
    plan = Plan()
    plan.seq, plan.version, plan.pulls, plan.bytes = seq, version, [], 0
    for index in range(1, count + 1):
        path, size_of, sha, zsize, at = mf.entry(buf, at)
        if file_sha(new + "/" + path) == sha:
            continue  # installed before a power cut
        need += (size_of + block - 1) // block
        if file_sha(active + "/" + path) == sha:
            continue  # copied at install
        have = max(0, size(new + "/" + path + ".z"))
        plan.pulls.append((index, path, zsize, size_of, sha))
        plan.bytes += max(0, zsize - have)
        biggest = max(biggest, (zsize + block - 1) // block)
    if (need + biggest) * block > stat[0] * stat[4]:
        return "NO_SPACE"
    return plan
