"""The node's CBOR reader for commands: the subset of RFC 8949 the fleet sends, in little heap.

Commands are maps of integers, text, byte strings, floats, booleans and null with definite lengths
(SPEC.md "Encoding"); that is all this reads. Anything else (tags, indefinite lengths, undefined, simple
values, duplicate keys, nesting deeper than `max_depth`, trailing bytes, lengths past the end) raises
ValueError naming the byte offset, and nothing is allocated from a claimed length before it is checked
against the bytes left. The full decoder (protocols/cbor_decode.py) reads everything but costs about
three times the heap; the fleet uses cbor2.
"""

import struct


def loads(data, max_depth=4):
    """The value encoded in `data` (bytes-like); ValueError if it is not one well-formed item."""
    data = bytes(data)
    at = [0]
    value = _item(data, at, max_depth)
    if at[0] != len(data):
        raise ValueError("cbor: %d trailing bytes at %d" % (len(data) - at[0], at[0]))
    return value


def _item(data, at, depth):
    start = i = at[0]
    if i >= len(data):
        raise ValueError("cbor: truncated at %d" % i)
    major, ai = data[i] >> 5, data[i] & 31
    i += 1
    if major == 7:
        if ai in (20, 21, 22):
            at[0] = i
            return (False, True, None)[ai - 20]
        size = {25: 2, 26: 4, 27: 8}.get(ai)
        if size is None or i + size > len(data):
            raise ValueError("cbor: unsupported simple value or truncated float at %d" % start)
        at[0] = i + size
        if size == 2:
            return half_to_float(data[i] << 8 | data[i + 1])
        return struct.unpack(">f" if size == 4 else ">d", data[i : i + size])[0]
    if ai < 24:
        arg = ai
    elif ai < 28:
        size = 1 << (ai - 24)
        if i + size > len(data):
            raise ValueError("cbor: truncated at %d" % start)
        arg = int.from_bytes(data[i : i + size], "big")
        i += size
    else:
        raise ValueError("cbor: indefinite or reserved length at %d" % start)
    at[0] = i
    if major == 0:
        return arg
    if major == 1:
        return -1 - arg
    if major in (2, 3):
        if arg > len(data) - i:
            raise ValueError("cbor: string longer than the data at %d" % start)
        at[0] = i + arg
        raw = data[i : i + arg]
        return raw if major == 2 else str(raw, "utf-8")
    if major == 6 or depth < 1 or arg > len(data) - i:
        raise ValueError("cbor: tag, too deep or too long at %d" % start)
    if major == 4:
        return [_item(data, at, depth - 1) for _ in range(arg)]
    out = {}
    for _ in range(arg):
        key = _item(data, at, depth - 1)
        if isinstance(key, (list, dict)) or key in out:
            raise ValueError("cbor: duplicate or unhashable key at %d" % start)
        out[key] = _item(data, at, depth - 1)
    return out


def half_to_float(h):
    """The float of IEEE 754 binary16 bits `h` (RFC 8949 Appendix D); shared with cbor_decode."""
    # Widen the half to float32 bits by hand (exact), then let struct read them: MicroPython's 'e' is unreliable.
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        value = mant * 5.960464477539063e-08  # subnormal: mant * 2**-24, exact
        return -value if h & 0x8000 else value
    exp = 0xFF if exp == 0x1F else exp + 112  # rebias 15 -> 127; all-ones stays all-ones (inf/NaN)
    return struct.unpack(">f", struct.pack(">I", ((h & 0x8000) << 16) | (exp << 23) | (mant << 13)))[0]
