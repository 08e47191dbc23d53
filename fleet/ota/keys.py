"""Release keys: Ed25519 key pairs made by `fleet ota keygen`, read back for signing and for trust lists.

Files (NAME defaults to "release"):

- NAME.key: the private key, PKCS#8 PEM without a passphrase, mode 0600. It signs releases; keep it
  off the fleet server if you can (only `fleet ota release` needs it).
- NAME.pub: the raw 32-byte public key as 64 hex digits and a newline: short enough to read out, compare
  or paste, and exactly the bytes trust.cbor holds. A SubjectPublicKeyInfo PEM ("BEGIN PUBLIC KEY") is
  accepted wherever a .pub is read.

Neither file is ever overwritten: losing a release key means devices can only be updated by a release
signed with another key they already trust.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleet.errors import FleetError
from fleet.home import private_dir

DEFAULT_NAME = "release"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


def keygen(out_dir: Path, name: str = DEFAULT_NAME) -> tuple[Path, Path]:
    """Create NAME.key (0600) and NAME.pub in `out_dir`; refuse when either exists. Returns both paths."""
    if not _NAME.fullmatch(name):
        raise FleetError("bad key name %r: use 1..64 of A-Z a-z 0-9 . _ - starting with a letter or digit" % name)
    folder = private_dir(Path(out_dir))
    key_path, pub_path = folder / (name + ".key"), folder / (name + ".pub")
    for path in (key_path, pub_path):
        if path.exists():
            raise FleetError("%s already exists and keygen never overwrites a key; choose another --name or --out"
                             % path)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _create(key_path, pem, 0o600)
    try:
        _create(pub_path, (public_raw(private).hex() + "\n").encode(), 0o644)
    except BaseException:
        key_path.unlink()  # a key without its public half is of no use: leave neither
        raise
    return key_path, pub_path


def _create(path: Path, data: bytes, mode: int) -> None:
    """Write a new file (O_EXCL: never follows or replaces what is there) with `mode` whatever the umask."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise FleetError("%s already exists and keygen never overwrites a key; choose another --name or --out"
                         % path) from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in PKCS#8 PEM file `path`; FleetError says what is wrong with the file."""
    data = _read(path, "release key")
    if b"PRIVATE KEY" not in data:
        hint = " (that is a public key: pass the .key file)" if _looks_public(data) else ""
        raise FleetError("%s is not a private key PEM%s; make one with `fleet ota keygen`" % (path, hint))
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise FleetError("%s is encrypted; release keys are stored without a passphrase "
                         "(decrypt it with `openssl pkey`)" % path) from None
    except (ValueError, UnsupportedAlgorithm):
        raise FleetError("%s is not a readable PEM private key; make one with `fleet ota keygen`" % path) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FleetError("%s is not an Ed25519 key; make one with `fleet ota keygen`" % path)
    return key


def load_public_key(path: Path) -> bytes:
    """The raw 32-byte Ed25519 public key in `path` (64 hex digits, or a PEM public key)."""
    data = _read(path, "public key")
    text = data.decode("ascii", "replace").strip()
    if _HEX_KEY.fullmatch(text):
        return bytes.fromhex(text)
    if b"PRIVATE KEY" in data:
        raise FleetError("%s is a private key; give its .pub file (never put a private key in a bundle)" % path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise FleetError("%s is not a public key (64 hex digits or a PEM public key); "
                         "use the .pub file `fleet ota keygen` wrote" % path) from None
    if not isinstance(key, Ed25519PublicKey):
        raise FleetError("%s is not an Ed25519 public key; use the .pub file `fleet ota keygen` wrote" % path)
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise FleetError("cannot read %s %s (%s)" % (what, path, error.strerror or error)) from None


def _looks_public(data: bytes) -> bool:
    return b"PUBLIC KEY" in data or bool(_HEX_KEY.fullmatch(data.decode("ascii", "replace").strip()))


def public_raw(private: Ed25519PrivateKey) -> bytes:
    """The raw 32 bytes of a private key's public half."""
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify(public: bytes, signature: bytes, message: bytes) -> bool:
    """True when `signature` is `public`'s Ed25519 signature of `message`."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
