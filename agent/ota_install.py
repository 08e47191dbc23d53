"""Installing a checked release into the inactive slot, then switching to it on trial (SPEC.md "OTA").

Run in update mode (agent/ota_mode.py) once every file to pull is on flash. Each file of the manifest is kept
when the new slot holds it already (a power cut during an earlier install), inflated from its pulled
compressed form (`<path>.z`, zlib with a window of at most 1 KB, through deflate.DeflateIO), or copied
from the running slot; either way through `<path>.tmp` with an incremental SHA-256, checked (size and
hash) and renamed into place, 512 bytes at a time. Then the slot's manifest.json (the release's seq and
version, which the agent reports), the trial file (firmware/boot.py), and /app/active switched last.
"""

import hashlib
import os

from agent import ota_manifest as mf
from agent.ota_check import file_sha
from agent.ota_state import mkdirs, put, size

try:
    from deflate import ZLIB, DeflateIO
except ImportError:  # CPython (unit tests): the same reader over zlib
    import zlib

    ZLIB = 1

    class DeflateIO:  # type: ignore[no-redef]
        def __init__(self, stream, _format):
            self._in = stream
            self._z = zlib.decompressobj()
            self._out = b""

        def readinto(self, buf):
            while not self._out and not self._z.eof:
                raw = self._in.read(64)
                if not raw:
                    raise OSError("truncated zlib stream")
                try:
                    self._out = self._z.decompress(raw)
                except zlib.error as error:  # as MicroPython's: an OSError
                    raise OSError(str(error))
            n = min(len(buf), len(self._out))
            buf[:n] = self._out[:n]
            self._out = self._out[n:]
            return n

_CHUNK = 512


def _copy(reader, dest, size_of, sha, buf):
    # reader -> dest + ".tmp", hashed; renamed to dest when size and hash are right. True if installed.
    digest = hashlib.sha256()
    done = 0
    mv = memoryview(buf)
    with open(dest + ".tmp", "wb") as out:
        while True:
            n = reader.readinto(buf)
            if not n:
                break
            done += n
            if done > size_of:
                break  # more than the manifest says: never fill the flash with it
            digest.update(mv[:n])
            out.write(mv[:n])
    if done != size_of or digest.digest() != sha:
        os.remove(dest + ".tmp")
        return False
    os.rename(dest + ".tmp", dest)
    return True


def inflate(zpath, dest, size_of, sha):
    """Inflate the compressed file at `zpath` into `dest`; None when done, else the reason code."""
    buf = bytearray(_CHUNK)
    try:
        with open(zpath, "rb") as f:
            head = f.read(2)
            # RFC 1950: deflate, window 2**(8 + CINFO) with CINFO <= 2 (1 KB: SPEC.md "OTA release"),
            # header checksum, no preset dictionary. A larger window would make DeflateIO allocate it.
            if len(head) != 2 or head[0] not in (0x08, 0x18, 0x28) or (head[0] << 8 | head[1]) % 31 \
                    or head[1] & 0x20:
                ok = False
            else:
                f.seek(0)
                ok = _copy(DeflateIO(f, ZLIB), dest, size_of, sha, buf)
    except (OSError, ValueError):  # a corrupt stream
        ok = False
    os.remove(zpath)  # right or wrong, it is not needed again (a retry pulls it anew)
    return None if ok else "HASH_MISMATCH"


def install(envelope_path, active, new, app, cid):
    """Complete the new slot from the checked envelope at `envelope_path` and switch to it on trial;
    None when switched, else the reason code (the running slot is untouched)."""
    with open(envelope_path, "rb") as f:
        buf = memoryview(f.read())
    start, end, _, _ = mf.envelope(buf)
    buf = buf[start:end]
    seq, version, board, mpy, files, count = mf.manifest(buf)
    chunk = bytearray(_CHUNK)
    at = files
    for _ in range(count):
        path, size_of, sha, _, at = mf.entry(buf, at)
        dest = new + "/" + path
        if size(dest) == size_of and file_sha(dest) == sha:
            continue
        if size(dest + ".z") >= 0:
            reason = inflate(dest + ".z", dest, size_of, sha)
            if reason:
                return reason
            continue
        mkdirs(dest.rsplit("/", 1)[0])
        try:
            with open(active + "/" + path, "rb") as f:
                ok = _copy(f, dest, size_of, sha, chunk)
        except OSError:
            ok = False
        if not ok:
            return "HASH_MISMATCH"
    _manifest_json(buf, files, count, new, seq, version, board, mpy)
    previous = active.rsplit("/", 1)[1]
    slot = new.rsplit("/", 1)[1]
    put(app + "/trial", "%s %s 0 %d %s" % (slot, previous, cid, version))
    try:
        os.remove(app + "/crashes")  # a new release starts with a clean count (firmware/main.py)
    except OSError:
        pass
    put(app + "/active", slot)  # the one step that makes the new release the one to run
    return None


def _manifest_json(buf, at, count, new, seq, version, board, mpy):
    # The slot's manifest.json as `fleet build` writes one (keys sorted: "release" and "version" last,
    # where agent/identity.py and agent/ota_state.py read them), written file by file.
    import binascii
    import json

    with open(new + "/manifest.json.new", "w") as out:
        out.write('{"board": %s, "files": [' % json.dumps(board))
        for i in range(count):
            path, size_of, sha, _, at = mf.entry(buf, at)
            out.write('%s{"path": %s, "sha256": "%s", "size": %d}'
                      % (", " if i else "", json.dumps(path), binascii.hexlify(sha).decode(), size_of))
        out.write('], "format": 1, "mpy": %s, "release": %d, "version": %s}\n'
                  % (json.dumps(mpy), seq, json.dumps(version)))
    os.rename(new + "/manifest.json.new", new + "/manifest.json")
