"""protocols.cbor: exact bytes, exact errors and offsets, limits; the same checks under the real VM."""

import random
import struct

import pytest

from protocols import cbor, cbor_decode
from protocols.cbor import CBORDecodeError, CBOREncodeError, Tag, dumps, loads
from protocols.errors import ProtocolError
from tests.mpvm import check_micropython

SENML_ONE = [{-2: "dev/", -3: 1764400000, 0: "lvl", 1: "cm", 2: 12.5}]


@pytest.mark.parametrize(
    "value, hexed",
    [
        (SENML_ONE, "81a500636c766c0162636d02f94a4021646465762f221a692a9b80"),
        # RFC 8949 §4.2.1: keys sorted by encoded bytes; 24 (1818) sorts before -1 (20), "b" before "aa"
        ({-1: 0, 24: 0, "aa": 0, "b": 0}, "a4181800200061620062616100"),
        ((1, (2,)), "82018102"),
        (bytearray(b"\x01"), "4101"),
        (memoryview(b"\x01\x02"), "420102"),
        (2**32 - 1, "1affffffff"),
        (2**32, "1b0000000100000000"),
        (-(2**32) - 1, "3b0000000100000000"),
        (Tag(1, 1764400000.0), "c1fa4ed25537"),
        (Tag(2**64 - 1, None), "dbfffffffffffffffff6"),
        ("x" * 24, "7818" + "78" * 24),
        (list(range(24)), "9818" + bytes(range(24)).hex()),
        (65505.0, "fa477fe100"),  # just above the half range, exact in single
        (1e-7, "fb3e7ad7f29abcaf48"),  # no single holds 1e-7 exactly
        (3.4028235677973366e38, "fb47effffff0000000"),  # rounds to an infinite single: double
        (1e39, "fb48078287f49c4a1d"),
    ],
)
def test_encodes_exact_bytes(value, hexed):
    assert dumps(value).hex() == hexed


def test_map_order_does_not_depend_on_insertion_order():
    items = [(-2, "a"), (0, "b"), (7, 1), ("z", 2), ("yy", 3), (300, 4)]
    assert dumps(dict(items)) == dumps(dict(reversed(items)))


def test_every_half_encodes_as_half_and_round_trips():
    # CPython's struct 'e' is the reference; ours is by hand because MicroPython's is not reliable.
    for bits in range(0x10000):
        raw = struct.pack(">H", bits)
        value = struct.unpack(">e", raw)[0]
        if value != value:
            continue
        assert dumps(value) == b"\xf9" + raw, hex(bits)
        decoded = loads(b"\xf9" + raw)
        assert decoded == value and struct.pack(">e", decoded) == raw


def test_singles_that_are_not_halves_encode_as_single():
    rng = random.Random(7)
    for _ in range(3000):
        raw = struct.pack(">I", rng.getrandbits(32))
        value = struct.unpack(">f", raw)[0]
        if value != value:
            continue
        try:
            is_half = struct.unpack(">e", struct.pack(">e", value))[0] == value
        except OverflowError:
            is_half = False
        expected = b"\xf9" + struct.pack(">e", value) if is_half else b"\xfa" + raw
        assert dumps(value) == expected


@pytest.mark.parametrize(
    "value, what",
    [
        (2**64, "integer"),
        (-(2**64) - 1, "integer"),
        ({1, 2}, "type set"),
        (object(), "type object"),
        ({(1, 2): 0}, "map key"),
        ({True: 0}, "map key"),
        ({1.5: 0}, "map key"),
        ("\ud800", "not valid Unicode"),
    ],
)
def test_encode_errors(value, what):
    with pytest.raises(CBOREncodeError, match="cannot encode .*" + what):
        dumps(value)


def test_encode_depth_limit_and_cycles():
    nested: list = [0]
    for _ in range(15):
        nested = [nested]
    assert loads(dumps(nested)) == nested  # 16 levels: the default limit
    with pytest.raises(CBOREncodeError, match="deeper"):
        dumps([nested])
    with pytest.raises(CBOREncodeError, match="deeper"):
        dumps({1: [[0]]}, max_depth=2)
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(CBOREncodeError, match="deeper"):
        dumps(cycle)


