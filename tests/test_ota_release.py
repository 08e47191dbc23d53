"""Signed releases, fleet side: release keys, `fleet ota release` of a real built bundle, the checks a
rollout runs before publishing (tampered, foreign-key, unsigned releases refused), and the manifest and
envelope format of protocols/manifest.py on CPython and under the MicroPython VM."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zlib
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.build import build_bundle
from fleet.errors import FleetError
from fleet.ota.keys import keygen, load_private_key, load_public_key, public_raw
from fleet.ota.release import make_release
from fleet.ota.store import RELEASE_FILE, compress, list_releases, verify_release
from protocols import manifest as mf
from protocols.errors import ProtocolError
from tests.mpvm import check_micropython

REPO = Path(__file__).resolve().parent.parent
SHA = hashlib.sha256(b"x").digest()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    fleet_key, fleet_pub = keygen(folder, "fleet")
    other_key, other_pub = keygen(folder, "other")
    return {"key": fleet_key, "pub": load_public_key(fleet_pub), "pub_path": fleet_pub,
            "other_key": other_key, "other": load_public_key(other_pub)}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, keys):
    """An emulator bundle that trusts the fleet key."""
    out = tmp_path_factory.mktemp("bundles") / "trusting"
    build_bundle("emulator", "2.0.0", out, [keys["pub"]])
    return out


@pytest.fixture
def release(tmp_path, bundle, keys):
    """One stored release in a fresh FLEET_HOME: (its folder, its listing)."""
    info = make_release(bundle, keys["key"], notes="first", home=tmp_path)
    return tmp_path / "releases" / info["dir"], info


# -- keys --------------------------------------------------------------------------------------------


def test_keygen_writes_a_private_0600_pem_and_a_hex_public_key_and_never_overwrites(tmp_path):
    old_umask = os.umask(0)  # the modes must not depend on the caller's umask
    try:
        key_path, pub_path = keygen(tmp_path / "k", "city")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert re.fullmatch(r"[0-9a-f]{64}\n", pub_path.read_text())
    assert public_raw(load_private_key(key_path)) == load_public_key(pub_path)
    before = key_path.read_bytes()
    with pytest.raises(FleetError, match="never overwrites"):
        keygen(tmp_path / "k", "city")
    assert key_path.read_bytes() == before
    with pytest.raises(FleetError, match="bad key name"):
        keygen(tmp_path / "k", "../escape")


def test_a_pem_public_key_reads_as_the_same_raw_key(tmp_path, keys):
    pem = load_private_key(keys["key"]).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "k.pub").write_bytes(pem)
    assert load_public_key(tmp_path / "k.pub") == keys["pub"]


def test_bad_key_files_are_one_clear_error(tmp_path, keys):
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    encrypted = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"))
    cases = {"garbage.key": (b"hello", "not a private key"), "ec.key": (ec_key, "not an Ed25519 key"),
             "enc.key": (encrypted, "encrypted"),
             "broken.key": (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a readable")}
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(FleetError, match=message):
            load_private_key(tmp_path / name)
    with pytest.raises(FleetError, match="that is a public key"):
        load_private_key(keys["pub_path"])
    with pytest.raises(FleetError, match="cannot read"):
        load_private_key(tmp_path / "missing.key")
    with pytest.raises(FleetError, match="is a private key"):
        load_public_key(keys["key"])
    (tmp_path / "short.pub").write_text("abcd\n")
    with pytest.raises(FleetError, match="not a public key"):
        load_public_key(tmp_path / "short.pub")


# -- releases ----------------------------------------------------------------------------------------


def test_release_of_a_built_bundle_verifies_and_holds_every_slot_file_compressed(release, bundle, keys):
    folder, info = release
    assert folder.name == "1-2.0.0" and info["status"] == "ok" and info["notes"] == "first"
    manifest = verify_release(folder, [keys["pub"]])
    assert (manifest.seq, manifest.version, manifest.board, manifest.mpy) == (1, "2.0.0", "emulator", "6.3")
    built = json.loads((bundle / "manifest.json").read_text())
    slot = {entry["path"] for entry in built["files"]} - {"boot.py", "main.py", "board.py"}
    assert [entry[0] for entry in manifest.files] == sorted(slot) and "trust.cbor" in slot
    for path, size, sha256, zsize in manifest.files:
        packed = (folder / "files" / (path + ".z")).read_bytes()
        assert len(packed) == zsize and packed[0] >> 4 <= 2  # zlib header: window of 1 KB at most
        data = zlib.decompress(packed)
        assert data == (bundle / path).read_bytes() and len(data) == size
        assert hashlib.sha256(data).digest() == sha256
    assert manifest.total == sum(entry[1] for entry in manifest.files) == info["bytes"]
    assert info["compressed"] < info["bytes"]
    # The envelope is what SPEC.md says: the exact manifest bytes, key id, Ed25519 signature over them.
    manifest_bytes, kid, signature = cbor2.loads((folder / RELEASE_FILE).read_bytes())
    assert kid == hashlib.sha256(keys["pub"]).digest()[:8] and info["key_id"] == kid.hex()
    load_private_key(keys["key"]).public_key().verify(signature, manifest_bytes)
    assert manifest_bytes == manifest.to_bytes()


def test_seq_is_strictly_increasing_and_never_reused(tmp_path, bundle, keys):
    seqs = [make_release(bundle, keys["key"], home=tmp_path)["seq"] for _ in range(3)]
    assert seqs == [1, 2, 3]
    (tmp_path / "releases" / "7-broken").mkdir()  # a broken release still holds its seq
    assert make_release(bundle, keys["key"], version="2.0.1", home=tmp_path)["dir"] == "8-2.0.1"
    listed = list_releases(tmp_path)
    assert [item.get("seq") for item in listed] == [1, 2, 3, None, 8]
    assert listed[3]["status"].startswith("refused") and listed[4]["status"] == "ok"


def _tamper_file(folder: Path) -> None:
    target = folder / "files" / "agent" / "app.mpy.z"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x40
    target.write_bytes(bytes(data))


def _swap_file(folder: Path) -> None:
    # a valid stream of different content, same compressed length: only the hash can tell
    target = folder / "files" / "agent" / "app.mpy.z"
    original = zlib.decompress(target.read_bytes())
    for n in range(256):
        other = compress(original[:-1] + bytes([(original[-1] + 1 + n) % 256]))
        if len(other) == len(target.read_bytes()):
            target.write_bytes(other)
            return
    raise AssertionError("no same-length replacement found")


def _resign(folder: Path, change) -> None:
    manifest_bytes, kid, signature = mf.read_signed((folder / RELEASE_FILE).read_bytes())
    (folder / RELEASE_FILE).write_bytes(mf.signed(*change(manifest_bytes, kid, signature)))


def _edit_manifest(manifest_bytes, kid, signature):
    obj = cbor2.loads(manifest_bytes)
    obj[2] = "2.0.0-evil"
    return mf.Manifest.from_obj(obj).to_bytes(), kid, signature


def _flip_signature(manifest_bytes, kid, signature):
    return manifest_bytes, kid, bytes([signature[0] ^ 1]) + signature[1:]


def _big_window(folder: Path) -> None:
    target = folder / "files" / "trust.cbor.z"
    data = zlib.decompress(target.read_bytes())
    target.write_bytes(zlib.compress(data, 9))  # zlib's default 32 KB window, same length for 35 bytes


TAMPERING = {
    "flipped byte in a file": (_tamper_file, "HASH_MISMATCH"),
    "same-size other content": (_swap_file, "does not match its SHA-256"),
    "missing file": (lambda f: (f / "files" / "agent" / "app.mpy.z").unlink(), "missing"),
    "extra file": (lambda f: (f / "files" / "agent" / "evil.mpy.z").write_bytes(b"x"), "not in its manifest"),
    "32 KB window": (_big_window, "window of at most 1024 bytes"),
    "edited manifest": (lambda f: _resign(f, _edit_manifest), "BAD_SIGNATURE"),
    "flipped signature": (lambda f: _resign(f, _flip_signature), "BAD_SIGNATURE"),
    "unsigned": (lambda f: (f / RELEASE_FILE).write_bytes(cbor2.dumps([(f / RELEASE_FILE).read_bytes()])),
                 "BAD_MANIFEST"),
    "truncated envelope": (lambda f: (f / RELEASE_FILE).write_bytes((f / RELEASE_FILE).read_bytes()[:-5]),
                           "BAD_MANIFEST"),
    "no envelope": (lambda f: (f / RELEASE_FILE).unlink(), "cannot read"),
    "renamed folder": (lambda f: f.rename(f.with_name("9-2.0.0")), "must be named 1-2.0.0"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_a_tampered_stored_release_is_refused(release, keys, case):
    folder, _ = release
    tamper, message = TAMPERING[case]
    tamper(folder)
    if not folder.exists():
        folder = folder.with_name("9-2.0.0")
    with pytest.raises(FleetError, match=message) as refused:
        verify_release(folder, [keys["pub"]])
    assert "\n" not in str(refused.value)
    assert list_releases(folder.parent.parent)[0]["status"].startswith("refused")


def test_a_foreign_key_is_refused(release, keys):
    folder, _ = release
    with pytest.raises(FleetError, match="UNTRUSTED_KEY"):
        verify_release(folder, [keys["other"]])
    # the same manifest signed by the other key, under its own id or posing as the fleet key
    manifest_bytes, kid, _ = mf.read_signed((folder / RELEASE_FILE).read_bytes())
    foreign = load_private_key(keys["other_key"]).sign(manifest_bytes)
    (folder / RELEASE_FILE).write_bytes(mf.signed(manifest_bytes, mf.key_id(keys["other"]), foreign))
    with pytest.raises(FleetError, match="UNTRUSTED_KEY"):
        verify_release(folder, [keys["pub"]])
    (folder / RELEASE_FILE).write_bytes(mf.signed(manifest_bytes, kid, foreign))
    with pytest.raises(FleetError, match="BAD_SIGNATURE"):
        verify_release(folder, [keys["pub"]])


def test_a_bundle_that_does_not_trust_the_key_is_refused(tmp_path, keys):
    untrusting = tmp_path / "other"
    build_bundle("emulator", "2.0.0", untrusting, [keys["other"]])
    with pytest.raises(FleetError, match=r"does not trust the key .*fleet build --trust .*fleet\.pub"):
        make_release(untrusting, keys["key"], home=tmp_path / "home")
    build_bundle("emulator", "2.0.0", untrusting)
    with pytest.raises(FleetError, match=r"trusts no release key .*fleet build --trust"):
        make_release(untrusting, keys["key"], home=tmp_path / "home")
    assert not (tmp_path / "home" / "releases").exists()


def test_a_malformed_bundle_is_refused(tmp_path, bundle, keys):
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "agent" / "app.mpy").write_bytes(b"tampered")
    with pytest.raises(FleetError, match="does not match its manifest"):
        make_release(broken, keys["key"], home=tmp_path)
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps(dict(manifest, files="all")))
    with pytest.raises(FleetError, match="malformed manifest"):
        make_release(broken, keys["key"], home=tmp_path)
    (broken / "manifest.json").write_text(json.dumps(dict(manifest, board="arduino")))
    (broken / "agent" / "app.mpy").write_bytes((bundle / "agent" / "app.mpy").read_bytes())
    with pytest.raises(FleetError, match="BAD_MANIFEST: board must be one of"):
        make_release(broken, keys["key"], home=tmp_path)
    with pytest.raises(FleetError, match="not a bundle"):
        make_release(tmp_path, keys["key"], home=tmp_path)
    with pytest.raises(FleetError, match="cannot name a release"):
        make_release(bundle, keys["key"], version="1.0/evil", home=tmp_path)
    assert [p.name for p in (tmp_path / "releases").iterdir()] == [".lock"]


# -- the CLI -------------------------------------------------------------------------------------------


def test_cli_keygen_build_release_and_list(tmp_path):
    env = dict(os.environ, FLEET_HOME=str(tmp_path / "home"))

    def fleet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fleet.cli.main", *args], capture_output=True, text=True,
                              cwd=tmp_path, env=env, check=False)

    assert fleet("ota", "keygen", "--out", "keys").returncode == 0
    again = fleet("ota", "keygen", "--out", "keys")
    assert again.returncode == 3 and again.stderr.startswith("fleet: ") and "Traceback" not in again.stderr
    built = fleet("build", "--board", "emulator", "--version", "3.0.0", "--trust", "keys/release.pub", "-o", "b")
    assert built.returncode == 0 and "1 trusted release key" in built.stdout, built.stderr
    assert mf.read_trust((tmp_path / "b" / "trust.cbor").read_bytes()) == [load_public_key(tmp_path / "keys/release.pub")]
    assert "trust.cbor" in {e["path"] for e in json.loads((tmp_path / "b" / "manifest.json").read_text())["files"]}
    bad = fleet("build", "--board", "emulator", "--trust", "keys/release.key", "-o", "c")
    assert bad.returncode == 3 and "is a private key" in bad.stderr
    made = fleet("ota", "release", "b", "--key", "keys/release.key", "--notes", "cli")
    assert made.returncode == 0 and made.stdout.startswith("release 1: 3.0.0 for emulator"), made.stderr
    listed = json.loads(fleet("ota", "releases", "--json").stdout)
    assert [(item["seq"], item["version"], item["notes"], item["status"]) for item in listed] == [(1, "3.0.0", "cli", "ok")]
    assert "ok" in fleet("ota", "releases").stdout


# -- the format: protocols/manifest.py ----------------------------------------------------------------

FILES = [["b.mpy", 10, SHA, 12], ["a/x.mpy", 5, SHA, 7]]


def _obj(changes=None):
    obj = mf.Manifest(3, "1.0.0", "esp32", "6.3", FILES, "n").to_obj()
    obj.update(changes or {})
    return {key: value for key, value in obj.items() if value is not None}


def test_manifest_round_trip_sorts_files_and_computes_total():
    manifest = mf.Manifest(3, "1.0.0", "esp32", "6.3", FILES, "n")
    assert [entry[0] for entry in manifest.files] == ["a/x.mpy", "b.mpy"] and manifest.total == 15
    data = manifest.to_bytes()
    assert data == cbor2.dumps(cbor2.loads(data), canonical=True)
    again = mf.Manifest.from_bytes(data)
    assert again.to_obj() == manifest.to_obj() and again.to_bytes() == data
    assert mf.Manifest.from_bytes(cbor2.dumps({**_obj(), 99: "later field"})).to_bytes() == data


BAD = {
    "seq 0": _obj({1: 0}), "seq bool": _obj({1: True}), "seq too big": _obj({1: 2**32}),
    "format 2": _obj({0: 2}), "no format": {k: v for k, v in _obj().items() if k != 0},
    "no files": {k: v for k, v in _obj().items() if k != 5}, "empty files": _obj({5: []}),
    "long version": _obj({2: "1" * 33}), "board": _obj({3: "arduino"}), "mpy": _obj({4: "6"}),
    "mpy text": _obj({4: "v6.3"}), "absolute path": _obj({5: [["/boot.py", 1, SHA, 1]], 7: 1}),
    "dot-dot path": _obj({5: [["../boot.py", 1, SHA, 1]], 7: 1}),
    "odd character": _obj({5: [["a b.mpy", 1, SHA, 1]], 7: 1}),
    "unsorted": _obj({5: [["b", 1, SHA, 1], ["a", 1, SHA, 1]], 7: 2}),
    "twice": _obj({5: [["a", 1, SHA, 1], ["a", 1, SHA, 1]], 7: 2}),
    "short sha": _obj({5: [["a", 1, SHA[:31], 1]], 7: 1}), "sha as text": _obj({5: [["a", 1, "x" * 32, 1]], 7: 1}),
    "three fields": _obj({5: [["a", 1, SHA]], 7: 1}), "wrong total": _obj({7: 16}),
    "long notes": _obj({6: "n" * 201}), "too many files": _obj({5: [["f%03d" % i, 0, SHA, 8] for i in range(129)],
                                                                    7: 0}),
    "not a map": [1, 2], "text keys": {"0": 1},
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_malformed_manifest_is_refused_with_bad_manifest(case):
    with pytest.raises(ProtocolError) as refused:
        mf.Manifest.from_bytes(cbor2.dumps(BAD[case]))
    assert refused.value.reason == "BAD_MANIFEST"


def test_envelope_and_trust_list_checks():
    data = mf.Manifest(3, "1.0.0", "esp32", "6.3", FILES).to_bytes()
    assert mf.read_signed(mf.signed(data, b"k" * 8, b"s" * 64)) == (data, b"k" * 8, b"s" * 64)
    for envelope, reason in ((cbor2.dumps([data, b"k" * 8]), "BAD_MANIFEST"),
                             (cbor2.dumps({0: data}), "BAD_MANIFEST"),
                             (cbor2.dumps([data, b"k" * 7, b"s" * 64]), "BAD_MANIFEST"),
                             (cbor2.dumps([data, b"k" * 8, b"s" * 63]), "BAD_SIGNATURE"),
                             (cbor2.dumps([[data], b"k" * 8, b"s" * 64]), "BAD_MANIFEST"),
                             (b"\x83\x40", "BAD_MANIFEST")):
        with pytest.raises(ProtocolError) as refused:
            mf.read_signed(envelope)
        assert refused.value.reason == reason
    keys = [bytes(32), bytes(range(32))]
    assert mf.read_trust(mf.trust_bytes(keys)) == keys
    assert mf.trusted_key(keys, mf.key_id(keys[1])) == keys[1]
    for bad in (cbor2.dumps([]), cbor2.dumps([bytes(31)]), cbor2.dumps([bytes(32)] * 2), b"\xff"):
        with pytest.raises(ProtocolError) as refused:
            mf.read_trust(bad)
        assert refused.value.reason == "UNTRUSTED_KEY"
    with pytest.raises(ProtocolError, match="UNTRUSTED_KEY"):
        mf.trusted_key(keys, b"\x00" * 8)


def test_spec_example_is_what_the_code_writes():
    private = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    public = public_raw(private)
    app = b"M\x06" + bytes(200)
    trust = mf.trust_bytes([public])
    files = [["agent/app.mpy", len(app), hashlib.sha256(app).digest(), len(compress(app))],
             ["trust.cbor", len(trust), hashlib.sha256(trust).digest(), len(compress(trust))]]
    data = mf.Manifest(5, "1.5.0", "esp32", "6.3", files, "tilt filter").to_bytes()
    spec = (REPO / "protocols" / "SPEC.md").read_text()
    for example in (data, mf.signed(data, mf.key_id(public), private.sign(data)), trust):
        assert "\n    %s\n" % example.hex() in spec


def test_the_vm_reads_a_real_signed_release(release, keys):
    """The device's view: envelope, trust list and manifest decoded by protocols.manifest on MicroPython."""
    folder, _ = release
    envelope = (folder / RELEASE_FILE).read_bytes()
    trust = zlib.decompress((folder / "files" / "trust.cbor.z").read_bytes())
    manifest = verify_release(folder, [keys["pub"]])
    bad = mf.signed(cbor2.dumps(_obj({4: "7"})), b"k" * 8, b"s" * 64)
    out = check_micropython(
        "from protocols import manifest as mf\n"
        "from protocols.errors import ProtocolError\n"
        "data, kid, sig = mf.read_signed(%r)\n"
        "key = mf.trusted_key(mf.read_trust(%r), kid)\n"
        "m = mf.Manifest.from_bytes(data)\n"
        "assert m.to_bytes() == data\n"
        "print(m.seq, m.version, m.board, m.mpy, m.total, len(m.files), m.files[0][0], m.notes)\n"
        "print(kid.hex(), key.hex(), len(sig))\n"
        "try:\n"
        "    mf.Manifest.from_bytes(mf.read_signed(%r)[0])\n"
        "except ProtocolError as e:\n"
        "    print(e.reason)\n" % (envelope, trust, bad))
    first, second, third = out.split("\n")[:3]
    assert first == "%d %s emulator 6.3 %d %d %s first" % (manifest.seq, manifest.version, manifest.total,
                                                           len(manifest.files), manifest.files[0][0])
    assert second == "%s %s 64" % (mf.key_id(keys["pub"]).hex(), keys["pub"].hex())
    assert third == "BAD_MANIFEST"
