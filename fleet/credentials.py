"""Per-device MQTT credentials: a random secret for the board, a Mosquitto password hash for the fleet.

The secret is written to the board once and never stored on the fleet side; the fleet keeps only the
hash, in the format of Mosquitto 2's password file (what `mosquitto_passwd` writes):

    $7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512(secret, salt, iterations)>

(type 7 = sha512-pbkdf2; 12-byte salt; 64-byte digest; standard base64 with padding).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

from fleet.errors import FleetError

#: The fleet's own services (ingest, commands) connect as this user; no device may take the name.
OPS_USER = "fleet-ops"
SECRET_BYTES = 24  # 192 bits: far beyond guessing, so the hash needs no slow stretching (below)
SALT_BYTES = 12  # as mosquitto_passwd
# mosquitto_passwd's default. The broker runs PBKDF2 at every CONNECT; after a city-wide outage thousands
# of nodes reconnect at once, and with random 192-bit secrets more iterations buy no safety.
ITERATIONS = 101
HASH_TYPE = 7

_USERNAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
_B64 = r"[A-Za-z0-9+/]+={0,2}"
_HASH = re.compile(r"\$7\$[1-9][0-9]{0,6}\$(%s)\$(%s)\Z" % (_B64, _B64))


def new_secret() -> str:
    """A new random device secret: 192 bits, URL-safe base64 (32 characters, no padding)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def mosquitto_hash(secret: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The password-file hash of `secret` (Mosquitto 2 `$7$` sha512-pbkdf2); random salt unless given."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode("utf-8"), salt, iterations)
    return "$%d$%d$%s$%s" % (HASH_TYPE, iterations, base64.b64encode(salt).decode(),
                             base64.b64encode(digest).decode())


def verify_secret(secret: str, hashed: str) -> bool:
    """True when `secret` matches a `$7$` hash (ours or mosquitto_passwd's); constant-time compare."""
    match = _HASH.match(hashed)
    if not match:
        return False
    try:
        iterations = int(hashed.split("$")[2])
        salt = base64.b64decode(match.group(1), validate=True)
        expected = base64.b64decode(match.group(2), validate=True)
    except (ValueError, binascii.Error):
        return False
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(digest, expected)


def is_mosquitto_hash(text: object) -> bool:
    """True for text shaped like a Mosquitto 2 `$7$` hash (safe to write on a password-file line)."""
    return isinstance(text, str) and _HASH.match(text) is not None


def check_username(name: object) -> str:
    """Return `name` when it can be an MQTT username in our password and ACL files, else FleetError."""
    if not isinstance(name, str) or not _USERNAME.match(name):
        raise FleetError("bad MQTT username %r: use 1..64 characters of a-z 0-9 - _" % (name,))
    if name == OPS_USER:
        raise FleetError("MQTT username %r is reserved for the fleet's own services; use another" % name)
    return name


def device_credential(device_id: str) -> tuple[str, dict[str, str]]:
    """A new credential for a device: (secret for the board, {"username", "hash"} for the registry).

    The username is the device id."""
    secret = new_secret()
    return secret, {"username": check_username(device_id), "hash": mosquitto_hash(secret)}