@pytest.mark.parametrize(
    "hexed, what, offset",
    [
        ("", "truncated", 0),
        ("83010203ff", "trailing bytes", 4),
        ("8301", "truncated input: array items: 3 bytes needed, 1 left", 1),
        ("1a0001", "truncated", 1),
        ("9b7fffffffffffffff00", "truncated input: array items: 9223372036854775807 bytes needed", 9),
        ("bbffffffffffffffff", "truncated input: map pairs", 9),
        ("5a7fffffff00", "truncated input: string bytes", 5),
        ("8218ff1c", "reserved additional information 28", 3),
        ("3f", "indefinite length not allowed for major type 1", 0),
        ("830102ff", "break code outside", 3),
        ("a2016161f701", "unsupported simple value 23", 4),
        ("a1820102f6", "map key is not an int or text", 1),
        ("a1f500", "map key is not an int or text", 1),
        ("a201000100", "duplicate map key 1", 3),
        ("826161" + "62c3", "truncated input: string bytes", 4),
        ("8262c328", "invalid UTF-8", 2),
        ("c1623132", "tag 1 (epoch time) content is not a number", 0),
        ("c1f5", "tag 1 (epoch time) content is not a number", 0),
        ("7f61614161ff", "chunk", 3),
    ],
)
def test_decode_errors_say_what_and_where(hexed, what, offset):
    with pytest.raises(CBORDecodeError) as caught:
        loads(bytes.fromhex(hexed))
    assert what in str(caught.value)
    assert caught.value.offset == offset
    assert str(caught.value).endswith(f"at byte {offset}")


@pytest.mark.parametrize(
    "raw",
    [b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xff",
     b"\x80", b"a\xe6\xb0", b"\xf0\x90\x85"],
)
def test_invalid_utf8_is_rejected(raw):
    with pytest.raises(CBORDecodeError, match="invalid UTF-8"):
        loads(bytes([0x60 + len(raw)]) + raw)


#: Bytes at the edges of the UTF-8 ranges (RFC 3629 §4): every lead, continuation and boundary case.
EDGES = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE,
         0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]


def _utf8_samples():
    """All 2-byte strings, and 3/4-byte strings made of edge bytes: about 400k cases."""
    out = [bytes((a, b)) for a in range(256) for b in range(256)]
    out += [bytes((a, b, c)) for a in EDGES for b in EDGES for c in EDGES]
    out += [bytes((a, b, c, d)) for a in EDGES[10:] for b in EDGES for c in EDGES for d in EDGES[:10]]
    return out


def test_utf8_check_agrees_with_cpythons_strict_decoder():
    """The validator MicroPython relies on accepts and rejects exactly what CPython does, at the same byte."""
    for raw in _utf8_samples():
        try:
            raw.decode("utf-8")
            expected = -1
        except UnicodeDecodeError as error:
            expected = error.start
        assert cbor_decode._utf8_error(raw) == expected, raw.hex()


def test_depth_limit_counts_containers_and_tags():
    assert loads(b"\x81" * 16 + b"\x00", max_depth=16) is not None
    for prefix in (b"\x81" * 17, b"\x9f" * 17, b"\xa1\x00" * 17, b"\xc6" * 17):
        with pytest.raises(CBORDecodeError, match="nesting deeper than 16") as caught:
            loads(prefix + b"\x00" * 40)
        assert caught.value.reason == "too_deep"
    assert loads(b"\xc6\x81\x00", max_depth=2) == Tag(6, [0])
    with pytest.raises(CBORDecodeError, match="deeper than 1"):
        loads(b"\xc6\x81\x00", max_depth=1)
    with pytest.raises(CBORDecodeError, match="deeper"):
        loads(b"\x81" * 100000 + b"\x00")  # the limit bounds recursion: no RecursionError


def test_decodes_every_bytes_like_and_stays_a_value_error():
    for data in (b"\x82\x01\x41\x02", bytearray(b"\x82\x01\x41\x02"), memoryview(b"\x00\x82\x01\x41\x02")[1:]):
        assert loads(data) == [1, b"\x02"]
    assert issubclass(CBORDecodeError, ValueError) and issubclass(CBORDecodeError, ProtocolError)
    assert issubclass(CBOREncodeError, ValueError) and issubclass(CBOREncodeError, ProtocolError)
    with pytest.raises(ProtocolError) as caught:
        loads(b"\x18")
    assert caught.value.reason == "bad_cbor"


def test_tag_value_object():
    assert Tag(1, 5) == Tag(1, 5) and Tag(1, 5) != Tag(1, 6) and Tag(1, 5) != Tag(2, 5) and Tag(1, 5) != 5
    assert repr(Tag(32, "x")) == "Tag(32, 'x')"
    for bad in (-1, 2**64, "1", True):
        with pytest.raises(CBOREncodeError, match="tag number"):
            Tag(bad, 0)
    assert loads(dumps(Tag(1, -3))) == Tag(1, -3)
    assert cbor.MAX_DEPTH == 16


# ---------------------------------------------------------------------------------------- MicroPython


