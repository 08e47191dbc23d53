"""The node's command reader protocols/cbor_lite.py: same values as cbor2 on the subset it reads, ValueError
on anything else, under CPython and the MicroPython VM."""

from __future__ import annotations

import math

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.cbor_lite import loads
from tests.mpvm import check_micropython

scalars = (st.integers(-(2**64), 2**64 - 1) | st.text(max_size=20) | st.binary(max_size=20) | st.booleans()
           | st.none() | st.floats(allow_nan=False))
keys = st.integers(-1000, 1000) | st.text(max_size=8)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=12)


def _depth(obj) -> int:
    if isinstance(obj, list):
        return 1 + max((_depth(x) for x in obj), default=0)
    if isinstance(obj, dict):
        return 1 + max((_depth(x) for x in obj.values()), default=0)
    return 0


@settings(max_examples=400)
@given(values)
def test_reads_what_cbor2_writes(obj):
    data = cbor2.dumps(obj)
    if _depth(obj) > 4:
        with pytest.raises(ValueError):
            loads(data)
    else:
        assert loads(data) == obj


@settings(max_examples=400)
@given(st.binary(max_size=40))
def test_random_bytes_raise_only_value_error(data):
    try:
        loads(data)
    except ValueError:
        pass


@pytest.mark.parametrize("data", [
    "c1 00", "9f ff", "bf ff", "5f ff", "f7", "f0", "a2 01 01 01 02", "a1 80 01", "62 61", "1b 00", "01 02",
    "85 01", "fb 00 00",
], ids=["tag", "indef-array", "indef-map", "indef-bytes", "undefined", "simple", "duplicate-key",
        "array-key", "short-text", "short-int", "trailing", "short-array", "short-double"])
def test_what_the_fleet_never_sends_is_refused(data):
    with pytest.raises(ValueError):
        loads(bytes.fromhex(data.replace(" ", "")))


def test_half_floats():
    for value in (0.0, -0.0, 1.0, 65504.0, 5.960464477539063e-08, math.inf, -2.5):
        assert loads(b"\xf9" + cbor2.dumps(value, canonical=True)[1:]) == value or value != value


def test_the_vm_reads_the_same():
    sample = {0: 1, 1: 7, 2: 3, 3: {"flood": {0: "level", 1: 270, 2: 240.5, 3: 30, 4: 2}}, 4: {"level": 2},
              7: {"level": [1.5, -0.25]}, 8: b"\x00\xff", 9: [True, False, None]}
    check_micropython(
        "from protocols.cbor_lite import loads\n"
        "assert loads(%r) == %r\n"
        "for bad in (b'\\xc1\\x00', b'\\x9f\\xff', b'\\xa2\\x01\\x01\\x01\\x02', b'\\x62a', b''):\n"
        "    try:\n"
        "        loads(bad)\n"
        "    except ValueError:\n"
        "        continue\n"
        "    raise AssertionError(bad)\n" % (cbor2.dumps(sample), sample))
