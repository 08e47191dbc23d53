"""CBOR encoder (RFC 8949) that runs unchanged on MicroPython 1.29 and CPython; API like cbor2.

`dumps(obj) -> bytes` writes preferred serialization (RFC 8949 §4.2.1/§4.2.2: shortest integers, lengths
and floats) with map keys sorted by their encoded bytes (bytewise lexicographic, §4.2.1), so the device and
the fleet emit the same bytes for the same value: MicroPython dicts don't keep insertion order, sorting is
the only order both sides agree on. Note: cbor2's canonical=True sorts length-first (RFC 7049); the two
orders only differ when keys of different encoded length mix major types (e.g. keys 24 and -1).

Supported: None, True, False, ints in [-2**64, 2**64-1], floats, str, bytes (bytearray/memoryview encode as
bytes), list/tuple, dict with int or str keys, `Tag`. Nesting is limited to `max_depth` containers (arrays,
maps and tags each count 1; the top-level container is depth 1). A value outside the subset raises
`CBOREncodeError` (a ProtocolError, hence a ValueError).

The decoder (`loads`, `CBORDecodeError`, `Tag`) lives in `protocols.cbor_decode`: the node encodes every
reading but decodes only the rare command, so it loads the decoder for a command and drops it afterwards
(agent/transient.py). Those names still read as `protocols.cbor.loads` etc.: `__getattr__` below imports
the decoder on first use (PEP 562; MicroPython has module `__getattr__` too).

ESP32 MicroPython has single-precision floats: every float there is exactly a float32, so it encodes as a
half or a single, never a double.
"""

import struct

from protocols.errors import ProtocolError

#: Default nesting limit for `dumps` and `loads`.
MAX_DEPTH = 16


class CBORError(ProtocolError):
    """Base of the codec's errors: a `ProtocolError`, hence a `ValueError`."""


class CBOREncodeError(CBORError):
    """A value that has no CBOR encoding in the supported subset."""

    def __init__(self, what):
        super().__init__("bad_cbor", "cannot encode " + what)


def __getattr__(name):
    """The decoder's names (`loads`, `Tag`, `CBORDecodeError`), imported from protocols.cbor_decode on use."""
    if name[0] == "_":  # dunders probed by import machinery and tools: not the decoder's business
        raise AttributeError(name)
    from protocols import cbor_decode

    return getattr(cbor_decode, name)


def dumps(obj, max_depth=MAX_DEPTH) -> bytes:
    """CBOR bytes of `obj` in preferred serialization with sorted map keys."""
    buf = bytearray()
    _encode(buf, obj, max_depth)
    return bytes(buf)


def _head(buf, major, n):
    # Preferred serialization (RFC 8949 §4.2.1): n itself below 24, else the shortest of 1, 2, 4 or 8
    # big-endian bytes, announced by additional information 24, 25, 26 or 27.
    if n < 24:
        buf.append(major << 5 | n)
        return
    info = 24
    size = 1
    while n >> (size << 3):
        info += 1
        size <<= 1
    buf.append(major << 5 | info)
    buf.extend(n.to_bytes(size, "big"))


def _encode(buf, obj, depth):
    # One function for every type, most frequent first: each function costs the node's heap.
    if obj is None:
        buf.append(0xF6)
    elif obj is False or obj is True:
        buf.append(0xF5 if obj else 0xF4)
    elif isinstance(obj, int):
        n = ~obj if obj < 0 else obj  # a negative integer carries -1 - n (RFC 8949 §3.1, major type 1)
        if n >> 64:
            raise CBOREncodeError("integer %d (outside -2**64..2**64-1)" % obj)
        _head(buf, 1 if obj < 0 else 0, n)
    elif isinstance(obj, float):
        _float(buf, obj)
    elif isinstance(obj, str):
        try:
            raw = obj.encode("utf-8")
        except UnicodeError:
            raise CBOREncodeError("text that is not valid Unicode") from None
        _head(buf, 3, len(raw))
        buf.extend(raw)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _head(buf, 2, len(obj))
        buf.extend(obj)
    elif isinstance(obj, (list, tuple, dict)):
        if depth < 1:
            raise CBOREncodeError("value nested deeper than the limit")
        if isinstance(obj, dict):
            pairs = []
            for key in obj:
                if key is True or key is False or not isinstance(key, (int, str)):
                    raise CBOREncodeError("map key %r (keys must be int or str)" % (key,))
                # the usual SenML/message label is -24..23: one byte, no encoder run
                raw = bytes((key if key >= 0 else 0x1F - key,)) if isinstance(key, int) and -24 <= key < 24 \
                    else dumps(key, 0)
                pairs.append((raw, obj[key]))
            # RFC 8949 §4.2.1: keys in bytewise lexicographic order of their encodings. Encodings are
            # unique, so sorting the pairs never compares the values.
            pairs.sort()
            _head(buf, 5, len(pairs))
            for raw, value in pairs:
                buf.extend(raw)
                _encode(buf, value, depth - 1)
        else:
            _head(buf, 4, len(obj))
            for item in obj:
                _encode(buf, item, depth - 1)
    else:
        # Only the fleet writes tags: the class lives with the decoder, which the node seldom loads.
        from protocols.cbor_decode import Tag

        if not isinstance(obj, Tag):
            raise CBOREncodeError("type %s" % type(obj).__name__)
        if depth < 1:
            raise CBOREncodeError("value nested deeper than the limit")
        _head(buf, 6, obj.tag)
        _encode(buf, obj.value, depth - 1)


def _float(buf, x):
    # RFC 8949 §4.2.2: NaN as the half f97e00; otherwise the shortest of half, single, double that holds x.
    if x != x:
        buf.extend(b"\xf9\x7e\x00")
        return
    try:
        single = struct.pack(">f", x)
        fits = struct.unpack(">f", single)[0] == x
    except OverflowError:  # CPython refuses to round a finite double to an infinite single
        fits = False
    if not fits:
        buf.append(0xFB)
        buf.extend(struct.pack(">d", x))
        return
    # The half that holds this float32 exactly, or -1. By hand because MicroPython 1.29's struct 'e' packs
    # 1e6 and the upper half subnormals wrongly.
    bits = int.from_bytes(single, "big")
    exp = (bits >> 23 & 0xFF) - 127
    mant = bits & 0x7FFFFF
    if exp == 128:  # infinity (NaN never gets here)
        half = 0x7C00
    elif exp == -127:  # zero; float32 subnormals are far below the half range
        half = -1 if mant else 0
    elif -14 <= exp <= 15:
        half = -1 if mant & 0x1FFF else (exp + 15) << 10 | mant >> 13
    elif -24 <= exp < -14:  # a half subnormal: m * 2**-24 with m = significand >> -(exp + 1)
        mant |= 0x800000
        half = -1 if mant & ((1 << (-1 - exp)) - 1) else mant >> (-1 - exp)
    else:
        half = -1
    if half < 0:
        buf.append(0xFA)
        buf.extend(single)
    else:
        buf.append(0xF9)
        buf.extend((half | bits >> 16 & 0x8000).to_bytes(2, "big"))