@pytest.mark.micropython
def test_micropython_halves_and_exact_bytes():
    """The hand-written half conversion and the key sort give the CPython bytes on the VM."""
    values = [
        SENML_ONE,
        {-1: 0, 24: 0, "aa": 0, "b": 0, 5: [1.0, 1.1, -0.0, 65505.0, 1e-7, 1e39, 2**64 - 1, -(2**64)]},
        [Tag(1, 1764400000), b"\x00\xff", "\u00fc\u6c34\U00010151", None, True, False],
    ]
    code = """
import struct
from protocols.cbor import dumps, loads, Tag
bad = 0
for bits in range(0x10000):
    raw = struct.pack('>H', bits)
    value = loads(b'\\xf9' + raw)
    if value == value and dumps(value) != b'\\xf9' + raw:
        bad += 1
print(bad)
for value in VALUES:
    print(dumps(value).hex())
""".replace("VALUES", repr(values))  # repr() of these values is MicroPython source too
    out = check_micropython(code, heap="110k").split()
    assert out == ["0"] + [dumps(value).hex() for value in values]


def _mutations(seed, count):
    """Mutated valid encodings and random bytes, the same list every run."""
    rng = random.Random(seed)
    seeds = [dumps(SENML_ONE), dumps({0: [1, 2.5, "x", b"\x01"], "k": {-3: Tag(1, 7)}}),
             bytes.fromhex("9f018202039f0405ffff"), bytes.fromhex("7f657374726561646d696e67ff"),
             dumps([1e300, -4.1, 100000.0, 0.0, 2**63, "\u6c34"])]
    out = []
    for i in range(count):
        if i % 5 == 4:
            out.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 24))))
            continue
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            action = rng.randrange(4)
            if action == 0 and data:
                data[rng.randrange(len(data))] = rng.getrandbits(8)
            elif action == 1 and data:
                del data[rng.randrange(len(data)):]
            elif action == 2:
                data.insert(rng.randint(0, len(data)), rng.choice((0x1b, 0x5b, 0x9b, 0xbf, 0xff, 0xf9)))
            elif data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        out.append(bytes(data))
    return out


@pytest.mark.micropython
def test_micropython_text_validation_matches_cpython(tmp_path):
    """MicroPython's own str() is lax (overlongs, surrogates): the codec's check makes it as strict as CPython."""
    samples = [raw for raw in _utf8_samples()[65536:] if raw[0] >= 0x80][::3]
    inputs = [bytes([0x60 + len(raw)]) + raw for raw in samples]
    expected = [_outcome(data) for data in inputs]
    assert _outcomes_in_vm(tmp_path, inputs) == expected
    assert 0 < sum(1 for item in expected if item.startswith("E")) < len(expected)


def _outcome(data):
    try:
        value = loads(data)
    except ValueError as error:
        return f"E{error.offset}"  # type: ignore[attr-defined]
    return dumps(value).hex()


def _outcomes_in_vm(tmp_path, inputs):
    batch = tmp_path / "inputs.txt"
    batch.write_text("\n".join(data.hex() for data in inputs) + "\n")
    code = """
import binascii
from protocols.cbor import dumps, loads
with open(PATH) as f:
    for line in f:
        data = binascii.unhexlify(line.strip())
        try:
            print(dumps(loads(data)).hex())
        except ValueError as error:
            print('E%d' % error.offset)
""".replace("PATH", repr(str(batch)))
    return check_micropython(code, heap="110k").split()


@pytest.mark.micropython
def test_micropython_mutated_inputs_match_cpython(tmp_path):
    """3000 mutated inputs (fixed seed): the VM never crashes, raises only ValueError, and agrees with CPython
    on every outcome (the re-encoded value, or the error offset)."""
    inputs = _mutations(2024, 3000)
    expected = [_outcome(data) for data in inputs]
    assert _outcomes_in_vm(tmp_path, inputs) == expected
    assert sum(1 for item in expected if item.startswith("E")) > 1000  # the batch does exercise the errors


@pytest.mark.micropython
def test_micropython_hostile_lengths_allocate_nothing(tmp_path):
    """Lengths near 2**64 and deep nesting fail cleanly on the 110 KB target heap: no MemoryError, no VM crash."""
    hostile = [b"\x9b" + b"\xff" * 8, b"\xbb" + b"\xff" * 8, b"\x5b" + b"\xff" * 8 + b"x",
               b"\x7b\x7f" + b"\xff" * 7 + b"x", b"\x9a\x7f\xff\xff\xff", b"\x81" * 3000 + b"\x00",
               b"\x9f" * 3000, b"\xc6" * 3000 + b"\x00", b"\x62\xed\xa0", b"\x63\xed\xa0\x80"]
    batch = tmp_path / "hostile.txt"
    batch.write_text("\n".join(data.hex() for data in hostile) + "\n")
    code = """
import binascii
from protocols.cbor import loads
with open(PATH) as f:
    for line in f:
        try:
            loads(binascii.unhexlify(line.strip()))
            print('decoded')
        except ValueError as error:
            print(error.offset)
""".replace("PATH", repr(str(batch)))
    out = check_micropython(code, heap="110k").split()
    assert out == [str(_error_offset(data)) for data in hostile]


def _error_offset(data):
    with pytest.raises(CBORDecodeError) as caught:
        loads(data)
    return caught.value.offset
