"""protocols.cbor against the reference, cbor2, driven by hypothesis; hostile bytes raise only ValueError."""

import math
import struct
from collections.abc import Mapping

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.cbor import Tag, dumps, loads
from tests.vectorform import same

#: Tags that cbor2 turns into other Python types (dates, bignums, decimals, sets, ...), found by probing
#: cbor2 6.3; the strategies only draw tags outside it so both sides keep them as tags.
CBOR2_SEMANTIC_TAGS = {0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004,
                       43000, 55799}

INTS = st.integers(min_value=-(2**64), max_value=2**64 - 1)
KEYS = st.one_of(INTS, st.text(max_size=8))
SCALARS = st.one_of(st.none(), st.booleans(), INTS, st.floats(), st.text(max_size=20), st.binary(max_size=20))
TAG_NUMBERS = st.integers(min_value=6, max_value=2**64 - 1).filter(lambda n: n not in CBOR2_SEMANTIC_TAGS)


def _containers(children):
    return st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(KEYS, children, max_size=5),
        st.builds(Tag, TAG_NUMBERS, children),
    )


VALUES = st.recursive(SCALARS, _containers, max_leaves=12)
SETTINGS = settings(max_examples=150, deadline=None)


def from_cbor2(value):
    """A cbor2 value in our types: CBORTag -> Tag; inside tags cbor2 freezes arrays to tuples, maps to
    frozendict: back to list and dict."""
    if isinstance(value, cbor2.CBORTag):
        return Tag(value.tag, from_cbor2(value.value))
    if isinstance(value, (list, tuple)):
        return [from_cbor2(item) for item in value]
    if isinstance(value, Mapping):
        return {key: from_cbor2(item) for key, item in value.items()}
    return value


def to_cbor2(value):
    """A protocols.cbor value in cbor2's types."""
    if isinstance(value, Tag):
        return cbor2.CBORTag(value.tag, to_cbor2(value.value))
    if isinstance(value, list):
        return [to_cbor2(item) for item in value]
    if isinstance(value, dict):
        return {key: to_cbor2(item) for key, item in value.items()}
    return value


@SETTINGS
@given(VALUES)
def test_what_we_write_cbor2_reads_as_the_same_value(value):
    data = dumps(value)
    assert same(from_cbor2(cbor2.loads(data)), value)
    assert same(loads(data), value)


@SETTINGS
@given(VALUES)
def test_what_cbor2_writes_we_read(value):
    for canonical in (False, True):
        assert same(loads(cbor2.dumps(to_cbor2(value), canonical=canonical)), value)


@SETTINGS
@given(st.one_of(INTS, st.floats(), st.text(max_size=30), st.binary(max_size=30),
                 st.lists(st.one_of(INTS, st.floats(width=32)), max_size=30),
                 st.dictionaries(st.integers(-24, 23), INTS, max_size=10)))
def test_our_bytes_equal_canonical_cbor2_where_its_key_order_agrees(value):
    """Preferred serialization is unique: cbor2's canonical mode writes the same bytes (its length-first key
    order agrees with bytewise order when all keys encode to one byte, as in every SenML message)."""
    assert dumps(value) == cbor2.dumps(value, canonical=True)


@SETTINGS
@given(st.one_of(st.floats(allow_nan=False), st.floats(width=32, allow_nan=False),
                 st.floats(width=16, allow_nan=False)))
def test_floats_take_the_shortest_exact_width(value):
    data = dumps(value)
    expected = 3 if _fits(value, ">e") else 5 if _fits(value, ">f") else 9
    assert len(data) == expected
    assert loads(data) == value and math.copysign(1, loads(data)) == math.copysign(1, value)


def _fits(value, fmt):
    """Whether struct (CPython's is the reference) holds `value` exactly in the narrower format."""
    try:
        return struct.unpack(fmt, struct.pack(fmt, value))[0] == value
    except OverflowError:
        return False


def _only_value_errors(data):
    try:
        loads(data)
    except ValueError as error:
        assert "at byte" in str(error)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_value_error(data):
    _only_value_errors(data)


@settings(max_examples=300, deadline=None)
@given(VALUES, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(0, 10**6), st.booleans())
def test_mutated_encodings_raise_only_value_error(value, edits, cut, truncate):
    data = bytearray(dumps(value))
    for where, byte in edits:
        data[where % len(data)] = byte
    if truncate:
        del data[cut % len(data):]
    _only_value_errors(bytes(data))
