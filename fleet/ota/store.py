"""The fleet's stored releases: where they live, how they are read back, and the check before publishing.

    FLEET_HOME/releases/<seq>-<version>/release.cbor       signed envelope (protocols.manifest.signed)
    FLEET_HOME/releases/<seq>-<version>/files/<path>.z     each file as a zlib stream, window 1 KB

A release folder is complete or absent: `fleet ota release` builds it under a dot-named temporary folder
and renames it in. `verify_release` is what a rollout calls before it offers a release to any device: it
re-checks everything a device would, so the fleet never publishes what a device must refuse.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fleet.errors import FleetError
from fleet.home import fleet_home
from fleet.ota.keys import verify
from protocols import manifest as mf
from protocols.errors import ProtocolError

RELEASES = "releases"
RELEASE_FILE = "release.cbor"
FILES = "files"
SUFFIX = ".z"
TRUST_FILE = "trust.cbor"
#: zlib window (log2): MicroPython's deflate.DeflateIO allocates the window the stream's header names,
#: 32 KB for zlib's default, which a 110 KB heap cannot spare; 1 KB costs nothing in size on .mpy files.
WINDOW_BITS = 10
_NAME = re.compile(r"([1-9][0-9]{0,9})-(.+)")


def releases_dir(home: Path | None = None) -> Path:
    """FLEET_HOME/releases (created when missing)."""
    folder = (home or fleet_home()) / RELEASES
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def release_dirs(root: Path) -> list[tuple[int, Path]]:
    """(seq, folder) of every stored release under `root`, by seq; temporary folders are skipped."""
    found = []
    for child in root.iterdir():
        match = _NAME.fullmatch(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def next_seq(root: Path) -> int:
    """One more than the highest seq stored, broken releases included: a seq is never used twice."""
    dirs = release_dirs(root)
    return dirs[-1][0] + 1 if dirs else 1


def compress(data: bytes) -> bytes:
    """`data` as a zlib stream (level 9, 1 KB window) that deflate.DeflateIO(stream, deflate.ZLIB) reads."""
    packer = zlib.compressobj(9, zlib.DEFLATED, WINDOW_BITS)
    return packer.compress(data) + packer.flush()


def read_release(folder: Path) -> tuple[bytes, bytes, bytes]:
    """(manifest bytes, key id, signature) of a stored release; FleetError when unreadable."""
    try:
        data = (Path(folder) / RELEASE_FILE).read_bytes()
    except OSError as error:
        raise FleetError("release %s: cannot read %s (%s); it is not a release made by `fleet ota release`"
                         % (folder, RELEASE_FILE, error.strerror or error)) from None
    try:
        return mf.read_signed(data)
    except ProtocolError as error:
        raise FleetError("release %s refused: %s" % (folder, error)) from None


def verify_release(folder: Path, trusted_keys: Iterable[bytes], name: str | None = None) -> mf.Manifest:
    """Check a stored release as a device would and return its manifest.

    Refused with a one-line FleetError naming the reason code: an unsigned or garbled envelope, a key
    not among `trusted_keys` (raw 32-byte Ed25519 keys), a bad signature, a malformed manifest, a folder
    whose name (or `name`) is not `<seq>-<version>`, a file missing, extra, of the wrong compressed size,
    window, size or SHA-256."""
    folder = Path(folder)
    manifest_bytes, kid, signature = read_release(folder)
    keys = [key for key in trusted_keys if mf.key_id(key) == kid]
    if not keys:
        raise FleetError("release %s refused: %s: it is signed by key %s, which is not trusted here"
                         % (folder, mf.UNTRUSTED_KEY, kid.hex()))
    if not any(verify(key, signature, manifest_bytes) for key in keys):
        raise FleetError("release %s refused: %s: the signature does not match the manifest"
                         % (folder, mf.BAD_SIGNATURE))
    try:
        manifest = mf.Manifest.from_bytes(manifest_bytes)
    except ProtocolError as error:
        raise FleetError("release %s refused: %s" % (folder, error)) from None
    if manifest.to_bytes() != manifest_bytes:
        raise FleetError("release %s refused: %s: the manifest is not in its one (preferred) encoding"
                         % (folder, mf.BAD_MANIFEST))
    expected = "%d-%s" % (manifest.seq, manifest.version)
    if (name or folder.name) != expected:
        raise FleetError("release %s refused: its manifest says seq %d version %s, so it must be named %s"
                         % (folder, manifest.seq, manifest.version, expected))
    _check_files(folder, manifest)
    return manifest


def _check_files(folder: Path, manifest: mf.Manifest) -> None:
    files = folder / FILES
    stored = {p.relative_to(files).as_posix() for p in files.rglob("*") if not p.is_dir()} if files.is_dir() else set()
    listed = {entry[0] + SUFFIX for entry in manifest.files}
    extra = sorted(stored - listed)
    if extra:
        raise FleetError("release %s refused: %s is not in its manifest (tampered or a stray file)"
                         % (folder, files / extra[0]))
    for path, size, sha256, zsize in manifest.files:
        where = files / (path + SUFFIX)
        try:
            packed = where.read_bytes()
        except OSError:
            raise FleetError("release %s refused: %s is missing" % (folder, where)) from None
        problem = _unpack_problem(packed, size, sha256, zsize)
        if problem:
            raise FleetError("release %s refused: %s: %s %s" % (folder, "HASH_MISMATCH", where, problem))


def _unpack_problem(packed: bytes, size: int, sha256: bytes, zsize: int) -> str | None:
    """Why a stored compressed file does not match its manifest entry, or None."""
    if len(packed) != zsize:
        return "is %d bytes, the manifest says %d" % (len(packed), zsize)
    if len(packed) < 2 or packed[0] & 0x0F != 8 or (packed[0] >> 4) + 8 > WINDOW_BITS:
        return "is not a zlib stream with a window of at most %d bytes" % (1 << WINDOW_BITS)
    unpacker = zlib.decompressobj(WINDOW_BITS)
    try:
        data = unpacker.decompress(packed, size + 1)  # never inflate more than the manifest allows
    except zlib.error as error:
        return "does not decompress (%s)" % error
    if len(data) != size or not unpacker.eof or unpacker.unused_data or unpacker.unconsumed_tail:
        return "does not decompress to %d bytes" % size
    if hashlib.sha256(data).digest() != sha256:
        return "does not match its SHA-256"
    return None


def own_trust(folder: Path) -> list[bytes]:
    """The keys the release's own trust.cbor lists (what the devices running it will accept next)."""
    try:
        packed = (Path(folder) / FILES / (TRUST_FILE + SUFFIX)).read_bytes()
        return mf.read_trust(zlib.decompress(packed, WINDOW_BITS))
    except (OSError, zlib.error, ProtocolError):
        raise FleetError("release %s has no readable %s; it cannot be checked" % (folder, TRUST_FILE)) from None


