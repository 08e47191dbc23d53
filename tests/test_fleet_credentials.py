"""Device secrets and Mosquitto 2 password hashes, checked against the real `mosquitto_passwd`.

That a running mosquitto accepts a secret through a password file we wrote is in test_fleet_broker.py."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess

import pytest

from fleet.credentials import (
    OPS_USER,
    check_username,
    device_credential,
    is_mosquitto_hash,
    mosquitto_hash,
    new_secret,
    verify_secret,
)
from fleet.errors import FleetError
from tests.brokerproc import MOSQUITTO_PASSWD


def passwd_line(tmp_path, user: str, secret: str) -> str:
    """The hash `mosquitto_passwd -b` writes for `secret`."""
    path = tmp_path / "passwd"
    path.write_text("")
    subprocess.run([MOSQUITTO_PASSWD, "-b", str(path), user, secret], check=True, capture_output=True)
    name, hashed = path.read_text().strip().split(":", 1)
    assert name == user
    return hashed


def test_secrets_are_url_safe_random_and_at_least_128_bits():
    secrets = {new_secret() for _ in range(200)}
    assert len(secrets) == 200
    for secret in secrets:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", secret)
        assert len(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))) * 8 >= 128


def test_hash_is_mosquitto_2_pbkdf2_sha512_format():
    salt = bytes(range(12))
    hashed = mosquitto_hash("s3cret", salt)
    kind, iterations, salt_b64, digest_b64 = hashed.split("$")[1:]
    assert (kind, iterations) == ("7", "101")
    assert base64.b64decode(salt_b64) == salt
    assert base64.b64decode(digest_b64) == hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, 101)
    assert mosquitto_hash("s3cret") != mosquitto_hash("s3cret")  # a fresh salt each time
    assert is_mosquitto_hash(hashed) and ":" not in hashed and "\n" not in hashed


def test_same_salt_gives_byte_for_byte_what_mosquitto_passwd_writes(tmp_path):
    secret = new_secret()
    theirs = passwd_line(tmp_path, "mh-1", secret)
    salt = base64.b64decode(theirs.split("$")[3])
    assert mosquitto_hash(secret, salt) == theirs


def test_verify_accepts_mosquitto_passwd_hashes_and_rejects_wrong_secrets(tmp_path):
    theirs = passwd_line(tmp_path, "mh-1", "right")
    assert verify_secret("right", theirs)
    assert not verify_secret("wrong", theirs)
    assert verify_secret("right", mosquitto_hash("right"))
    assert not verify_secret("right", "$6$abc$def")  # the old sha512 type: not ours
    assert not verify_secret("right", "garbage")


def test_device_credential_keeps_only_the_hash():
    secret, credential = device_credential("wl-7")
    assert set(credential) == {"username", "hash"} and credential["username"] == "wl-7"
    assert secret not in credential["hash"] and verify_secret(secret, credential["hash"])


@pytest.mark.parametrize("name", [OPS_USER, "", "has space", "colon:name", "UPPER", "x" * 65, None])
def test_usernames_that_would_break_passwd_or_acl_lines_are_refused(name):
    with pytest.raises(FleetError):
        check_username(name)
