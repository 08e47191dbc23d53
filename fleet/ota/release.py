"""`fleet ota release`: turn a built bundle into a signed, compressed release in FLEET_HOME/releases.

What goes in: every file of the bundle's slot (agent/, protocols/, trust.cbor), not the root files
(boot.py, main.py, board.py are never updated over the air) and not the bundle's manifest.json (the
signed manifest replaces it; carrying it would make every one-module update send two files).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fleet.errors import FleetError
from fleet.flash import MANIFEST, ROOT_FILES, Bundle
from fleet.ota import store
from fleet.ota.keys import load_private_key, public_raw
from protocols import manifest as mf
from protocols.errors import ProtocolError

#: Bundle files a release leaves out (see the module docstring).
NOT_RELEASED = ROOT_FILES + (MANIFEST,)
#: Versions name a release folder: keep them to characters every filesystem and shell take as they are.
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,31}")


def make_release(bundle_dir: Path, key_path: Path, notes: str | None = None, version: str | None = None,
                 home: Path | None = None) -> dict[str, Any]:
    """Sign and store the release of `bundle_dir` with the private key at `key_path`; return its listing.

    `version` overrides the bundle's. Refused (FleetError): a malformed bundle, a bad key file, a bundle
    whose trust.cbor lacks the key's public half, a version unfit for a folder name, a broken result."""
    private = load_private_key(key_path)
    public = public_raw(private)
    try:
        bundle = Bundle(Path(bundle_dir))
    except (KeyError, TypeError, AttributeError, ValueError):
        raise FleetError("%s: malformed manifest.json (its files must be path/size/sha256 entries); "
                         "rebuild the bundle with `fleet build`" % bundle_dir) from None
    _check_trust(bundle.data, bundle.dir, public, key_path)
    version = version or bundle.version
    if not _VERSION.fullmatch(version):
        raise FleetError("version %r cannot name a release: use up to 32 of A-Z a-z 0-9 . + _ - "
                         "(pass --version)" % version)
    packed = {rel: store.compress(data) for rel, data in bundle.data.items() if rel not in NOT_RELEASED}
    files = [[rel, len(bundle.data[rel]), hashlib.sha256(bundle.data[rel]).digest(), len(packed[rel])]
             for rel in packed]
    root = store.releases_dir(home)
    with _locked(root):
        seq = store.next_seq(root)
        try:
            manifest = mf.Manifest(seq, version, bundle.board, bundle.manifest["mpy"], files, notes)
            manifest_bytes = manifest.to_bytes()
            envelope = mf.signed(manifest_bytes, mf.key_id(public), private.sign(manifest_bytes))
        except ProtocolError as error:
            raise FleetError("cannot release %s: %s" % (bundle.dir, error)) from None
        name = "%d-%s" % (seq, version)
        stage = Path(tempfile.mkdtemp(prefix=".tmp-%s-" % name, dir=root))
        try:
            _write(stage / store.RELEASE_FILE, envelope)
            for rel, data in packed.items():
                _write(stage / store.FILES / (rel + store.SUFFIX), data)
            # What a rollout will check, checked now: a release that fails it is never stored.
            store.verify_release(stage, [public], name=name)
            for folder in sorted(stage.rglob("*"), reverse=True):
                if folder.is_dir():
                    _fsync_dir(folder)
            _fsync_dir(stage)
            os.rename(stage, root / name)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        _fsync_dir(root)
    return store.describe(root / name)


def _check_trust(data: dict[str, bytes], where: Path, public: bytes, key_path: Path) -> None:
    """Refuse a bundle that would not accept the next release signed with this key (no lock-out)."""
    fix = "rebuild it with `fleet build --trust %s`" % Path(key_path).with_suffix(".pub")
    raw = data.get(store.TRUST_FILE)
    if raw is None:
        raise FleetError("%s trusts no release key (it has no %s); %s" % (where, store.TRUST_FILE, fix))
    try:
        keys = mf.read_trust(raw)
    except ProtocolError as error:
        raise FleetError("%s: unreadable %s (%s); %s" % (where, store.TRUST_FILE, error, fix)) from None
    if public not in keys:
        raise FleetError("%s does not trust the key %s (id %s), so devices running it would refuse the next "
                         "release; %s" % (where, key_path, mf.key_id(public).hex(), fix))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    # The rename lives in the folder's metadata: without this a power cut may undo it.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _locked:
    """Hold an exclusive flock on releases/.lock: two releases at once would pick the same seq. Temporary
    folders a killed release left behind are removed under it (none can be live)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)  # released by the kernel if this process dies
        for stale in self.root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