def describe(folder: Path) -> dict[str, Any]:
    """One release as `fleet ota releases` shows it; `status` is "ok" when its signature (by a key its own
    trust.cbor lists) and every file check out, else the reason it would be refused."""
    info: dict[str, Any] = {"dir": folder.name}
    try:
        manifest_bytes, kid, _ = read_release(folder)
        manifest = mf.Manifest.from_bytes(manifest_bytes)
        info.update(seq=manifest.seq, version=manifest.version, board=manifest.board, mpy=manifest.mpy,
                    files=len(manifest.files), bytes=manifest.total,
                    compressed=sum(entry[3] for entry in manifest.files), key_id=kid.hex(), notes=manifest.notes)
        verify_release(folder, own_trust(folder))
        info["status"] = "ok"
    except ProtocolError as error:
        info["status"] = "refused: %s" % error
    except FleetError as error:
        why = str(error)
        for prefix in ("release %s refused: " % folder, "release %s: " % folder):
            why = why[len(prefix):] if why.startswith(prefix) else why
        info["status"] = "refused: " + why
    return info


def list_releases(home: Path | None = None) -> list[dict[str, Any]]:
    """Every stored release, oldest first, with its check status."""
    return [describe(folder) for _, folder in release_dirs(releases_dir(home))]


def find_release(ref: str, home: Path | None = None) -> Path:
    """The folder of release `ref`: its seq, its folder name, or a version (the newest release of it)."""
    dirs = release_dirs(releases_dir(home))
    for seq, folder in reversed(dirs):
        if ref in (str(seq), folder.name) or folder.name.split("-", 1)[1] == ref:
            return folder
    raise FleetError("no release %r; `fleet ota releases` lists them" % ref)
