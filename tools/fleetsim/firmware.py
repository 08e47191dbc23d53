"""What a simulated device runs: a release's version, its release seq, board, `.mpy` version, the SHA-256
of each file of its slot and the keys its trust.cbor lists (SPEC.md "OTA release").

Devices running the same release share one `Firmware` object, so a thousand devices cost a pointer each.
`Catalogue` holds them for one process: the bundle the fleet starts from (`fleet-sim run --bundle`) and
each release a device has installed since, made once from its verified manifest. Without a bundle the
devices run `Settings.firmware` with an empty trust list: they refuse every release (`UNTRUSTED_KEY`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fleet.errors import FleetError
from protocols import manifest as mf
from protocols.errors import ProtocolError

BUNDLE_MANIFEST = "manifest.json"  # firmware/build.py MANIFEST
TRUST_FILE = "trust.cbor"  # firmware/build.py TRUST


class Firmware:
    """One release as a device runs it (see the module docstring); `files`: path -> raw SHA-256."""

    __slots__ = ("version", "release", "board", "mpy", "files", "trust")

    def __init__(self, version: str, release: int, board: str, mpy: str, files: dict[str, bytes],
                 trust: list[bytes]) -> None:
        self.version = version
        self.release = release
        self.board = board
        self.mpy = mpy
        self.files = files
        self.trust = trust

    @classmethod
    def from_bundle(cls, folder: str | Path) -> Firmware:
        """The release a bundle of `fleet build` holds (release seq 0 when flashed, as agent/ota_offer.py
        reads it); FleetError when the folder is not a readable bundle."""
        folder = Path(folder)
        try:
            doc = json.loads((folder / BUNDLE_MANIFEST).read_text())
            files = {entry["path"]: bytes.fromhex(entry["sha256"]) for entry in doc["files"]}
            version, board, mpy = str(doc["version"]), str(doc["board"]), str(doc["mpy"])
            release = int(doc.get("release", 0))
        except FileNotFoundError:
            raise FleetError("%s is not a bundle: it has no %s (build one with `fleet build`)"
                             % (folder, BUNDLE_MANIFEST)) from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise FleetError("cannot read the bundle %s (%s)" % (folder, error)) from None
        trust: list[bytes] = []
        if (folder / TRUST_FILE).exists():
            try:
                trust = mf.read_trust((folder / TRUST_FILE).read_bytes())
            except ProtocolError as error:
                raise FleetError("%s: unreadable %s (%s)" % (folder, TRUST_FILE, error)) from None
        return cls(version, release, board, mpy, files, trust)


class Catalogue:
    """The firmware of one simulator process: `base` (what every device starts with) and each release
    installed since (`installed`), one object per release."""

    def __init__(self, base: Firmware) -> None:
        self.base = base
        self._installed: dict[tuple[int, str], Firmware] = {}
        self._manifests: dict[bytes, mf.Manifest] = {}

    @classmethod
    def for_settings(cls, settings: Any) -> Catalogue:
        """From `settings.bundle`, or a firmware of version `settings.firmware` that trusts no key."""
        if settings.bundle:
            return cls(Firmware.from_bundle(settings.bundle))
        return cls(Firmware(settings.firmware, 0, "emulator", "", {}, []))

    def manifest(self, digest: bytes, data: bytes) -> mf.Manifest:
        """The manifest `data` of the envelope whose SHA-256 is `digest`, decoded once per process (each
        device still checks the envelope's hash and signature itself); ProtocolError when malformed."""
        found = self._manifests.get(digest)
        if found is None:
            found = self._manifests[digest] = mf.Manifest.from_bytes(data)
        return found

    def installed(self, manifest: mf.Manifest, previous: Firmware) -> Firmware:
        """What a device runs after installing `manifest` over `previous` (it keeps its trust list: a
        release always trusts the key that signed it, fleet/ota/release.py)."""
        key = (manifest.seq, manifest.version)
        found = self._installed.get(key)
        if found is None:
            files = {entry[0]: entry[2] for entry in manifest.files}
            found = self._installed[key] = Firmware(manifest.version, manifest.seq, manifest.board, manifest.mpy,
                                                    files, previous.trust)
        return found
